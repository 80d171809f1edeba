"""The one type every view returns: a message's fallback text and its blocks, and how to hand it to Slack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Block = dict[str, Any]


@dataclass(frozen=True)
class Message:
    """Text (always: notifications and screen readers read it) and optional Block Kit blocks."""

    text: str
    blocks: list[Block] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        """Return text and, when there are any, blocks: what ack(), respond() and chat.* calls all take."""
        return {"text": self.text, "blocks": self.blocks} if self.blocks else {"text": self.text}

    def private(self, *, replace_original: bool = False) -> dict[str, Any]:
        """Return the arguments of a private reply through a response_url (never replacing what was clicked,
        unless asked)."""
        return {**self.payload(), "response_type": "ephemeral", "replace_original": replace_original}
