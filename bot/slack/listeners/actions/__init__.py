"""Buttons and checkboxes: the confirmation's decisions, the instance picker, and the App Home's buttons."""

from __future__ import annotations

from slack_bolt import App

from bot.slack import action_ids
from bot.slack.listeners.actions import home
from bot.slack.listeners.actions.decisions import Decisions
from bot.slack.listeners.actions.picker import Picker
from bot.slack.listeners.context import Context


def register(app: App, ctx: Context) -> None:
    """Attach the button listeners to a bolt app."""
    decisions = Decisions(ctx)
    for action_id in action_ids.DECISION_ACTIONS:
        app.action(action_id)(decisions)
    picker = Picker(ctx)
    app.action(action_ids.PICK)(picker.on_tick)
    app.action(action_ids.START_SELECTED)(picker.on_start_selected)
    home.register(app, ctx)
