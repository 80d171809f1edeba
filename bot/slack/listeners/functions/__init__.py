"""Workflow Builder steps (`function_executed`): "Start Zenlayer instances" (manifest.workflow-steps.yml)."""

from __future__ import annotations

from slack_bolt import App

from bot.slack import action_ids
from bot.slack.listeners.context import Context
from bot.slack.listeners.functions.start_step import StartStep


def register(app: App, ctx: Context) -> None:
    """Attach the step listeners to a bolt app."""
    app.function(action_ids.START_STEP)(StartStep(ctx))
