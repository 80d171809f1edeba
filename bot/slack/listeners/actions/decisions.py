"""The confirmation's buttons: record the click, acknowledge it, then decide it — an acknowledged click survives
any crash, and a click that could not be decided at once is never reported as "nothing will happen"."""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Any

from slack_bolt import Ack, BoltRequest, Respond

from bot.logging_setup import log_context
from bot.operations.click_model import (
    RUN_DECISIONS,
    SHOWN_IN_THE_CONFIRMATION,
    ClickOutcome,
    ClickResult,
    ClickRow,
    Decision,
)
from bot.slack import action_ids
from bot.slack.listeners.context import Context, answering, part, reply, response_url, signed_request
from bot.slack.views import refusals, runs

log = logging.getLogger(__name__)

DECISIONS = {
    action_ids.START: Decision.CONFIRM,
    action_ids.CANCEL: Decision.CANCEL,
    action_ids.APPROVE: Decision.APPROVE,
    action_ids.REJECT: Decision.REJECT,
    action_ids.EXTEND: Decision.EXTEND,
    action_ids.STOP_RUN: Decision.STOP_RUN,
}


def clicked(body: dict[str, Any]) -> tuple[Decision, int] | None:
    """Return what a click asks and on which operation, or None for a payload Slack would never send."""
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}
    value = str(action.get("value", ""))
    decision = DECISIONS.get(str(action.get("action_id")))
    if decision is None or not (value.isascii() and value.isdigit()) or len(value) > 18:
        return None
    return decision, int(value)


class Decisions:
    """Start/Stop/Reboot, Cancel, Approve and Reject on a confirmation."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def __call__(self, ack: Ack, body: dict[str, Any], respond: Respond, request: BoltRequest) -> None:
        """bolt's entry point for a click."""
        answered = answering.set(signed_request(request))
        try:
            with self.ctx.ack_first.acknowledging():
                self._acknowledge(ack, body, respond)
        finally:
            answering.reset(answered)

    def _acknowledge(self, ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        """Record the click (an urgent write, which does not wait for other acks), ack, and submit the decision."""
        what = clicked(body)
        if what is None:
            ack()
            log.warning("ignoring a click with an unexpected value or action")
            return
        decision, request_id = what
        user = part(body, "user")
        container = part(body, "container")
        channel = part(body, "channel")
        click = ClickRow(
            request_id=request_id,
            user_id=str(user.get("id", "")),
            decision=decision,
            channel_id=str(channel.get("id") or container.get("channel_id") or "") or None,
            message_ts=str(container.get("message_ts", "")) or None,
        )
        with log_context(user=click.user_id, channel=click.channel_id, start_request_id=request_id):
            try:
                click_id = self.ctx.clicks.record(click)
            except Exception as exc:
                ack()
                failure = exc  # not recorded: nothing will happen, and the error handler says so
                self.ctx.later(self.ctx.decisions, respond, _raise, failure)
                return
            ack()
            dropped = functools.partial(self.ctx.clicks.drop, click_id)  # a replayed click is decided as nothing
            self.ctx.later(self.ctx.decisions, respond, self._decide, click_id, decision, on_replay=dropped)

    def _decide(self, click_id: int, decision: Decision, respond: Respond) -> None:
        """Decide a recorded click and show the outcome (nothing, if recovery already decided it).

        A recorded click is decided whatever happens here: tried again at once, and otherwise by the sweep of
        undecided clicks, so a failure is reported as pending, never as "nothing will happen".
        """
        for attempt in (1, 2):
            try:
                result = self.ctx.clicks.decide(click_id, response_url=response_url(respond))
                break
            except Exception:
                if attempt == 2:
                    reference = uuid.uuid4().hex[:8]
                    log.exception("could not decide click %s (reference %s); the sweep will", click_id, reference)
                    reply(respond, refusals.decision_pending(reference))
                    return
                log.warning("could not decide click %s; trying again", click_id, exc_info=True)
        if result is not None:
            self.ctx.metrics.clicks.labels(decision.value, result.outcome.value).inc()
            self._show(result, decision, respond)

    def _show(self, result: ClickResult, decision: Decision, respond: Respond) -> None:
        """A decision is shown by the confirmation's edit (in the outbox); a refusal is explained privately."""
        if result.outcome in SHOWN_IN_THE_CONFIRMATION:
            if result.outcome == ClickOutcome.APPROVED:
                self.ctx.wake_engine()
            return
        if decision in RUN_DECISIONS:
            if result.outcome == ClickOutcome.RUN_STOPPING:
                self.ctx.wake_engine()
            reply(respond, runs.run_click(result.outcome, result.request, self.ctx.extend_seconds))
            return
        links = {i: self.ctx.links.permalink(h.channel_id, h.message_ts) for i, h in result.holders.items()}
        reply(respond, refusals.click_refusal(result.outcome, result.request, result.coverage, result.busy, links))
        if result.outcome == ClickOutcome.EXPIRED and result.request is not None:
            self.ctx.wake_engine()  # the engine marks it expired and edits the message


def _raise(exc: Exception, respond: Respond) -> None:
    """Re-raise exc inside the error handler, so a failure before the ack is answered like any other."""
    raise exc
