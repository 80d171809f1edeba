"""Slack messages as a terminal shows them: mrkdwn rendered, blocks laid out, the transcript printed as it happens."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from bot.devtools.demo.script import (
    CHANNELS,
    SPEAKER_WIDTH,
    THREAD_PREFIX,
    USERS,
)
from bot.devtools.slack_calls import Call
from bot.devtools.slack_web_api import FakeSlackWebApi

EMOJI = {
    "alarm_clock": "⏰",
    "boom": "💥",
    "grey_question": "❔",
    "hourglass": "⌛",
    "hourglass_flowing_sand": "⏳",
    "information_source": "\u2139\ufe0f",
    "large_green_circle": "🟢",
    "large_orange_circle": "🟠",
    "large_yellow_circle": "🟡",
    "mag": "🔍",
    "no_entry": "⛔",
    "point_up": "☝️",
    "red_circle": "🔴",
    "rocket": "🚀",
    "speech_balloon": "💬",
    "stop_button": "⏹️",
    "stopwatch": "⏱️",
    "warning": "⚠️",
    "wastebasket": "🗑️",
    "wave": "👋",
    "white_check_mark": "✅",
    "white_circle": "⚪",
    "x": "❌",
}

_ANGLE = re.compile(r"<([^<>\n]*)>")
_EMOJI_CODE = re.compile(r":([a-z0-9_+\-]+):")
_CODE_SPAN = re.compile(r"(`[^`\n]*`)")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")

# --- rendering Slack messages for a terminal (pure) --------------------------------------------------------------


def render_mrkdwn(text: str, users: Mapping[str, str] = USERS, channels: Mapping[str, str] = CHANNELS) -> str:
    """Render Slack mrkdwn as a person reads it: names for mentions, link labels, date fallbacks, emoji, no escapes."""

    def angle(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            return "@" + users.get(target[1:], label or target[1:])
        if target.startswith("#"):
            return "#" + channels.get(target[1:], label or target[1:])
        if target.startswith("!date^"):
            return label or target.split("^")[1]
        if target.startswith("!subteam^"):
            return label or "@" + target.removeprefix("!subteam^")
        if target.startswith("!"):
            return "@" + (label or target[1:])
        return label or target

    text = _ANGLE.sub(angle, text)
    text = _EMOJI_CODE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)
    # Bold markers go, except inside code spans, where an asterisk is literal (`web-*`).
    text = "".join(part if part.startswith("`") else _BOLD.sub(r"\1", part) for part in _CODE_SPAN.split(text) if part)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render_buttons(elements: Sequence[Mapping[str, Any]]) -> str:
    """Render an actions block's buttons as `[ Start ]  [ Cancel ]`."""
    labels = [str(e.get("text", {}).get("text", "")) for e in elements if e.get("type") == "button"]
    return "  ".join(f"[ {label} ]" for label in labels)


def render_checkboxes(elements: Sequence[Mapping[str, Any]]) -> list[str]:
    """Render checkboxes as `☐ web-1 — 7001… · SEL-A`, one line per option (☑ when ticked)."""
    lines = []
    for element in elements:
        if element.get("type") != "checkboxes":
            continue
        ticked = {o.get("value") for o in element.get("initial_options", [])}
        for option in element.get("options", []):
            box = "☑" if option.get("value") in ticked else "☐"
            description = option.get("description", {}).get("text")
            text = str(option.get("text", {}).get("text", ""))
            lines.append(f"{box} {text}" + (f" — {description}" if description else ""))
    return lines


