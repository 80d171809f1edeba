"""The building blocks every view shares: escaping what comes from outside, shortening, listing within Slack's
limits, mentions, dates and the plain Block Kit pieces. Pure functions, no I/O."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

Block = dict[str, Any]


# Slack's documented limits; the Slack stand-in rejects messages that break them, as Slack does.
TEXT_LIMIT = 40_000  # a message's `text`


SECTION_TEXT_LIMIT = 3000


MAX_BLOCKS = 50


BUTTON_TEXT_LIMIT = 75


BUTTON_VALUE_LIMIT = 2000


CONTEXT_ELEMENTS_LIMIT = 10


HEADER_TEXT_LIMIT = 150


# Our own, tighter budgets, so messages stay readable whatever the cloud returns.
SECTION_LIMIT = 2900  # per section, a margin under Slack's 3000 for joins


REPLY_BUDGET = 3000  # characters of a list in a text reply (thread replies, private answers)


CONFIRMATION_BUDGET = 3 * SECTION_LIMIT  # characters of the instance list in a confirmation


MAX_LISTED = 60  # beyond this, lists are summarised


NAME_LIMIT = 80  # instance names


REASON_LIMIT = 300  # reasons and errors, which may quote Zenlayer


WORD_LIMIT = 40  # statuses and zones


ELLIPSIS = "…"


BACKTICK_STAND_IN = "\u02cb"  # a modifier letter grave accent: looks like ` but cannot end a code span


PAGE_LINES = 50  # instances on one page of `/vm status` or `/vm list`: well inside Slack's limits, and readable


REPEAT_LIMIT = 200  # a command longer than this is not repeated in a page footer


# Text that mrkdwn would turn into bold, italics, strike-through, code or an emoji.
_FORMATTING_RE = re.compile(r"[*_~`]|:[\w+-]+:")


_WHITESPACE_RE = re.compile(r"\s+")


# An @ that starts a word: Slack may read `@here`, `@channel`, `@everyone` or a user group's handle in it as a
# mention wherever it parses text itself (a message's top-level text, a mrkdwn object without verbatim).
_MENTION_RE = re.compile(r"@(?=\w)")


WORD_JOINER = "\u2060"  # invisible, and no mention can be read across it


STATUS_EMOJI = {
    "RUNNING": ":large_green_circle:",
    "BOOTING": ":large_yellow_circle:",
    "STOPPED": ":white_circle:",
}


def escape(text: str) -> str:
    """Escape user or cloud text for mrkdwn so it cannot ping (`<!channel>`, `@here`, `@team`), link or format."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION_RE.sub("@" + WORD_JOINER, escaped)


def shorten(text: str, limit: int) -> str:
    """Put text on one line and cut it to at most `limit` characters, ending in an ellipsis when cut."""
    text = _WHITESPACE_RE.sub(" ", "".join(c if c.isprintable() else " " for c in text)).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def outside(text: str, limit: int = NAME_LIMIT) -> str:
    """Show text from outside (Zenlayer names, statuses, errors) so it cannot ping, link, format or overflow.

    It is escaped and shortened; if mrkdwn would read formatting into it (`*bold*`, `_it_`, `~s~`, `:emoji:`),
    it is shown as inline code instead, where Slack formats nothing, with its backticks made harmless.
    """
    short = shorten(text, limit)
    if _FORMATTING_RE.search(short):
        return quoted(short, limit)
    return escape(short)


def quoted(text: str, limit: int = NAME_LIMIT) -> str:
    """Show typed or outside text always as inline code: escaped, shortened, its backticks made harmless."""
    return f"`{escape(shorten(text, limit).replace('`', BACKTICK_STAND_IN))}`"


def mention(user_id: str) -> str:
    """Return a user mention; user ids come from Slack or are validated before they get here."""
    return f"<@{user_id}>"


def slack_date(moment: datetime, fmt: str = "{date_short_pretty} at {time}") -> str:
    """Return a date Slack renders in each reader's own time zone, with a UTC fallback."""
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{fmt}|{fallback}>"


def code(instance_id: str) -> str:
    """Format an instance id (validated, so safe) as inline code."""
    return f"`{instance_id}`"


