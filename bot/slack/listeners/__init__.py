"""Slack listeners: acknowledge at once, then hand the work to vm-bot's own executors. Each folder registers its
own: commands (the `/vm` verbs), actions (buttons and checkboxes, the App Home's included), events (the App Home
opened), shortcuts, views (modal submissions), options (type-ahead) and functions (Workflow Builder steps)."""

from __future__ import annotations

from slack_bolt import App

from bot.slack.listeners import actions, commands, events, functions, options, shortcuts, views
from bot.slack.listeners.context import Context


def register(app: App, ctx: Context) -> None:
    """Attach every listener to a bolt app."""
    commands.register(app, ctx)
    actions.register(app, ctx)
    for surface in (events, shortcuts, views, options, functions):
        surface.register(app, ctx)
