"""The courier: turns an outbox row into a Slack call, rendered from the database as it is now, and records it.

It implements bot.delivery.ports.Courier for the sender. Confirmations are posted here too, through the same
channel gate as every other message: a rate-limited channel delays a confirmation, it never loses it. A post whose
outcome is unknown (a timeout: Slack may have posted it) withdraws the operation instead of posting it twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot.db.lease import Lease, Owner
from bot.db.session import Database
from bot.delivery import outbox
from bot.delivery.outbox import Claimed, Kind
from bot.delivery.ports import Failed, Held, Lost, Sent, Verdict
from bot.metrics import Metrics
from bot.operations import repository, told
from bot.operations.records import EXTENSION_SECONDS, OperationRecord
from bot.operations.states import REPORTED_FINAL_STATES, State
from bot.slack.slack_api import CANNOT_POST, CHANNEL_GONE, PERMANENT_ERRORS, rate_limited, slack_error
from bot.slack.views import confirmation, refusals, runs, thread
from bot.slack.views.message import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rendered:
    """One rendered row: the Slack call to make (none: nothing left to say) and what to record once it is made."""

    method: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    shown: dict[int, str | None] = field(default_factory=dict)  # progress: row id → status shown
    tells_outcome: bool = False  # final: mark the outcome told (also when nothing is posted)


class SlackCourier:
    """Delivers outbox rows to Slack with a client that raises on 429 (the gate holds the channel instead)."""

    def __init__(
        self,
        db: Database,
        client: WebClient,
        *,
        owner: Owner,
        lease: Lease,
        approver_group: str | None = None,
        broadcast_success: bool = False,
        metrics: Metrics | None = None,
        extend_seconds: float = EXTENSION_SECONDS,
    ):
        self.db = db
        self.client = client
        self.owner = owner
        self.lease = lease
        self.approver_group = approver_group  # a <!subteam^…> mention, when one is configured
        self.broadcast_success = broadcast_success
        self.metrics = metrics or Metrics()
        self.extend_seconds = extend_seconds  # what a reminder's Extend adds

    def deliver(self, row: Claimed) -> Verdict:
        """Render the row from the operation as it stands, send it, and record what was told."""
        with self.db.session() as session:
            # The claim is renewed (and found still ours) before anything is sent: a sender paused past it must not
            # send. The operation is read in the same transaction.
            held = outbox.renew(session, [row.channel_id], owner=self.owner, lease=self.lease)
            operation = None if row.request_id is None else repository.record(session, row.request_id)
        if not held:
            log.warning("message %s was not sent: this sender's claim on %s lapsed", row.id, row.channel_id)
            return Lost()
        rendered = Rendered() if operation is None else self.render(row.kind, operation)
        if rendered.method is None:
            self._finish(row, operation, rendered, sent=False)
            return Sent()
        assert operation is not None
        try:
            answer = self.client.api_call(rendered.method, json=rendered.args)
        except SlackApiError as exc:
            seconds = rate_limited(exc)
            if seconds is not None:
                return Held(seconds)
            error = slack_error(exc) or "unknown_error"
            return Failed(error, permanent=error in PERMANENT_ERRORS)
        except Exception as exc:  # no answer (timeout, connection): Slack may or may not have it
            if row.kind == Kind.CONFIRM:
                self._withdraw_unconfirmed(row, operation, exc)
                return Sent()
            return Failed(type(exc).__name__)
        posted = str(answer.get("ts")) if row.kind == Kind.CONFIRM and answer.get("ts") else None
        self._finish(row, operation, rendered, sent=True, message_ts=posted)
        return Sent()

    def give_up(self, row: Claimed, error: str) -> None:
        """Record the row failed for good (a final outcome still counts as told, with why) and tell who it concerns."""
        operation = self._operation(row)
        if operation is None:
            self._finish(row, None, Rendered(), sent=True, error=error)
            return
        if row.kind == Kind.CONFIRM:
            with self.db.session() as session:
                repository.withdraw(session, operation.id, f"could not post the confirmation: {error}")
            self._finish(row, operation, Rendered(), sent=True, error=error)
            self._tell(row, operation, refusals.cannot_post(operation, error) if error in CANNOT_POST else None, error)
            return
        rendered = Rendered(tells_outcome=row.kind == Kind.FINAL)
        self._finish(row, operation, rendered, sent=True, error=error)
        self._tell(row, operation, None, error)

    def delayed(self, row: Claimed, seconds: float) -> None:
        """A confirmation held back by a 429: tell its requester privately that it is coming (it is never dropped)."""
        if row.kind == Kind.CONFIRM and row.response_url is not None:
            self._answer(row.response_url, refusals.confirmation_delayed(row.channel_id, seconds))

    def warn(self, row: Claimed, error: str) -> None:
        """A decision's edit failed once: tell the clicker now (the decision stands, whatever the message shows)."""
        if row.kind == Kind.REFRESH and row.notify_user is not None:
            operation = self._operation(row)
            if operation is not None:
                self._tell(row, operation, None, error)

    def _operation(self, row: Claimed) -> OperationRecord | None:
        """Read the operation a row reports (None: it is gone, or the row is a person's, not an operation's)."""
        if row.request_id is None:
            return None
        with self.db.session(readonly=True) as session:
            return repository.record(session, row.request_id)

    # --- rendering -----------------------------------------------------------------------------------------

    def render(self, kind: Kind, operation: OperationRecord) -> Rendered:
        """Render a row's message from the operation as it is now (no method: nothing left to say)."""
        if kind == Kind.FINAL:
            return self._final(operation)
        if kind == Kind.CONFIRM:
            if operation.state != State.PENDING or operation.message_ts is not None:
                return Rendered()  # decided, expired or withdrawn before it could be posted, or posted already
            message = confirmation.confirmation(operation, self.approver_group)
            return Rendered("chat.postMessage", {"channel": operation.channel_id, **message.payload()})
        if operation.thread_ts is None:
            return Rendered()  # no confirmation in Slack: nothing to edit or reply under
        if kind == Kind.REMINDER:
            reminder = runs.reminder(operation, self.extend_seconds)
            if reminder is None:
                return Rendered()  # stopped, or extended past this reminder, before it could be posted
            args = {"channel": operation.channel_id, "thread_ts": operation.thread_ts, **reminder.payload()}
            return Rendered("chat.postMessage", args)
        if kind == Kind.REFRESH:
            message = confirmation.confirmation(operation, self.approver_group)
            args = {"channel": operation.channel_id, "ts": operation.message_ts, **message.payload()}
            return Rendered("chat.update", args)
        return self._progress(operation)

    def _progress(self, operation: OperationRecord) -> Rendered:
        """A thread reply with the statuses not yet told; none once settled (the final reply says it all)."""
        untold = operation.untold
        if not operation.active or operation.settled or not untold:
            return Rendered()
        message = thread.progress(operation, untold)
        args = {"channel": operation.channel_id, "thread_ts": operation.thread_ts, "text": message.text}
        return Rendered("chat.postMessage", args, shown={i.row_id: i.last_status for i in untold})

    def _final(self, operation: OperationRecord) -> Rendered:
        """The outcome, addressed to the requester; failures and timeouts also shown in the channel."""
        if operation.state not in REPORTED_FINAL_STATES or operation.outcome_posted_at is not None:
            return Rendered()
        if operation.thread_ts is None or operation.state == State.EXPIRED:
            return Rendered(tells_outcome=True)  # nothing to reply under (an expiry shows in the confirmation)
        args = {
            "channel": operation.channel_id,
            "thread_ts": operation.thread_ts,
            "text": thread.final(operation).text,
            "reply_broadcast": operation.state != State.DONE or self.broadcast_success,
        }
        return Rendered("chat.postMessage", args, tells_outcome=True)

    # --- recording and telling -----------------------------------------------------------------------------

    def _finish(
        self,
        row: Claimed,
        operation: OperationRecord | None,
        rendered: Rendered,
        *,
        sent: bool,
        error: str | None = None,
        message_ts: str | None = None,
    ) -> None:
        """Record the row done with its effects (statuses shown, outcome told, the message posted), and count it."""
        now_told = told.finish(
            self.db,
            row,
            operation,
            owner=self.owner,
            sent=sent,
            error=error,
            shown=rendered.shown,
            tells_outcome=rendered.tells_outcome,
            message_ts=message_ts,
        )
        if now_told and operation is not None:
            self._timed(operation)
        result = "failed" if error else "sent" if sent else "dropped"
        self.metrics.slack_messages.labels(row.kind.value, result).inc()

    def _timed(self, operation: OperationRecord) -> None:
        """Observe how long an operation took from the approving click to every instance at its goal (as rendered:
        an outcome is told once the operation is final, so those times no longer change)."""
        if operation.state == State.DONE and operation.decided_at and operation.finished_at:
            self.metrics.click_to_running.observe((operation.finished_at - operation.decided_at).total_seconds())

    def _withdraw_unconfirmed(self, row: Claimed, operation: OperationRecord, exc: Exception) -> None:
        """A confirmation's post went unanswered: withdraw the operation (unless a click on it came first)."""
        reason = f"Slack did not confirm the post ({type(exc).__name__})"
        with self.db.session() as session:
            withdrawn = repository.withdraw(session, operation.id, reason)
        self._finish(row, operation, Rendered(), sent=True, error=reason)
        if not withdrawn:
            # A click on the posted confirmation decided it first (and noted its ts): it was posted after all.
            log.warning("posting the confirmation of request %s timed out, but it was clicked", operation.id)
            return
        # A timeout or a lost connection is Slack's or the network's; anything else is ours, so keep its trace.
        log.warning("withdrew request %s: %s", operation.id, reason, exc_info=not isinstance(exc, OSError))
        self._tell(row, operation, refusals.post_unconfirmed(operation), reason)

    def _tell(self, row: Claimed, operation: OperationRecord, message: Message | None, error: str) -> None:
        """Tell the person concerned privately that a message could not be shown: the clicker (or requester)
        through the row's response_url, else with chat.postEphemeral where the channel still takes us."""
        decision = row.kind == Kind.REFRESH and row.notify_user is not None
        if row.kind == Kind.REFRESH and not decision:
            return  # the engine's edit of the parent: the thread says the same
        user = row.notify_user if decision or row.kind == Kind.CONFIRM else operation.requester_id
        if message is None:
            message = (
                thread.decision_not_shown(operation, error)
                if decision
                else thread.not_delivered(operation, row.kind == Kind.FINAL, error)
            )
        delivered = row.response_url is not None and self._answer(row.response_url, message)
        if not delivered and user and error not in CHANNEL_GONE:
            try:
                self.client.chat_postEphemeral(channel=operation.channel_id, user=user, **message.payload())
                delivered = True
            except Exception as exc:
                reason = slack_error(exc) if isinstance(exc, SlackApiError) else type(exc).__name__
                log.warning("could not tell %s privately either (%s)", user, reason)
        if not delivered:
            log.warning("nobody could be told that request %s's %s failed (%s)", operation.id, row.kind, error)
            self.metrics.slack_messages.labels(row.kind.value, "untold").inc()
        if decision:
            told.forget_notify(self.db, row.id)

    @staticmethod
    def _answer(response_url: str, message: Message) -> bool:
        """Post a private reply through a response_url; True when Slack took it."""
        try:
            answer = WebhookClient(response_url, timeout=10).send(**message.private())
        except Exception as exc:
            log.warning("could not answer through the response_url (%s)", type(exc).__name__)
            return False
        return answer.status_code == 200
