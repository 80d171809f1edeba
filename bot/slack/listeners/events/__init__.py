"""Events API listeners: the App Home, published when its owner opens it (and kept up to date through the outbox)."""

from __future__ import annotations

from typing import Any

from slack_bolt import App

from bot.domain.ids import is_slack_user_id
from bot.slack.listeners.background import require, soon
from bot.slack.listeners.context import Context


def register(app: App, ctx: Context) -> None:
    """Attach the event listeners to a bolt app."""
    surfaces = require(ctx.surfaces)

    def home_opened(event: dict[str, Any]) -> None:
        # bolt acknowledges events itself; recording who opened their Home waits until after that.
        with ctx.ack_first.acknowledging():
            user = str(event.get("user", ""))
            if event.get("tab") == "home" and is_slack_user_id(user):
                soon(surfaces, surfaces.opened_home, user)

    app.event("app_home_opened")(home_opened)
