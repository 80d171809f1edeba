"""Views as Slack holds them: a modal's or Home tab's view as the app sent it plus what Slack adds (an id, a hash,
state, the block and action ids it generated), and what a person sees of one."""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass
from typing import Any

TEAM_ID = "T0001"
APP_ID = "A0001"
BOT_ID = "BVMBOT0001"


@dataclass
class SlackView:
    """A modal or Home tab as Slack holds it: the view the app sent plus what Slack adds (id, hash, state, block
    and action ids it generated). `opened_from` is the channel of the interaction that opened a modal (None for a
    shortcut or the Home); `versions` counts how often the app published or updated it."""

    id: str
    user: str
    body: dict[str, Any]
    opened_from: str | None = None
    closed: bool = False
    versions: int = 1

    @property
    def type(self) -> str:
        return str(self.body.get("type"))

    @property
    def callback_id(self) -> str:
        return str(self.body.get("callback_id") or "")

    @property
    def private_metadata(self) -> str:
        return str(self.body.get("private_metadata") or "")

    @property
    def hash(self) -> str:
        return str(self.body.get("hash"))

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return list(self.body.get("blocks") or [])

    @property
    def title(self) -> str:
        title = self.body.get("title")
        return str(title.get("text", "")) if isinstance(title, dict) else ""

    def element(self, action_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (block, element) of the interactive element with this action_id; KeyError when there is none."""
        for block in self.blocks:
            for element in interactive_elements(block):
                if element.get("action_id") == action_id:
                    return block, element
        raise KeyError(f"no element with action_id {action_id!r} in view {self.id} ({self.callback_id})")


def held_body(view: dict[str, Any], view_id: str, view_hash: str) -> dict[str, Any]:
    """Return a view as Slack answers and later sends it: the app's fields plus Slack's, ids filled in."""
    blocks = [_with_ids(block) for block in view.get("blocks", [])]
    return {
        "id": view_id,
        "team_id": TEAM_ID,
        "type": view.get("type"),
        "blocks": blocks,
        "private_metadata": view.get("private_metadata", ""),
        "callback_id": view.get("callback_id", ""),
        "state": {"values": {}},
        "hash": view_hash,
        "title": view.get("title"),
        "clear_on_close": bool(view.get("clear_on_close", False)),
        "notify_on_close": bool(view.get("notify_on_close", False)),
        "close": view.get("close"),
        "submit": view.get("submit"),
        "previous_view_id": None,
        "root_view_id": view_id,
        "app_id": APP_ID,
        "external_id": view.get("external_id", ""),
        "app_installed_team_id": TEAM_ID,
        "bot_id": BOT_ID,
    }


def _with_ids(block: dict[str, Any]) -> dict[str, Any]:
    """Copy a block, giving it and its interactive elements the random ids Slack gives those that have none."""
    block = copy.deepcopy(block)
    block.setdefault("block_id", secrets.token_urlsafe(3))
    for element in interactive_elements(block):
        if element.get("type") not in ("mrkdwn", "plain_text", "image"):
            element.setdefault("action_id", secrets.token_urlsafe(3))
    return block


def interactive_elements(block: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the interactive elements of a block (an input's element, a section's accessory, actions' elements)."""
    if block.get("type") == "input":
        return [block["element"]] if isinstance(block.get("element"), dict) else []
    if block.get("type") == "section":
        return [block["accessory"]] if isinstance(block.get("accessory"), dict) else []
    if block.get("type") == "actions":
        return [e for e in block.get("elements", []) if isinstance(e, dict)]
    return []


def view_text(view: SlackView) -> str:
    """Return all human-visible text of a view: its title and every text in its blocks."""
    parts = [view.title]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and "text" in node:
                parts.append(str(node["text"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(view.blocks)
    return "\n".join(p for p in parts if p)
