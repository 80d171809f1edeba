"""Messages as the Slack stand-in keeps them, the limits Slack checks a posted message against, and what people see.

Every posted message (chat.postMessage, chat.update, chat.postEphemeral, response_url) is checked against Slack's
documented limits — its blocks parsed with slack_sdk's models and validated (`bot.devtools.block_kit`), plus explicit
length checks — and refused `msg_too_long`, `invalid_blocks`, `invalid_blocks_format` or `no_text` as Slack does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot.devtools.block_kit import MAX_BLOCKS, block_problem

BOT_USER_ID = "UVMBOT0001"
TEXT_LIMIT = 40_000


@dataclass
class Message:
    """A message as it currently stands in a channel."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    user: str = BOT_USER_ID
    edits: int = 0
    broadcast: bool = False  # a thread reply also shown in the channel (reply_broadcast)


def message_error(args: dict[str, Any]) -> str | None:
    """Return the error Slack would answer for a message payload (text and blocks), or None if it accepts it."""
    text = args.get("text")
    raw_blocks = args.get("blocks")
    try:
        blocks = decoded_blocks(raw_blocks)
    except ValueError:
        return "invalid_blocks_format"
    if text is not None and not isinstance(text, str):
        return "invalid_arguments"
    if text and len(text) > TEXT_LIMIT:
        return "msg_too_long"
    if not text and not blocks and not args.get("delete_original"):
        return "no_text"
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict) or block_problem(block) is not None:
            return "invalid_blocks"
    return None


def decoded_blocks(value: Any) -> list[dict[str, Any]]:
    """Decode blocks sent either as a JSON list or a JSON string (form encoding)."""
    if not value:
        return []
    decoded = json.loads(value) if isinstance(value, str) else value
    return list(decoded)


def message_text(message: Message | dict[str, Any]) -> str:
    """Return all human-visible text of a message or response body: its text and every text in its blocks."""
    if isinstance(message, Message):
        text, blocks = message.text, message.blocks
    else:
        text, blocks = str(message.get("text", "")), decoded_blocks(message.get("blocks"))
    parts = [text]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and "text" in node:
                parts.append(str(node["text"]))
            for value in node.values():
                if isinstance(value, (dict, list)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return "\n".join(parts)
