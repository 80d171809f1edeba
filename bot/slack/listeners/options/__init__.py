"""Type-ahead (block_suggestion): the start modal's instances, answered within Slack's 3 s from the instance mirror.

The answer is the ack itself, so it is computed on the request's own thread, as an acknowledgement (background work
waits meanwhile). Only the start modal's own field is answered; who types comes from Slack, the channel from the
modal's state (no channel yet: only grants usable in any channel count).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App

from bot.domain.ids import is_slack_channel_id
from bot.slack import action_ids
from bot.slack.listeners.background import require
from bot.slack.listeners.context import Context, part
from bot.slack.views import start_modal

log = logging.getLogger(__name__)


def register(app: App, ctx: Context) -> None:
    """Attach the options listeners to a bolt app."""
    suggestions = require(ctx.surfaces).suggestions

    def instances(ack: Ack, body: dict[str, Any]) -> None:
        with ctx.ack_first.acknowledging():
            view = part(body, "view")
            if view.get("callback_id") != action_ids.START_MODAL:
                ack(options=[])
                return
            state = part(part(part(view, "state"), "values"), action_ids.MODAL_CHANNEL)
            channel = str(part(state, action_ids.MODAL_CHANNEL).get("selected_conversation") or "")
            try:
                offered = suggestions.offer(
                    str(part(body, "user").get("id", "")),
                    channel if is_slack_channel_id(channel) else None,
                    str(body.get("value") or ""),
                )
            except Exception:
                log.exception("could not answer a type-ahead")
                offered = []
            ack(options=[start_modal.option(info) for info in offered])

    app.options(action_ids.MODAL_INSTANCES)(instances)
