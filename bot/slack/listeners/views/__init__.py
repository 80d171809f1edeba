"""Modal submissions: the start modal (opened from `/vm start`, the Home's button and the global shortcut)."""

from __future__ import annotations

from slack_bolt import App

from bot.slack import action_ids
from bot.slack.listeners.context import Context
from bot.slack.listeners.views.start_modal import StartModal


def register(app: App, ctx: Context) -> None:
    """Attach the modal listeners to a bolt app."""
    app.view(action_ids.START_MODAL)(StartModal(ctx).on_submit)
