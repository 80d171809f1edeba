"""Pure functions that turn domain objects into Slack text and Block Kit; no I/O here."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.db.models import ANY_CHANNEL, Grant, RequestInstance, StartRequest
from bot.domain.grant_admin import GrantArgs
from bot.domain.grants import Coverage, selector_of
from bot.domain.inventory import Listing
from bot.domain.lifecycle import State
from bot.domain.ports import InstanceInfo, StatusChange
from bot.domain.starts import ClickOutcome, Prepared
from bot.domain.vocabulary import GrantAction, Outcome
from bot.slack import action_ids

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

STATUS_EMOJI = {
    "RUNNING": ":large_green_circle:",
    "BOOTING": ":large_yellow_circle:",
    "STOPPED": ":white_circle:",
}


def escape(text: str) -> str:
    """Escape user text for mrkdwn so it cannot ping (<!channel>), link or format."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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


def _listing(lines: Sequence[str], *, budget: int = REPLY_BUDGET, limit: int = MAX_LISTED, hint: str = "") -> list[str]:
    """Keep the lines that fit in `budget` characters (at most `limit` lines) and summarise the rest."""
    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        line = _clip(line, SECTION_LIMIT)
        left = len(lines) - index
        summary = len(f"{ELLIPSIS}and {left} more{hint}") + 1 if left > 1 else 0
        if len(kept) >= limit or size + len(line) + 1 + summary > budget:
            break
        kept.append(line)
        size += len(line) + 1
    if len(kept) < len(lines):
        kept.append(f"{ELLIPSIS}and {len(lines) - len(kept)} more{hint}")
    return kept


def _clip(text: str, limit: int) -> str:
    """Cut already-rendered text to `limit` characters without splitting an entity or a code span badly."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 2]
    cut = cut[: cut.rfind("&")] if cut.rfind("&") > cut.rfind(";") else cut  # never leave half an entity
    if cut.count("`") % 2:
        cut += "`"
    return cut + ELLIPSIS


def _ids(ids: Sequence[str], budget: int = REPLY_BUDGET // 2) -> str:
    """Join ids as inline code, summarising those that do not fit."""
    return ", ".join(_listing([code(i) for i in ids], budget=budget))


def _sections(lines: Iterable[str], max_sections: int = MAX_BLOCKS - 5) -> list[Block]:
    """Pack lines into as few mrkdwn sections as Slack's per-section limit allows."""
    blocks: list[Block] = []
    current: list[str] = []
    size = 0
    for line in lines:
        line = _clip(line, SECTION_LIMIT)
        if current and size + len(line) + 1 > SECTION_LIMIT:
            blocks.append(_section("\n".join(current)))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        blocks.append(_section("\n".join(current)))
    if len(blocks) > max_sections:
        blocks = [*blocks[: max_sections - 1], _section(f"{ELLIPSIS}and more — ask about fewer instances at once")]
    return blocks


def status_hint(request: StartRequest) -> str:
    """Point from a summarised list at the command that shows every instance of the request (page by page)."""
    return f" — `/vm status --request {request.id}` for all"


def pages_of(count: int) -> int:
    """Return how many pages of PAGE_LINES a list of `count` items takes (at least 1)."""
    return max(1, math.ceil(count / PAGE_LINES))


def page_footer(page: int, pages: int, command: str) -> str:
    """Say which page this is and how to get the next one (`command` is what the user typed, options aside)."""
    if page >= pages:
        return f"Page {page} of {pages}."
    if len(command) <= REPEAT_LIMIT:
        return f"Page {page} of {pages} — `{_typed(command)} --page {page + 1}` for more."
    return f"Page {page} of {pages} — add `--page {page + 1}` to the same command for more."


def no_such_page_text(page: int, pages: int, command: str) -> str:
    """Answer a page number beyond the last page."""
    last = f"`{_typed(command)} --page {pages}`" if len(command) <= REPEAT_LIMIT else f"page {pages}"
    return f":warning: There is no page {page}: this answer has {_count_of(pages, 'page')}, the last is {last}."


