"""Slack listeners: acknowledge at once, then hand the work to vm-bot's own executors. Each folder registers its
own: commands (the `/vm` verbs) and actions (buttons and checkboxes)."""

from __future__ import annotations

from slack_bolt import App

from bot.slack.listeners import actions, commands
from bot.slack.listeners.context import Context


def register(app: App, ctx: Context) -> None:
    """Attach every listener to a bolt app."""
    commands.register(app, ctx)
    actions.register(app, ctx)
