"""The sender: delivers the outbox to Slack, paced per channel, never sleeping on a path other channels share.

Woken at once by every committed enqueue in this process (and by a short timer for other replicas' rows, backoffs
and channels coming free), it claims each ready channel's oldest row (bot.domain.outbox.claim: the channel's
shared slot and a lease), renders the message from the database, and sends it on a small pool, at most one send
in flight per channel. A 429 holds back only its channel for its Retry-After; transient failures back off;
permanent ones are recorded, and the person concerned is told privately where Slack still lets us.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot.db.models import StartRequest, utcnow
from bot.db.session import Database
from bot.domain import lifecycle, outbox
from bot.domain.lifecycle import ACTIVE_STATES, REPORTED_FINAL_STATES, State
from bot.domain.ports import StatusChange
from bot.metrics import Metrics
from bot.slack import blocks
from bot.slack.messages import PERMANENT_ERRORS, retry_after, slack_error

log = logging.getLogger(__name__)

SEND_THREADS = 8
# With nothing woken, look again this often: rows other replicas enqueued, backoffs that come due.
IDLE_SECONDS = 1.0
# Delivered (or failed) rows are kept this long for inspection, then deleted, once an hour.
KEEP_DONE = timedelta(days=7)
PRUNE_EVERY = timedelta(hours=1)
# Errors after which the channel no longer takes our messages (or nothing of ours is accepted at all): nobody can
# be told there privately, so it is only logged and counted. After any other error chat.postEphemeral is tried.
CHANNEL_GONE = frozenset(
    {
        "invalid_auth",
        "token_revoked",
        "account_inactive",
        "not_authed",
        "channel_not_found",
        "is_archived",
        "not_in_channel",
    }
)


@dataclass
class Message:
    """One rendered message: the Slack call to make (none: nothing left to say) and what to record once sent."""

    method: str | None = None
    args: dict[str, object] = field(default_factory=dict)
    shown: dict[int, str | None] = field(default_factory=dict)  # progress: row id → status shown
    tells_outcome: bool = False  # final: mark the outcome told (also when nothing is posted)


class Sender:
    """Delivers the outbox; run() in a thread of its own, next to the watcher's."""

    def __init__(
        self,
        db: Database,
        client: WebClient,
        *,
        owner: str,
        replica: str | None = None,
        approver_group: str | None = None,
        broadcast_success: bool = False,
        metrics: Metrics | None = None,
        workers: int = SEND_THREADS,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.db = db
        self.client = client  # one that raises on 429 instead of sleeping (app.make_web_client(wait_on_429=False))
        self.owner = owner
        self.replica = replica
        self.approver_group = approver_group
        self.broadcast_success = broadcast_success
        self.metrics = metrics or Metrics()
        self.workers = workers
        self.clock = clock
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()  # channels this process is sending to
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vm-bot-send")
        self._pruned: datetime | None = None
        self._renewed = utcnow()

    def wake(self) -> None:
        """Look for messages to send now (called after every committed enqueue)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Send until stop is set, then finish the sends in flight."""
        self.db.listen(outbox.TOPIC, self.wake)
        try:
            resumed = 0
            if self.replica is not None:
                with self.db.session() as session:
                    resumed = outbox.take_over_predecessor(session, replica=self.replica, owner=self.owner)
            if resumed:
                log.info("resuming %d message(s) this replica's previous process was sending", resumed)
        except Exception:
            log.exception("could not take over the sends of this replica's previous process; they lapse anyway")
        try:
            while not stop.is_set():
                try:
                    wait = self.step()
                except Exception:
                    log.exception("the sender failed to look for messages; retrying")
                    wait = IDLE_SECONDS
                self._wake.wait(wait)
                self._wake.clear()
        finally:
            self.db.unlisten(outbox.TOPIC, self.wake)
            self._pool.shutdown(wait=True)

    def step(self) -> float:
        """Claim and start sending what is ready; return how long to wait before looking again."""
        now = self.clock()
        if self._pruned is None or now - self._pruned >= PRUNE_EVERY:
            self._pruned = now
            with self.db.session() as session:
                outbox.prune(session, before=now - KEEP_DONE)
        with self._lock:
            busy = set(self._in_flight)
        if busy and (now - self._renewed).total_seconds() >= outbox.CLAIM_SECONDS / 3:
            # A heartbeat: a send slower than the claim (timeouts, retries) is not taken over while in flight.
            self._renewed = now
            with self.db.session() as session:
                outbox.renew(session, busy, owner=self.owner, now=now)
        free = self.workers - len(busy)
        if free <= 0:
            return IDLE_SECONDS  # a finishing send wakes us
        with self.db.session(readonly=True) as session:
            found = outbox.ready(session, now=now, busy=busy)
        for _row_id, channel_id in found.rows[:free]:
            with self.db.session() as session:
                claimed = outbox.claim(session, channel_id, owner=self.owner, now=self.clock())
            if claimed is None:
                continue
            with self._lock:
                self._in_flight.add(channel_id)
            try:
                self._pool.submit(self._send, claimed)
            except RuntimeError:  # shutting down: the claim lapses, or the next process takes it over
                with self._lock:
                    self._in_flight.discard(channel_id)
        if len(found.rows) > free:
            return IDLE_SECONDS
        if found.next_at is None:
            return IDLE_SECONDS
        return min(IDLE_SECONDS, max(0.01, (found.next_at - self.clock()).total_seconds()))

    # --- one send ------------------------------------------------------------------------------------------

    def _send(self, row: outbox.Claimed) -> None:
        """Render and send one claimed row, then record what happened; never raises."""
        try:
            self._deliver(row)
        except Exception:
            log.exception("could not deliver message %s (%s of request %s); retrying", row.id, row.kind, row.request_id)
            try:
                if row.attempts + 1 >= outbox.MAX_ATTEMPTS:  # the same cap as a transient Slack error
                    with self.db.session(readonly=True) as session:
                        request = lifecycle.get_request(session, row.request_id)
                    final = Message(tells_outcome=row.kind == outbox.Kind.FINAL)
                    self._finish(row, request, final, sent=True, error="gave up: internal error")
                    if request is not None:
                        self._tell(row, request, "internal error")
                else:
                    with self.db.session() as session:
                        outbox.retry(session, row, owner=self.owner, now=self.clock(), error="internal error")
            except Exception:
                log.exception("could not record the failure of message %s; its claim lapses", row.id)
        finally:
            with self._lock:
                self._in_flight.discard(row.channel_id)
            self.wake()

    def _deliver(self, row: outbox.Claimed) -> None:
        """Send one row and record the outcome in the same transaction as its effects."""
        with self.db.session(readonly=True) as session:
            request = lifecycle.get_request(session, row.request_id)
        if request is None:
            self._finish(row, None, Message(), sent=False)
            return
        message = self.render(row.kind, request)
        if message.method is None:
            self._finish(row, request, message, sent=False)
            return
        with self.db.session() as session:
            if not outbox.renew(session, [row.channel_id], owner=self.owner, now=self.clock()):
                log.warning("message %s was not sent: this sender's claim on %s lapsed", row.id, row.channel_id)
                return  # another sender may have it now; the row stays pending
        try:
            if message.method == "chat.update":
                self.client.chat_update(**message.args)  # type: ignore[arg-type]
            else:
                self.client.chat_postMessage(**message.args)  # type: ignore[arg-type]
        except SlackApiError as exc:
            self._refused(row, request, message, exc)
            return
        except Exception as exc:  # no answer (timeout, connection): Slack may or may not have it; try again later
            self._transient(row, request, message, type(exc).__name__)
            return
        self._finish(row, request, message, sent=True)

    def _finish(
        self,
        row: outbox.Claimed,
        request: StartRequest | None,
        message: Message,
        *,
        sent: bool,
        error: str | None = None,
    ) -> None:
        """Mark the row done and record its effects (statuses shown, outcome told) in one transaction."""
        now = self.clock()
        told = False
        with self.db.session(urgent=message.tells_outcome) as session:
            outbox.complete(session, row, owner=self.owner, now=now, error=error, sent=sent)
            if sent:  # shown, or refused for good: either way not to be tried again
                outbox.mark_reported(session, message.shown)
            if request is not None and message.tells_outcome:
                told = outbox.mark_told(session, request, now=now, delivery_error=error)
        if told and request is not None:
            self._timed(request)
        result = "failed" if error else "sent" if sent else "dropped"
        self.metrics.slack_messages.labels(row.kind.value, result).inc()

    def _timed(self, request: StartRequest) -> None:
        """Observe how long a request took from the approving click to every instance RUNNING."""
        if request.state == State.DONE and request.decided_at is not None and request.finished_at is not None:
            self.metrics.click_to_running.observe((request.finished_at - request.decided_at).total_seconds())

    def _refused(self, row: outbox.Claimed, request: StartRequest, message: Message, exc: SlackApiError) -> None:
        """Slack answered with an error: hold the channel (429), give up (permanent) or retry later."""
        response = exc.response
        if response is not None and response.status_code == 429:
            seconds = retry_after(response.headers)
            log.warning("Slack rate-limited channel %s; holding it back for %.0f s", row.channel_id, seconds)
            with self.db.session() as session:
                outbox.hold(session, row, owner=self.owner, now=self.clock(), seconds=seconds)
            return
        error = slack_error(exc) or "unknown_error"
        if error not in PERMANENT_ERRORS:
            self._transient(row, request, message, error)
            return
        log.warning(
            "Slack refused the %s message of request %s for good (%s); not retrying", row.kind, row.request_id, error
        )
        # A final outcome that cannot be posted is still recorded as told, with why, so the request ends.
        self._finish(row, request, message, sent=True, error=error)
        self._tell(row, request, error)

    def _transient(self, row: outbox.Claimed, request: StartRequest, message: Message, error: str) -> None:
        """Retry after a backoff, a limited number of times; a decision's edit that failed is told to the clicker
        at once (the decision stands, whatever the message shows)."""
        if row.attempts + 1 >= outbox.MAX_ATTEMPTS:
            log.warning("giving up on the %s message of request %s (%s)", row.kind, row.request_id, error)
            self._finish(row, request, message, sent=True, error=f"gave up after {row.attempts + 1} tries: {error}")
            self._tell(row, request, error)
            return
        log.warning("could not send the %s message of request %s (%s); retrying", row.kind, row.request_id, error)
        with self.db.session() as session:
            outbox.retry(session, row, owner=self.owner, now=self.clock(), error=error)
        if row.kind == outbox.Kind.REFRESH and row.notify_user is not None:
            self._tell(row, request, error)

    def _tell(self, row: outbox.Claimed, request: StartRequest, error: str) -> None:
        """Tell the person concerned privately that a message could not be shown: the clicker through their
        response_url, else with chat.postEphemeral where the channel still takes us; otherwise only log it."""
        decision = row.kind == outbox.Kind.REFRESH and row.notify_user is not None
        if row.kind == outbox.Kind.REFRESH and not decision:
            return  # the watcher's edit of the parent: the thread says the same
        user = row.notify_user if decision else request.requester_id
        text = (
            blocks.decision_not_shown_text(_decision_outcome(request), error)
            if decision
            else blocks.not_delivered_text(request, row.kind == outbox.Kind.FINAL, error)
        )
        told = False
        if row.response_url:
            try:
                answer = WebhookClient(row.response_url, timeout=10).send(
                    text=text, response_type="ephemeral", replace_original=False
                )
                told = answer.status_code == 200
            except Exception as exc:
                log.warning("could not answer the clicker through response_url (%s)", type(exc).__name__)
        if not told and user and error not in CHANNEL_GONE:
            try:
                self.client.chat_postEphemeral(channel=request.channel_id, user=user, text=text)
                told = True
            except Exception as exc:
                reason = slack_error(exc) if isinstance(exc, SlackApiError) else type(exc).__name__
                log.warning("could not tell %s privately either (%s)", user, reason)
        if not told:
            log.warning("nobody could be told that request %s's %s message failed (%s)", request.id, row.kind, error)
            self.metrics.slack_messages.labels(row.kind.value, "untold").inc()
        if decision:
            with self.db.session() as session:
                outbox.forget_notify(session, row.id)

    # --- rendering -----------------------------------------------------------------------------------------

    def render(self, kind: outbox.Kind, request: StartRequest) -> Message:
        """Render a row's message from the request as it is now (no method: nothing left to say)."""
        if kind == outbox.Kind.FINAL:
            return self._final(request)
        if request.message_ts is None:
            return Message()  # no confirmation in Slack: nothing to edit or reply under
        if kind == outbox.Kind.REFRESH:
            text, message_blocks = blocks.request_message(request, blocks.approver_phrase([], self.approver_group))
            return Message(
                "chat.update",
                {"channel": request.channel_id, "ts": request.message_ts, "text": text, "blocks": message_blocks},
            )
        return self._progress(request)

    def _progress(self, request: StartRequest) -> Message:
        """A thread reply with the statuses not yet told; none once the request is settled (the final says all)."""
        started = [i for i in request.instances if i.to_start]
        if State(request.state) not in ACTIVE_STATES or all(i.outcome is not None for i in started):
            return Message()
        owed = [i for i in started if i.skip_reason is None and i.last_status != i.reported_status]
        if not owed:
            return Message()
        changes = [StatusChange(i.instance_id, i.name, i.reported_status, i.last_status, i.ip_address) for i in owed]
        return Message(
            "chat.postMessage",
            {
                "channel": request.channel_id,
                "thread_ts": request.message_ts,
                "text": blocks.progress_reply(request, changes),
            },
            shown={i.id: i.last_status for i in owed},
        )

    def _final(self, request: StartRequest) -> Message:
        """The outcome, addressed to the requester; failures and timeouts also shown in the channel."""
        state = State(request.state)
        if state not in REPORTED_FINAL_STATES or request.outcome_posted_at is not None:
            return Message()
        if request.message_ts is None or state == State.EXPIRED:
            return Message(tells_outcome=True)  # nothing to reply under (an expiry shows in the confirmation)
        return Message(
            "chat.postMessage",
            {
                "channel": request.channel_id,
                "thread_ts": request.message_ts,
                "text": blocks.final_reply(request),
                "reply_broadcast": state != State.DONE or self.broadcast_success,
            },
            tells_outcome=True,
        )


def _decision_outcome(request: StartRequest) -> str:
    """Name the decision a request's state shows: approved, cancelled or rejected."""
    if request.state != State.CANCELLED:
        return "approved"
    rejected = request.needs_approval and request.decided_by not in (None, request.requester_id)
    return "rejected" if rejected else "cancelled"