def _typed(command: str) -> str:
    """Show a command the user typed inside inline code (ids and patterns are validated; escaped all the same)."""
    return escape(command.replace("`", BACKTICK_STAND_IN))


def _count_of(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, SECTION_LIMIT)}]}


# --- help and refusals ---------------------------------------------------------------------------------

USAGE = (
    "*vm-bot* starts Zenlayer VMs you are allowed to start.\n"
    "• `/vm start NAME_OR_ID [...]` — ask to start instances by name or id (separated by spaces, commas or "
    "newlines); you confirm before anything happens\n"
    "• `/vm status NAME_OR_ID [...] [--page N]` — show instances' current status, 50 a page\n"
    "• `/vm status --request N` — every instance of start request N (the number its thread points at)\n"
    "• `/vm list [PATTERN] [--page N]` — the instances you may start here, 50 a page; tick the stopped ones and "
    "press *Start selected*\n"
    "• `/vm grants` — show what you may do\n"
    "• `/vm help` — what you can do here"
)
ADMIN_USAGE = (
    "• `/vm grant @user [PATTERN ...] [--instances PATTERN] [--names PATTERN] [--resource-group ID_OR_NAME] "
    "[--tag KEY=VALUE] [--channel #channel ...] [--action start|approve|admin] [--needs-approval]` — "
    "let someone act on instances (by id glob, name glob, resource group or tag)\n"
    "• `/vm revoke @user [selectors as for grant] [--channel #channel ...] [--action ACTION]` — take grants away"
)
ACTION_PHRASES: dict[str, str] = {
    GrantAction.START: "start",
    GrantAction.APPROVE: "approve others' starts of",
    GrantAction.ADMIN: "manage grants for",
}


def slow_down_text(per_minute: int) -> str:
    """Return the private reply to someone over the command rate limit."""
    return (
        f":snail: Slow down: at most {per_minute} `/vm` commands a minute each. "
        "Nothing was done with this one; try again in a minute."
    )


def usage_text(problem: str | None = None) -> str:
    """Return the usage reply, optionally preceded by what was wrong (already escaped by the caller)."""
    return f"{problem}\n\n{USAGE}" if problem else USAGE


def _grant_line(grant: Grant) -> str:
    """Describe one grant for its holder."""
    where = "in any channel" if grant.channel_id == ANY_CHANNEL else f"in <#{grant.channel_id}>"
    approval = " (needs a second person's approval)" if grant.needs_approval else ""
    what = escape(selector_of(grant).describe())
    return f"• {ACTION_PHRASES.get(grant.action, grant.action)} {what} {where}{approval}"


def grants_text(grants: Sequence[Grant]) -> str:
    """Show a user their own grants."""
    if not grants:
        return "You have no vm-bot grants yet. Ask a vm-bot admin for one."
    return "\n".join(["*Your vm-bot grants*", *_listing([_grant_line(g) for g in grants])])


def help_text(grants: Sequence[Grant], channel_id: str) -> str:
    """Return help that shows only what this caller may do, and where."""
    if not grants:
        return (
            "*vm-bot* starts Zenlayer VMs for people who hold a grant. You have none yet — ask a vm-bot admin.\n"
            "• `/vm grants` — show what you may do\n• `/vm help` — this text"
        )
    here = [g for g in grants if g.channel_id in (ANY_CHANNEL, channel_id)]
    actions = {g.action for g in grants}
    lines = ["*What you can do with vm-bot*"]
    if GrantAction.START in actions:
        lines.append(
            "• `/vm start NAME_OR_ID [...]` — ask to start instances; you confirm before anything happens\n"
            "• `/vm status NAME_OR_ID [...] [--page N]` — show instances' current status, 50 a page\n"
            "• `/vm status --request N` — every instance of start request N (the number its thread points at)\n"
            "• `/vm list [PATTERN] [--page N]` — the instances you may start here, 50 a page, to tick and start"
        )
    if GrantAction.APPROVE in actions:
        lines.append("• press *Approve* or *Reject* on others' requests that need a second person")
    if GrantAction.ADMIN in actions:
        lines.append(ADMIN_USAGE)
    lines.append("• `/vm grants` — show your grants")
    lines.append("*Your grants*")
    lines.extend(_listing([_grant_line(g) for g in grants]))
    if not here:
        lines.append(":information_source: None of your grants can be used in this channel.")
    return "\n".join(lines)


