"""A signed request's body read as bolt will read it, checked for what Slack always sends before bolt sees it.

Slack never sends a command without its user or channel, a click without actions, or a button value we did not
put there; such a body (however it came to be signed) is answered 400 at the edge, with one log line and a count,
instead of failing inside bolt or a listener with a traceback and a 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_bolt.request.internals import parse_body

from bot.slack import action_ids

COMMAND_FIELDS = ("command", "user_id", "channel_id")
MAX_TRIGGER_ID = 255  # the seen_requests column; Slack's are about 50 characters
MAX_REQUEST_NUMBER = 2**31 - 1  # request ids are 32-bit integers on PostgreSQL


@dataclass(frozen=True)
class Inbound:
    """What a body holds: its trigger_id (None when it has none), or why Slack would never have sent it."""

    trigger_id: str | None = None
    problem: str | None = None


def is_request_number(value: str) -> bool:
    """True when a button value can name a start request (ASCII digits: '²'.isdigit() is True, int('²') fails)."""
    return value.isascii() and value.isdigit() and len(value) <= 10 and int(value) <= MAX_REQUEST_NUMBER


def read_inbound(body: str, content_type: str | None) -> Inbound:
    """Parse body exactly as bolt does and say what is wrong with it, if anything."""
    try:
        parsed = parse_body(body, content_type)
    except ValueError as exc:  # bad JSON (json.JSONDecodeError is a ValueError)
        return Inbound(problem=f"unreadable body ({type(exc).__name__})")
    if not isinstance(parsed, dict):
        return Inbound(problem="the body is not an object")
    trigger_id = parsed.get("trigger_id")
    if trigger_id is not None and (not isinstance(trigger_id, str) or not 0 < len(trigger_id) <= MAX_TRIGGER_ID):
        return Inbound(problem="trigger_id is not a short string")
    if "command" in parsed:
        missing = [f for f in COMMAND_FIELDS if not parsed.get(f)]
        problem = f"a command without {', '.join(missing)}" if missing else None
    elif "type" in parsed:
        problem = _interaction_problem(parsed)
    elif "ssl_check" in parsed:
        problem = None  # Slack's check of the endpoint's certificate: bolt answers it
    else:
        problem = "neither a command nor an interaction"
    return Inbound(trigger_id or None, problem)


def _interaction_problem(payload: dict[str, Any]) -> str | None:
    """Say what is wrong with an interaction payload (only button clicks are looked into)."""
    if not isinstance(payload["type"], str):
        return "a payload whose type is not a string"
    for name in ("user", "container", "channel", "message", "state"):
        if name in payload and not isinstance(payload[name], dict):
            return f"a payload whose {name} is not an object"
    if payload["type"] != "block_actions":
        return None
    if not isinstance(payload.get("user", {}).get("id"), str):
        return "a click without its user"
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions:
        return "a click without actions"
    if not all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions):
        return "a click with an action that has no action_id"
    first = actions[0]
    if first["action_id"] in action_ids.DECISION_ACTIONS and not is_request_number(str(first.get("value", ""))):
        return "a click whose button names no request"
    return None
