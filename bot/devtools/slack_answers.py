"""How the Slack stand-in words what it refuses about a surface, and reads arguments sent as JSON or JSON text."""

from __future__ import annotations

import json
from typing import Any

Answer = dict[str, Any]


def decoded(value: Any) -> Any:
    """Decode an argument sent as a JSON string (form encoding) or as JSON already."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def refusal(error: tuple[str, list[str]] | None) -> Answer | None:
    """Return Slack's answer to a view it will not take (None when `error` is None), from block_kit's view_error."""
    if error is None:
        return None
    code, messages = error
    answer: Answer = {"ok": False, "error": code}
    if messages:
        answer["response_metadata"] = {"messages": messages}
    return answer


def invalid(*messages: str) -> Answer:
    """Return Slack's answer to arguments it cannot take, with its messages."""
    return {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": list(messages)}}


def missing(name: str) -> str:
    """Return the message naming a required argument that was not sent."""
    # The wording of Slack's message for a missing argument was not confirmed; the error code is invalid_arguments.
    return f"[ERROR] missing required field: {name} [json-pointer:/{name}]"