def grant_done_text(args: GrantArgs, added: int) -> str:
    """Confirm a grant made from Slack."""
    where = ", ".join(f"<#{c}>" for c in args.channels if c != ANY_CHANNEL) or "any channel"
    patterns = ", ".join(escape(s.describe()) for s in args.selectors)
    approval = ", with a second person's approval" if args.needs_approval else ""
    verb = "Granted" if added else "Already granted (updated)"
    action = args.action or GrantAction.START
    return f":white_check_mark: {verb}: {mention(args.user_id)} may {action} {patterns} in {where}{approval}."


def revoke_done_text(args: GrantArgs, removed: int) -> str:
    """Confirm grants removed from Slack."""
    if not removed:
        return f":information_source: {mention(args.user_id)} had no matching grants; nothing changed."
    return f":wastebasket: Removed {removed} grant{'s' if removed != 1 else ''} from {mention(args.user_id)}."


def checking_text(ids: Sequence[str]) -> str:
    """Acknowledge a command that needs a lookup."""
    shown = ", ".join(code(i) for i in ids[:10])
    return f":mag: Checking {shown}{'…' if len(ids) > 10 else ''}"


def invalid_ids_text(invalid: Sequence[str]) -> str:
    """Explain which words are not valid instance ids."""
    shown = ", ".join(quoted(word) for word in invalid[:10])
    more = f" and {len(invalid) - 10} more" if len(invalid) > 10 else ""
    return usage_text(
        f":warning: Not valid instance ids: {shown}{more}. Ids use letters, digits, `.`, `_` and `-` only."
    )


