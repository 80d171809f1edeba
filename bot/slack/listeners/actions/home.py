"""The App Home's buttons: Start instances (the modal), Approve / Reject (the same clicks as on a confirmation,
recorded before the ack and decided by the same rules), and a run's Extend / Stop.

A Home is a view of its reader's own: a click there has no message or channel, and no response_url either, so what a
click did not do is said at the top of the reader's Home instead of in a private reply.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App

from bot.domain.errors import UserError
from bot.domain.ids import is_instance_id
from bot.operations.click_model import SHOWN_IN_THE_CONFIRMATION, ClickOutcome, ClickRow, Decision
from bot.slack import action_ids
from bot.slack.listeners.background import require, soon
from bot.slack.listeners.context import Context, part
from bot.slack.listeners.views.start_modal import open_soon
from bot.slack.views import refusals
from bot.slack.views.format import escape

log = logging.getLogger(__name__)

DECISIONS = {action_ids.HOME_APPROVE: Decision.APPROVE, action_ids.HOME_REJECT: Decision.REJECT}


def register(app: App, ctx: Context) -> None:
    """Attach the Home's button listeners to a bolt app."""
    buttons = HomeButtons(ctx)
    app.action(action_ids.HOME_START)(buttons.on_start)
    for action_id in DECISIONS:
        app.action(action_id)(buttons.on_decision)
    app.action(action_ids.HOME_RUN)(buttons.on_run)


def _action(body: dict[str, Any]) -> dict[str, Any]:
    actions = body.get("actions")
    return actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}


def _from_home(body: dict[str, Any]) -> bool:
    """True when the click was made on a Home (the only place these buttons are)."""
    return part(body, "container").get("type") == "view" and part(body, "view").get("type") == "home"


class HomeButtons:
    """Start instances, Approve, Reject, and a run's menu, on the App Home."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.surfaces = require(ctx.surfaces)

    def on_start(self, ack: Ack, body: dict[str, Any]) -> None:
        """Open the start modal (a Home has no channel to preset)."""
        with self.ctx.ack_first.acknowledging():
            ack()
            open_soon(self.ctx, body, None)

    def on_decision(self, ack: Ack, body: dict[str, Any]) -> None:
        """Record the click (before the ack, as on a confirmation), then decide it."""
        with self.ctx.ack_first.acknowledging():
            action = _action(body)
            decision = DECISIONS.get(str(action.get("action_id")))
            value = str(action.get("value", ""))
            user = str(part(body, "user").get("id", ""))
            number = value.isascii() and value.isdigit() and len(value) <= 18
            if decision is None or not number or not _from_home(body):
                ack()
                log.warning("ignoring a Home click with an unexpected value or container")
                return
            # No channel and no message: a Home is its reader's own, and the click's rules do not depend on where.
            click = ClickRow(int(value), user, decision, channel_id=None, message_ts=None)
            try:
                click_id = self.ctx.clicks.record(click)
            except Exception:
                ack()
                log.exception("could not record a Home click")
                soon(self.surfaces, self.surfaces.tell, user, "I could not record that click; nothing happened.")
                return
            ack()
            soon(self.surfaces, self._decide, click_id, decision, user)

    def _decide(self, click_id: int, decision: Decision, user: str) -> None:
        """Decide a recorded click; what it changed shows on the Homes it concerns, a refusal on the clicker's."""
        result = self.ctx.clicks.decide(click_id)
        if result is None:
            return  # decided already, by recovery
        self.ctx.metrics.clicks.labels(decision.value, result.outcome.value).inc()
        if result.outcome == ClickOutcome.APPROVED or result.outcome == ClickOutcome.EXPIRED:
            self.ctx.wake_engine()
        if result.outcome in SHOWN_IN_THE_CONFIRMATION:
            self.surfaces.refresh(user)  # the clicker's Home, even if they were not a listed approver
            return
        links = {i: self.surfaces.workspace.message_link(h.channel_id, h.message_ts) for i, h in result.holders.items()}
        text = refusals.click_refusal(result.outcome, result.request, result.coverage, result.busy, links).text
        self.surfaces.tell(user, text)

    def on_run(self, ack: Ack, body: dict[str, Any]) -> None:
        """A run's menu: Extend 1 h or Stop now (`extend:ID:INSTANCE`), decided by the runs themselves."""
        with self.ctx.ack_first.acknowledging():
            ack()
            picked = part(_action(body), "selected_option")
            verb, _, rest = str(picked.get("value", "")).partition(":")
            request, _, instance_id = rest.partition(":")
            user = str(part(body, "user").get("id", ""))
            valid = request.isascii() and request.isdigit() and len(request) <= 18 and is_instance_id(instance_id)
            if verb not in ("extend", "stop") or not valid or not _from_home(body):
                log.warning("ignoring a Home run menu pick with an unexpected value or container")
                return
            soon(self.surfaces, self._run, user, verb, int(request), instance_id)

    def _run(self, user: str, verb: str, request_id: int, instance_id: str) -> None:
        """Extend or stop a run; say what happened on the Home."""
        runs = self.surfaces.runs
        try:
            said = (runs.extend if verb == "extend" else runs.stop)(user, request_id, instance_id)
        except UserError as exc:
            said = escape(str(exc))
        self.surfaces.tell(user, said)