def render_message(text: str, blocks: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Return the lines a message shows: its blocks when it has any (as Slack does), else its text."""
    if not blocks:
        return render_mrkdwn(text).splitlines() or [""]
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind in ("section", "header"):
            parts = [block["text"]] if "text" in block else []
            parts += list(block.get("fields", []))
            lines += [line for part in parts for line in render_mrkdwn(str(part.get("text", ""))).splitlines()]
            accessory = block.get("accessory")
            if isinstance(accessory, Mapping) and accessory.get("type") == "button":
                lines.append(render_buttons([accessory]))
        elif kind == "context":
            texts = [render_mrkdwn(str(e.get("text", ""))) for e in block.get("elements", []) if "text" in e]
            lines += "  ".join(texts).splitlines()
        elif kind == "actions":
            lines += render_checkboxes(block.get("elements", []))
            buttons = render_buttons(block.get("elements", []))
            if buttons:
                lines.append(buttons)
        elif kind == "divider":
            lines.append("────")
    return lines or render_mrkdwn(text).splitlines() or [""]


def format_entry(speaker: str, lines: Sequence[str], *, thread: bool = False) -> str:
    """Lay out one message: the speaker in a column, continuation lines aligned, thread replies indented."""
    prefix = THREAD_PREFIX if thread else ""
    head = prefix + speaker.ljust(SPEAKER_WIDTH - 2) + "  "
    indent = " " * len(head)
    body = list(lines) or [""]
    return "\n".join([head + body[0], *(indent + line for line in body[1:])]).rstrip() + "\n"


def edited_lines(before: Sequence[str], after: Sequence[str]) -> list[str]:
    """Return what an edit changed, as people notice it: the new or rewritten lines (all of them when none are)."""
    matcher = difflib.SequenceMatcher(a=list(before), b=list(after), autojunk=False)
    changed = [line for op, _, _, j1, j2 in matcher.get_opcodes() if op != "equal" for line in after[j1:j2]]
    return changed or list(after)


def private_lines(user: str, lines: Sequence[str]) -> list[str]:
    """Mark a message as the private reply Slack shows only to one person."""
    who = "@" + USERS.get(user, user)
    body = list(lines) or [""]
    return [f"(only {who} sees this) {body[0]}", *body[1:]]


# --- the transcript ------------------------------------------------------------------------------------------


class Transcript:
    """Turns the Slack stand-in's record of Web API calls into the channel as people see it, printing as it goes."""

    def __init__(self, fake: FakeSlackWebApi, out: TextIO):
        self.fake = fake
        self.out = out
        self.seen = 0
        self.private_to: dict[str, str] = {}  # response_url key -> the user it answers
        self.shown: dict[str, list[str]] = {}  # message ts -> its lines as last printed

    def write(self, entry: str) -> None:
        """Print one entry at once, so the conversation shows as it happens."""
        self.out.write(entry)
        self.out.flush()

    def user(self, user: str, text: str) -> None:
        """Show something a person typed or did."""
        self.write(format_entry("@" + USERS[user], [text]))

    def private(self, user: str, body: Mapping[str, Any]) -> None:
        """Show a private reply (an ack or a response_url post)."""
        if body.get("delete_original") or not (body.get("text") or body.get("blocks")):
            return
        lines = render_message(str(body.get("text", "")), _blocks(body.get("blocks")))
        self.write(format_entry("vm-bot", private_lines(user, lines)))

    def catch_up(self) -> None:
        """Print every Web API call the bot made since the last look."""
        calls = self.fake.calls[self.seen :]
        self.seen += len(calls)
        for call in calls:
            self._show(call)

    def _show(self, call: Call) -> None:
        """Print one call as what it makes people see; failed calls show nothing, as in Slack."""
        args = call.args
        if call.method == "response_url":
            self.private(self.private_to.get(str(args.get("_key")), "?"), args)
            return
        if call.status != 200 or not call.response.get("ok"):
            return
        if call.method == "chat.postMessage":
            lines = render_message(str(args.get("text", "")), _blocks(args.get("blocks")))
            self.shown[str(call.response.get("ts"))] = lines
            self.write(format_entry("vm-bot", lines, thread=bool(args.get("thread_ts"))))
        elif call.method == "chat.update":
            lines = render_message(str(args.get("text", "")), _blocks(args.get("blocks")))
            before = self.shown.get(str(args.get("ts")), [])
            self.shown[str(args.get("ts"))] = lines
            if lines == before:
                return  # an edit that changes nothing is invisible
            marker = "(edited) "
            changed = edited_lines(before, lines)
            self.write(format_entry("vm-bot", [marker + changed[0], *(" " * len(marker) + c for c in changed[1:])]))
        elif call.method == "chat.postEphemeral":
            lines = render_message(str(args.get("text", "")), _blocks(args.get("blocks")))
            self.write(format_entry("vm-bot", private_lines(str(args.get("user", "?")), lines)))


def _blocks(value: Any) -> list[dict[str, Any]]:
    """Decode blocks that arrive as a list or as a JSON string (form encoding)."""
    if not value:
        return []
    return list(json.loads(value) if isinstance(value, str) else value)