def not_covered_text(action: str, coverage: Coverage) -> str:
    """Explain which instances the user may not act on, and where they could."""

    def shown(instance_id: str) -> str:
        return label(instance_id, coverage.names.get(instance_id))

    elsewhere = [
        f"• {shown(instance_id)} can be {action}ed from " + ", ".join(f"<#{c}>" for c in channels[:10])
        for instance_id, channels in coverage.channels_elsewhere.items()
    ]
    uncovered = ", ".join(_listing([shown(i) for i in coverage.uncovered], budget=REPLY_BUDGET // 2))
    return "\n".join(
        [
            f":no_entry: You may not {action} {uncovered}.",
            *_listing(elsewhere, budget=REPLY_BUDGET // 2),
            "Nothing was started. Ask a vm-bot admin for a grant if you need one.",
        ]
    )


def nothing_to_start_text(prepared: Prepared) -> str:
    """Explain why none of the ids can be started."""
    lines = [f"• {label(s.instance_id, s.name)} — {outside(s.reason, REASON_LIMIT)}" for s in prepared.skipped]
    return "\n".join([":information_source: Nothing to start:", *_listing(lines)])


def duplicate_text(permalink: str | None) -> str:
    """Point the user at the confirmation they already have."""
    where = f"<{permalink}|your pending confirmation>" if permalink else "your pending confirmation in this channel"
    return f":point_up: You already asked to start these instances — use {where}."


def decision_not_shown_text(outcome: str, error: str) -> str:
    """Tell the clicker privately that their decision stands although the confirmation could not be updated."""
    problem = f"I could not update the confirmation message ({quoted(shorten(error or 'no answer', WORD_LIMIT))})"
    if outcome == "approved":
        return (
            f":warning: Start confirmed: the instances are being started and I will reply in the thread as they do, "
            f"but {problem}. Its buttons no longer do anything."
        )
    verb = "Cancelled" if outcome == "cancelled" else "Rejected"
    return f":warning: {verb}: nothing will be started, but {problem}. Its buttons no longer do anything."


def not_delivered_text(request: StartRequest, final: bool, error: str) -> str:
    """Tell the requester privately that a thread reply about their request could not be posted, and where it stands."""
    what = "the outcome of your start" if final else "progress of your start"
    stands = progress_line(request) or _state_phrase(request)
    return (
        f":warning: I could not post {what} of {_count(len([i for i in request.instances if i.to_start]))} in "
        f"<#{request.channel_id}> ({quoted(shorten(error or 'no answer', WORD_LIMIT))}). Where it stands: {stands}"
    )


def post_unconfirmed_text(channel_id: str) -> str:
    """Tell the requester privately that Slack never confirmed the confirmation's post, so it was withdrawn."""
    return (
        f":warning: Slack did not confirm that it posted your confirmation in <#{channel_id}>, so I withdrew the "
        "request. If a confirmation shows up there anyway, its buttons do nothing. Nothing was started: run "
        "`/vm start` again."
    )


def rate_limited_text(channel_id: str, seconds: float) -> str:
    """Tell the requester privately that Slack is holding the channel back (429), and when to try again."""
    return (
        f":snail: Slack is rate-limiting messages in <#{channel_id}> right now, so I could not post the confirmation. "
        f"Nothing was started: try again in {max(1, math.ceil(seconds))} s."
    )


def cannot_post_text(channel_id: str, error: str) -> str:
    """Tell the requester privately why the confirmation could not be posted and how to fix it."""
    if channel_id.startswith("D") or error == "channel_not_found":
        return (
            ":speech_balloon: I can't post a confirmation here. Use `/vm start` in a channel I'm a member of "
            "(invite me there with `/invite @vm-bot`)."
        )
    return (
        f":wave: I'm not a member of <#{channel_id}>, so I can't post the confirmation here. "
        "Invite me with `/invite @vm-bot` and run the command again."
    )


def status_message(
    ids: Sequence[str], found: Mapping[str, InstanceInfo], *, page: int = 1, command: str = "/vm status"
) -> tuple[str, list[Block]]:
    """Render one page of `/vm status` for the given ids: a short text and at most PAGE_LINES instances, with a
    footer saying how to see the next page (`command` is the user's command without `--page`)."""
    pages = pages_of(len(ids))
    if page > pages:
        text = no_such_page_text(page, pages, command)
        return text, [_section(text)]
    first = (page - 1) * PAGE_LINES
    lines = []
    for instance_id in ids[first : first + PAGE_LINES]:
        info = found.get(instance_id)
        if info is None:
            lines.append(f"• {code(instance_id)} — not found")
        else:
            emoji = STATUS_EMOJI.get(info.status, ":large_orange_circle:")
            status = outside(info.status, WORD_LIMIT)
            lines.append(
                f"• {label(instance_id, info.name, info.zone)} — {emoji} {status}{_address(info.ip, info.status)}"
            )
    text = f"Instance status of {_count(len(ids))}"
    status_blocks = [_section("*Instance status*"), *_sections(lines)]
    if pages > 1:
        text += f" (page {page} of {pages})"
        status_blocks.append(_context(page_footer(page, pages, command)))
    return text, status_blocks


def click_refusal_text(
    outcome: ClickOutcome,
    request: StartRequest | None,
    coverage: Coverage | None,
    busy: Sequence[str] = (),
    links: Mapping[str, str | None] | None = None,
) -> str:
    """Explain privately why a click did nothing."""
    if outcome == ClickOutcome.NOT_REQUESTER and request is not None:
        return f"Only {mention(request.requester_id)} can confirm or cancel this request."
    if outcome == ClickOutcome.SELF_APPROVAL:
        return "This request needs a second person: someone else with an approve grant must approve it."
    if outcome == ClickOutcome.NOT_APPROVER:
        uncovered = _ids(coverage.uncovered if coverage else [])
        return f"You can't approve this request: your approve grants here don't cover {uncovered}."
    if outcome == ClickOutcome.NOT_ALLOWED and coverage is not None:
        return not_covered_text(GrantAction.START, coverage)
    if outcome == ClickOutcome.REQUESTER_NOT_ALLOWED and request is not None and coverage is not None:
        ids = _ids(coverage.uncovered)
        return f"{mention(request.requester_id)} may no longer start {ids}, so this request cannot be approved."
    if outcome == ClickOutcome.NEEDS_APPROVAL:
        return (
            "Your grants now require a second person's approval for these instances. "
            "Cancel this and run `/vm start` again to ask for it."
        )
    if outcome == ClickOutcome.BUSY:
        ids = _ids(busy)
        where = sorted({link for link in (links or {}).values() if link})
        by = "another request" + (f" ({', '.join(f'<{link}|see its thread>' for link in where[:3])})" if where else "")
        return f"{ids} {'is' if len(busy) == 1 else 'are'} already being started by {by}; nothing was started."
    if outcome == ClickOutcome.LOOKUP_FAILED:
        return (
            "I could not look these instances up at Zenlayer to check the grants again; nothing was started. Try again."
        )
    if outcome == ClickOutcome.EXPIRED:
        return "This confirmation has expired; nothing was started. Run `/vm start` again if you still need it."
    if outcome == ClickOutcome.WITHDRAWN:
        return (
            "This confirmation was withdrawn: Slack did not confirm that it was posted, so its buttons do nothing. "
            "Nothing was started. Run `/vm start` again if you still need it."
        )
    if outcome == ClickOutcome.ALREADY_DECIDED and request is not None:
        return f"This request was already {_state_phrase(request)}; nothing more to do."
    return "This request no longer exists."


def _state_phrase(request: StartRequest) -> str:
    return {
        State.CANCELLED: "cancelled",
        State.EXPIRED: "expired",
        State.APPROVED: "approved",
        State.STARTING: "approved",
        State.WATCHING: "approved",
        State.DONE: "completed",
        State.FAILED: "completed",
        State.TIMED_OUT: "completed",
    }.get(State(request.state), request.state)


# --- the confirmation message --------------------------------------------------------------------------


def _instance_line(instance: RequestInstance) -> str:
    """Describe one instance of a request as it currently stands: name, id, zone, and its address once RUNNING."""
    name = label(instance.instance_id, instance.name, instance.zone)
    if not instance.to_start:
        return f"• {name} — {outside(instance.skip_reason or 'skipped', REASON_LIMIT)}, skipped"
    status = instance.last_status or instance.initial_status
    emoji = STATUS_EMOJI.get(status or "", ":large_orange_circle:")
    shown = f"{emoji} {outside(status, WORD_LIMIT)}" if status else ":grey_question: not found"
    if instance.outcome == Outcome.SKIPPED:
        return f"• {name} — {outside(instance.skip_reason or 'skipped', REASON_LIMIT)}"
    if instance.outcome == Outcome.FAILED and instance.skip_reason:
        return f"• {name} — :x: {outside(instance.skip_reason, REASON_LIMIT)}"
    return f"• {name} — {shown}{_address(instance.ip_address, status)}"


RUNNING = "RUNNING"


def _address(ip: str | None, status: str | None) -> str:
    """Return " · IP" for an instance that is RUNNING and has an address."""
    return f" · {outside(ip, WORD_LIMIT)}" if ip and status == RUNNING else ""


def approver_phrase(approvers: Sequence[str], group_mention: str | None) -> str:
    """Name who can approve: the configured group, else the people whose grants allow it."""
    if group_mention:
        return group_mention
    if approvers:
        return " or ".join(mention(u) for u in approvers[:10]) + (" or another approver" if len(approvers) > 10 else "")
    return "someone with an approve grant"


def request_message(request: StartRequest, approvers: str | None = None) -> tuple[str, list[Block]]:
    """Render the confirmation message (the thread parent) from the request's current state."""
    starting = [i for i in request.instances if i.to_start]
    count = _count(len(starting))
    state = State(request.state)
    headline = f"{mention(request.requester_id)} wants to start {count}"
    if request.needs_approval and state == State.PENDING:
        headline += " — *needs approval*"
    blocks: list[Block] = [_section(f":rocket: {headline}")]
    lines = [_instance_line(i) for i in request.instances]
    blocks.extend(_sections(_listing(lines, budget=CONFIRMATION_BUDGET, hint=status_hint(request))))
    if state == State.PENDING:
        if request.needs_approval:
            who = approvers or "someone with an approve grant"
            blocks.append(_context(f"Waiting for {who} to approve. Expires {slack_date(request.expires_at)}."))
            blocks.append(_buttons(request.id, approval=True))
        else:
            blocks.append(
                _context(f"Only {mention(request.requester_id)} can confirm. Expires {slack_date(request.expires_at)}.")
            )
            blocks.append(_buttons(request.id, approval=False))
    else:
        blocks.append(_context(_decision_line(request)))
        progress = progress_line(request)
        if progress:
            blocks.append(_context(progress))
    text = f"{mention(request.requester_id)} wants to start {count}"
    return text, blocks


def _buttons(request_id: int, *, approval: bool) -> Block:
    """Return the action buttons; the value is only the request id, everything else is read from the database."""
    if approval:
        first = ("Approve", action_ids.APPROVE, "primary")
        second = ("Reject", action_ids.REJECT, "danger")
        third = ("Cancel", action_ids.CANCEL, None)
        specs = [first, second, third]
    else:
        specs = [("Start", action_ids.START, "primary"), ("Cancel", action_ids.CANCEL, "danger")]
    elements = []
    for text, action_id, style in specs:
        button: Block = {
            "type": "button",
            "text": {"type": "plain_text", "text": text},
            "action_id": action_id,
            "value": str(request_id),
        }
        if style:
            button["style"] = style
        elements.append(button)
    return {"type": "actions", "block_id": action_ids.CONFIRM_BLOCK, "elements": elements}


def _decision_line(request: StartRequest) -> str:
    """Say who decided and when, or why nobody did."""
    state = State(request.state)
    when = slack_date(request.decided_at) if request.decided_at else ""
    who = mention(request.decided_by) if request.decided_by else ""
    if state == State.EXPIRED:
        return f":hourglass: Expired {slack_date(request.expires_at)} — nothing was started."
    if state == State.CANCELLED:
        if not request.decided_by:  # withdrawn: shown as such once a click finds the message
            return (
                f":no_entry_sign: Withdrawn ({outside(request.error or 'not posted', REASON_LIMIT)}) — these buttons "
                "do nothing and nothing was started. Run `/vm start` again if you still need it."
            )
        verb = "Rejected" if request.needs_approval and request.decided_by != request.requester_id else "Cancelled"
        return f":x: {verb} by {who} {when} — nothing was started."
    verb = "Approved" if request.needs_approval else "Confirmed"
    return f":white_check_mark: {verb} by {who} {when}."


def progress_line(request: StartRequest) -> str | None:
    """Summarise how far the start has come, for the parent message."""
    state = State(request.state)
    starting = [i for i in request.instances if i.to_start]
    running = sum(1 for i in starting if i.outcome == Outcome.RUNNING)
    if state in (State.APPROVED, State.STARTING):
        return ":hourglass_flowing_sand: Starting…"
    if state == State.WATCHING:
        return f":hourglass_flowing_sand: {running}/{len(starting)} RUNNING — details in the thread"
    if state == State.DONE:
        return f":large_green_circle: All {len(starting)} RUNNING{_took(request)}"
    if state == State.FAILED:
        return f":warning: {running}/{len(starting)} RUNNING — see the thread for what failed"
    if state == State.TIMED_OUT:
        return f":warning: Timed out with {running}/{len(starting)} RUNNING — see the thread"
    return None


def _count(n: int) -> str:
    """Return "1 instance" or "N instances"."""
    return f"{n} instance{'s' if n != 1 else ''}"


def _took(request: StartRequest) -> str:
    end = request.finished_at or request.updated_at
    if request.started_at is None or end is None:
        return ""
    return f" in {_duration((end - request.started_at).total_seconds())}"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


# --- thread replies ------------------------------------------------------------------------------------


def progress_reply(request: StartRequest, changes: Sequence[StatusChange]) -> str:
    """Render one thread reply listing what changed since the last one."""
    head = []
    if all(c.old is None for c in changes):
        ids = sorted({i.zenlayer_request_id for i in request.instances if i.zenlayer_request_id})
        shown = ", ".join(_listing([quoted(r) for r in ids], budget=REPLY_BUDGET // 6))
        head.append(f"Start requested (Zenlayer requestId {shown})." if ids else "Start requested.")
        if request.error:
            head.append(f":warning: {outside(request.error, REASON_LIMIT)}")
    lines = []
    for change in changes:
        new = outside(change.new, WORD_LIMIT) if change.new else "no longer found"
        emoji = STATUS_EMOJI.get(change.new or "", ":large_orange_circle:")
        old = f"{outside(change.old, WORD_LIMIT)} → " if change.old else ""
        address = _address(change.ip, change.new)
        lines.append(f"• {label(change.instance_id, change.name)}: {old}{emoji} {new}{address}")
    return _reply(head, lines, [], status_hint(request))


def final_reply(request: StartRequest) -> str:
    """Render the last thread reply, addressed to the requester: all RUNNING and how long it took, or what failed."""
    state = State(request.state)
    starting = [i for i in request.instances if i.to_start]
    who = mention(request.requester_id)
    if state == State.DONE:
        done = f"{who} :white_check_mark: All {_count(len(starting))} RUNNING{_took(request)}."
        reach = [f"• {label(i.instance_id, i.name)}{_address(i.ip_address, RUNNING)}" for i in starting if i.ip_address]
        return _reply([done], reach, [], status_hint(request))
    lines = []
    if state == State.TIMED_OUT:
        head = [f"{who} :alarm_clock: Stopped watching{_took(request)}; not RUNNING yet:"]
        lines = [
            f"• {label(i.instance_id, i.name)} — {outside(i.last_status or 'unknown', WORD_LIMIT)}"
            for i in starting
            if i.outcome == Outcome.TIMED_OUT
        ]
    else:
        head = [f"{who} :x: Not every instance started:"]
        for i in starting:
            if i.outcome == Outcome.RUNNING:
                continue
            why = i.skip_reason or (f"went {i.last_status}" if i.last_status else "no longer found at Zenlayer")
            lines.append(f"• {label(i.instance_id, i.name)} — {outside(why, REASON_LIMIT)}")
    tail = []
    running = [i.instance_id for i in starting if i.outcome == Outcome.RUNNING]
    if running:
        up = [i for i in starting if i.instance_id in running]
        shown = [f"{code(i.instance_id)}{_address(i.ip_address, RUNNING)}" for i in up]
        tail.append(f"RUNNING: {', '.join(_listing(shown, budget=REPLY_BUDGET // 4))}")
    if request.error:
        tail.append(f"Details: {outside(request.error, REASON_LIMIT)}")
    return _reply(head, lines, tail, status_hint(request))


def _reply(head: Sequence[str], lines: Sequence[str], tail: Sequence[str], hint: str) -> str:
    """Join a reply's fixed lines around its list, summarising the list so the whole stays within budget."""
    fixed = sum(len(line) + 1 for line in (*head, *tail))
    return "\n".join([*head, *_listing(lines, budget=max(REPLY_BUDGET - fixed, 200), hint=hint), *tail])


# --- picking instances: /vm list, and a name several instances share ----------------------------------


PICK_PER_BLOCK = 10  # Slack's limit of options in one checkboxes element
MAX_PICKABLE = 80  # eight checkbox groups; namesakes beyond this are narrowed by typing an id
OPTION_TEXT_LIMIT = 75  # Slack's limit for an option's text and description


def _option(info: InstanceInfo) -> Block:
    """Return a checkbox option for an instance: its name, then id, zone and resource group."""
    details = " · ".join(part for part in (info.instance_id, info.zone, info.resource_group_name, info.status) if part)
    return {
        "text": {"type": "plain_text", "text": shorten(info.name or info.instance_id, OPTION_TEXT_LIMIT)},
        "description": {"type": "plain_text", "text": shorten(details, OPTION_TEXT_LIMIT)},
        "value": info.instance_id,
    }


def _status_line(info: InstanceInfo) -> str:
    """Describe an instance that cannot be ticked, with its status."""
    emoji = STATUS_EMOJI.get(info.status, ":large_orange_circle:")
    status = outside(info.status, WORD_LIMIT)
    return f"• {label(info.instance_id, info.name, info.zone)} — {emoji} {status}{_address(info.ip, info.status)}"


def picker_blocks(
    heading: str,
    selectable: Sequence[InstanceInfo],
    *,
    preselected: Iterable[str] = (),
    others: Sequence[InstanceInfo] = (),
    footer: str | None = None,
) -> list[Block]:
    """Return checkboxes (ten per group) for the selectable instances, the others as lines, and Start selected."""
    ticked = set(preselected)
    blocks: list[Block] = _sections(heading.split("\n"))
    for number, start in enumerate(range(0, len(selectable), PICK_PER_BLOCK)):
        options = [_option(i) for i in selectable[start : start + PICK_PER_BLOCK]]
        checkboxes: Block = {"type": "checkboxes", "action_id": action_ids.PICK, "options": options}
        initial = [o for o in options if o["value"] in ticked]
        if initial:
            checkboxes["initial_options"] = initial
        blocks.append(
            {"type": "actions", "block_id": f"{action_ids.PICK_BLOCK_PREFIX}{number}", "elements": [checkboxes]}
        )
    blocks.extend(_sections(_status_line(i) for i in others))
    if selectable:
        button: Block = {
            "type": "button",
            "text": {"type": "plain_text", "text": "Start selected"},
            "action_id": action_ids.START_SELECTED,
            "value": "pick",
            "style": "primary",
        }
        blocks.append({"type": "actions", "block_id": action_ids.PICK_SUBMIT_BLOCK, "elements": [button]})
    if footer:
        blocks.append(_context(footer))
    return blocks


def list_message(channel_id: str, pattern: str | None, listing: Listing, *, page: int = 1) -> dict[str, Any]:
    """Render one page of `/vm list`: what the caller may start here, the STOPPED ones to tick, PAGE_LINES at most."""
    matching = f" matching {quoted(pattern)}" if pattern else ""
    if not listing.instances:
        text = f":information_source: There are no instances you may start in <#{channel_id}>{matching}."
        return {"text": text}
    command = f"/vm list {pattern}" if pattern else "/vm list"
    pages = pages_of(len(listing.instances))
    if page > pages:
        return {"text": no_such_page_text(page, pages, command)}
    shown = listing.instances[(page - 1) * PAGE_LINES : page * PAGE_LINES]
    selectable = [i for i in shown if i.status == "STOPPED"]
    others = [i for i in shown if i.status != "STOPPED"]
    count = _count(len(listing.instances))
    heading = f"*Instances you may start in <#{channel_id}>*{matching} — {count}"
    if selectable:
        heading += ", tick the STOPPED ones to start:"
    notes = []
    if pages > 1:
        notes.append(page_footer(page, pages, command))
    if listing.truncated:
        notes.append(f"I stopped reading after {listing.scanned} of {listing.total} instances.")
    blocks = picker_blocks(heading, selectable, others=others, footer=" ".join(notes) or None)
    text = f"Instances you may start here: {count}" + (f" (page {page} of {pages})" if pages > 1 else "")
    return {"text": text, "blocks": blocks}


def choice_message(ambiguous: Mapping[str, Sequence[InstanceInfo]], resolved: Sequence[InstanceInfo]) -> dict[str, Any]:
    """Ask which of several instances sharing a name were meant (the others asked for come ticked)."""
    lines = [
        f":twisted_rightwards_arrows: *{outside(name)}* is the name of {_count(len(candidates))}; "
        "tick the ones you mean (name, id, zone and resource group below):"
        for name, candidates in ambiguous.items()
    ]
    candidates = [c for group in ambiguous.values() for c in group]
    selectable = list({i.instance_id: i for i in [*resolved, *candidates]}.values())[:MAX_PICKABLE]
    footer = "Nothing starts yet: *Start selected* leads to the usual confirmation."
    blocks = picker_blocks("\n".join(lines), selectable, preselected=[i.instance_id for i in resolved], footer=footer)
    return {"text": "Several instances share that name — pick the ones you mean", "blocks": blocks}


def picked_text(count: int, channel_id: str) -> str:
    """Replace a picker once its choice became a confirmation."""
    return f":point_right: Asked to start {_count(count)} — confirm in <#{channel_id}>."


def nothing_picked_text() -> str:
    """Answer a Start selected with nothing ticked."""
    return ":point_up: Tick at least one instance first, then press *Start selected*."
