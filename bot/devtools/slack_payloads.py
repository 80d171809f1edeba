"""Slack's payloads for the surfaces beyond messages, built as Slack sends them (the shapes bolt-python parses):
`event_callback` with `app_home_opened` or `function_executed`, `shortcut`, and the fields every payload about a
view shares (view_submission, view_closed, and block_actions and block_suggestion from a view container)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bot.devtools.slack_functions import FunctionExecution
from bot.devtools.slack_messages import BOT_USER_ID
from bot.devtools.slack_views import APP_ID, TEAM_ID, SlackView

TEAM = {"id": TEAM_ID, "domain": "example"}


def home_opened_event(user: str, home: SlackView | None) -> dict[str, Any]:
    """Return app_home_opened for the Home tab (carrying the user's current Home view, once there is one)."""
    event: dict[str, Any] = {
        "type": "app_home_opened",
        "user": user,
        "channel": dm_channel(user),
        "tab": "home",
        "event_ts": event_ts(),
    }
    if home is not None:
        event["view"] = home.body
    return event_callback(event)


def shortcut_payload(callback_id: str, user: str, trigger_id: str) -> dict[str, Any]:
    """Return a global shortcut's payload (it carries no channel)."""
    return {
        "type": "shortcut",
        "token": "deprecated",
        "action_ts": event_ts(),
        "team": TEAM,
        "user": slack_user(user),
        "is_enterprise_install": False,
        "enterprise": None,
        "callback_id": callback_id,
        "trigger_id": trigger_id,
    }


def view_payload(kind: str, view: SlackView, state: dict[str, Any], user: str, **fields: Any) -> dict[str, Any]:
    """Return the fields every payload about a view shares (view_submission, view_closed, block_actions and
    block_suggestion from a view): the view as Slack holds it, with the state the user sees, plus `fields`."""
    return {
        "type": kind,
        "team": TEAM,
        "user": slack_user(user),
        "api_app_id": APP_ID,
        "token": "deprecated",
        "view": {**view.body, "state": state},
        "is_enterprise_install": False,
        "enterprise": None,
        **fields,
    }


def function_executed_event(
    execution: FunctionExecution, inputs: Mapping[str, Any], definition: Mapping[str, Any]
) -> dict[str, Any]:
    """Return function_executed for an execution the stand-in started, described by its manifest definition."""
    now = int(time.time())
    function = {
        "id": f"Fn{execution.id.removeprefix('Fx')}",
        "callback_id": execution.callback_id,
        "title": definition.get("title", execution.callback_id),
        "description": definition.get("description", ""),
        "type": "app",
        "input_parameters": parameters(definition.get("input_parameters"), described=inputs),
        "output_parameters": parameters(definition.get("output_parameters")),
        "app_id": APP_ID,
        "date_created": now - 86_400,
        "date_updated": now - 3_600,
        "date_deleted": 0,
    }
    event = {
        "type": "function_executed",
        "function": function,
        "inputs": dict(inputs),
        "function_execution_id": execution.id,
        "workflow_execution_id": f"Wx{execution.id.removeprefix('Fx')}",
        "event_ts": event_ts(),
        "bot_access_token": execution.token,
    }
    return event_callback(event)


def event_callback(event: dict[str, Any]) -> dict[str, Any]:
    """Wrap an event as the Events API delivers it."""
    return {
        "token": "deprecated",
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{secrets.token_hex(5).upper()}",
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def slack_user(user: str) -> dict[str, str]:
    """Return the `user` object of an interaction payload."""
    return {"id": user, "username": "someone", "name": "someone", "team_id": TEAM_ID}


def dm_channel(user: str) -> str:
    """Return the id of the bot's direct-message channel with a user (where its Home tab lives)."""
    return "D" + user.removeprefix("U").removeprefix("W")


def parameters(
    declared: Mapping[str, Any] | Sequence[Any] | None, *, described: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Return a function's parameters as function_executed lists them, from a manifest's `input_parameters` or
    `output_parameters` (a map of name to parameter, or {properties, required}); with none declared, each of
    `described` as a required string."""
    if declared is None:
        return [
            {"type": "string", "name": name, "title": name, "description": "", "is_required": True}
            for name in described or {}
        ]
    if isinstance(declared, Sequence):
        return [dict(p) for p in declared]
    properties = declared.get("properties", declared)
    required = set(declared.get("required", []))
    return [
        {
            "type": spec.get("type", "string"),
            "name": name,
            "title": spec.get("title", name),
            "description": spec.get("description", ""),
            "is_required": bool(spec.get("is_required", name in required)),
        }
        for name, spec in properties.items()
    ]


def event_ts() -> str:
    """Return an event or action timestamp as Slack writes it (seconds, to the microsecond)."""
    return f"{time.time():.6f}"
