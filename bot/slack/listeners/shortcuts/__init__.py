"""Global shortcuts: "Start instances" opens the start modal (a global shortcut carries no channel)."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App

from bot.slack import action_ids
from bot.slack.listeners.context import Context
from bot.slack.listeners.views.start_modal import open_soon


def register(app: App, ctx: Context) -> None:
    """Attach the shortcut listeners to a bolt app."""

    def start_instances(ack: Ack, body: dict[str, Any]) -> None:
        with ctx.ack_first.acknowledging():
            ack()
            open_soon(ctx, body, None)

    app.shortcut(action_ids.START_SHORTCUT)(start_instances)