def label(instance_id: str, name: str | None, zone: str | None = None) -> str:
    """Return `id` (name) · zone, the way instances are shown everywhere (the name only when it says more)."""
    shown = f"{code(instance_id)} ({outside(name)})" if name and name != instance_id else code(instance_id)
    return f"{shown} · {outside(zone, WORD_LIMIT)}" if zone else shown


def listing(lines: Sequence[str], *, budget: int = REPLY_BUDGET, limit: int = MAX_LISTED, hint: str = "") -> list[str]:
    """Keep the lines that fit in `budget` characters (at most `limit` lines) and summarise the rest."""
    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        line = clip(line, SECTION_LIMIT)
        left = len(lines) - index
        summary = len(f"{ELLIPSIS}and {left} more{hint}") + 1 if left > 1 else 0
        if len(kept) >= limit or size + len(line) + 1 + summary > budget:
            break
        kept.append(line)
        size += len(line) + 1
    if len(kept) < len(lines):
        kept.append(f"{ELLIPSIS}and {len(lines) - len(kept)} more{hint}")
    return kept


def clip(text: str, limit: int) -> str:
    """Cut already-rendered text to `limit` characters without splitting an entity or a code span badly."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 2]
    cut = cut[: cut.rfind("&")] if cut.rfind("&") > cut.rfind(";") else cut  # never leave half an entity
    if cut.count("`") % 2:
        cut += "`"
    return cut + ELLIPSIS


def id_list(ids: Sequence[str], budget: int = REPLY_BUDGET // 2) -> str:
    """Join ids as inline code, summarising those that do not fit."""
    return ", ".join(listing([code(i) for i in ids], budget=budget))


def sections(lines: Iterable[str], max_sections: int = MAX_BLOCKS - 5) -> list[Block]:
    """Pack lines into as few mrkdwn sections as Slack's per-section limit allows."""
    blocks: list[Block] = []
    current: list[str] = []
    size = 0
    for line in lines:
        line = clip(line, SECTION_LIMIT)
        if current and size + len(line) + 1 > SECTION_LIMIT:
            blocks.append(section("\n".join(current)))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        blocks.append(section("\n".join(current)))
    if len(blocks) > max_sections:
        blocks = [*blocks[: max_sections - 1], section(f"{ELLIPSIS}and more — ask about fewer instances at once")]
    return blocks


def pages_of(total: int) -> int:
    """Return how many pages of PAGE_LINES a list of `total` items takes (at least 1)."""
    return max(1, math.ceil(total / PAGE_LINES))


def page_footer(page: int, pages: int, command: str) -> str:
    """Say which page this is and how to get the next one (`command` is what the user typed, options aside)."""
    if page >= pages:
        return f"Page {page} of {pages}."
    if len(command) <= REPEAT_LIMIT:
        return f"Page {page} of {pages} — `{typed(command)} --page {page + 1}` for more."
    return f"Page {page} of {pages} — add `--page {page + 1}` to the same command for more."


def no_such_page_text(page: int, pages: int, command: str) -> str:
    """Answer a page number beyond the last page."""
    last = f"`{typed(command)} --page {pages}`" if len(command) <= REPEAT_LIMIT else f"page {pages}"
    return f":warning: There is no page {page}: this answer has {count_of(pages, 'page')}, the last is {last}."


def typed(command: str) -> str:
    """Show a command the user typed inside inline code (ids and patterns are validated; escaped all the same)."""
    return escape(command.replace("`", BACKTICK_STAND_IN))


def count_of(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def mrkdwn(text: str) -> Block:
    """A mrkdwn text object Slack formats but never parses on its own (`verbatim`): names and reasons from Zenlayer
    in it cannot become mentions or links; what we mean to link or mention we write out (`<@U…>`, `<#C…>`)."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def section(text: str) -> Block:
    return {"type": "section", "text": mrkdwn(text)}


def context(text: str) -> Block:
    return {"type": "context", "elements": [mrkdwn(clip(text, SECTION_LIMIT))]}


def count(n: int) -> str:
    """Return "1 instance" or "N instances"."""
    return f"{n} instance{'s' if n != 1 else ''}"


RUNNING = "RUNNING"


def address(ip: str | None, status: str | None) -> str:
    """Return " · IP" for an instance that is RUNNING and has an address."""
    return f" · {outside(ip, WORD_LIMIT)}" if ip and status == RUNNING else ""
