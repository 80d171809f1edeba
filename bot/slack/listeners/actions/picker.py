"""The instance picker (`/vm list`, or a name several instances share): checkboxes, then Start selected."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, BoltRequest, Respond

from bot.domain.actions import ACTIONS, START, Action
from bot.domain.durations import MAX_SECONDS, MIN_SECONDS
from bot.domain.ids import is_instance_id
from bot.slack import action_ids
from bot.slack.listeners.commands.parse import MAX_IDS
from bot.slack.listeners.commands.start import ask
from bot.slack.listeners.context import Context, answering, part, reply, signed_request
from bot.slack.views import picker

log = logging.getLogger(__name__)


def picked_ids(body: dict[str, Any]) -> list[str]:
    """Return the instance ids ticked in a picker's checkboxes (valid ids only, in order, at most MAX_IDS)."""
    state = body.get("state")
    values = state.get("values", {}) if isinstance(state, dict) else {}
    ids: list[str] = []
    if not isinstance(values, dict):
        return ids
    for block_id, actions in values.items():
        if not str(block_id).startswith(action_ids.PICK_BLOCK_PREFIX) or not isinstance(actions, dict):
            continue
        ticked = actions.get(action_ids.PICK)
        selected = (ticked.get("selected_options") if isinstance(ticked, dict) else None) or []
        for option in selected if isinstance(selected, list) else []:
            value = str(option.get("value", "")) if isinstance(option, dict) else ""
            if is_instance_id(value) and value not in ids:
                ids.append(value)
    return ids[:MAX_IDS]


def picked_action(body: dict[str, Any]) -> tuple[Action, float | None] | None:
    """Return the action and run length the picker's button carries ("pick", "pick:stop", "pick:start:3600");
    None for a value vm-bot never writes."""
    actions = body.get("actions")
    button = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}
    words = str(button.get("value", "pick")).split(":")
    if words[0] != "pick" or len(words) > 3:
        return None
    action = ACTIONS.get(words[1]) if len(words) > 1 else START
    seconds = words[2] if len(words) > 2 else None
    if action is None or (seconds is not None and not (seconds.isascii() and seconds.isdigit())):
        return None
    run_seconds = float(seconds) if seconds is not None else None
    if run_seconds is not None and (action != START or not MIN_SECONDS <= run_seconds <= MAX_SECONDS):
        return None
    return action, run_seconds


class Picker:
    """Ticks need only an ack; Start selected treats the ticked instances as a `/vm start` of their ids."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def on_tick(self, ack: Ack) -> None:
        """A checkbox was ticked or cleared: Slack tells us, but only Start selected acts on it."""
        ack()

    def on_start_selected(self, ack: Ack, body: dict[str, Any], respond: Respond, request: BoltRequest) -> None:
        """Acknowledge Start selected, then run the ticked ids through the same checks as `/vm start`."""
        ack()
        answered = answering.set(signed_request(request))
        try:
            self._hand_over(body, respond)
        finally:
            answering.reset(answered)

    def _hand_over(self, body: dict[str, Any], respond: Respond) -> None:
        """Hand the ticked ids over to the lookups executor (once per signed request)."""
        user = part(body, "user")
        channel = part(body, "channel")
        container = part(body, "container")
        channel_id = str(channel.get("id") or container.get("channel_id") or "")
        what = picked_action(body)
        if what is None:
            log.warning("ignoring a picker button with an unexpected value")
            return
        user_id = str(user.get("id", ""))
        self.ctx.later(self.ctx.lookups, respond, self._ask, user_id, channel_id, picked_ids(body), *what)

    def _ask(
        self, user_id: str, channel_id: str, ids: list[str], action: Action, run_seconds: float | None, respond: Respond
    ) -> None:
        """Ask for the usual confirmation in the channel, then replace the picker with a pointer to it."""
        if not ids:
            reply(respond, picker.nothing_picked())
            return
        ask(self.ctx, user_id, channel_id, action, ids, respond, run_seconds=run_seconds)
        reply(respond, picker.picked(len(ids), channel_id, action), replace_original=True)
