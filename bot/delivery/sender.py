"""The sender: delivers the outbox, paced per channel, never sleeping on a path other channels share.

Woken at once by every committed enqueue in this process (and by a short timer for other replicas' rows, backoffs
and channels coming free), it claims each ready channel's oldest row (the channel's shared gate and a lease) and
hands it to the Courier on a small pool, one send in flight per channel. A 429 holds back only its channel for its
Retry-After; transient failures back off; permanent ones are recorded and the person concerned is told.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from bot.db.lease import Lease, Owner
from bot.db.session import Database
from bot.delivery import outbox
from bot.delivery.ports import Courier, Failed, Held, Verdict
from bot.runtime.keyed import KeyedExecutor
from bot.runtime.loop import RunLoop

log = logging.getLogger(__name__)

SEND_THREADS = 8
# With nothing woken, look again this often: rows other replicas enqueued, backoffs that come due.
IDLE_SECONDS = 1.0
PRUNE_EVERY_SECONDS = 3600.0


class Sender:
    """Delivers the outbox through a Courier; run() in a thread of its own, next to the engine's."""

    def __init__(
        self,
        db: Database,
        courier: Courier,
        *,
        owner: Owner,
        lease: Lease,
        workers: int = SEND_THREADS,
        housekeeping: Sequence[Callable[[], object]] = (),
    ):
        self.db = db
        self.housekeeping = list(housekeeping)  # run hourly with the outbox's own prune, e.g. PRUNE_OLDER_THAN
        self.courier = courier
        self.owner = owner
        self.lease = lease
        self.workers = workers
        self.sends: KeyedExecutor[str] = KeyedExecutor(workers, name="vm-bot-send")  # keyed by channel
        self.loop = RunLoop("the sender", self.step, retry_seconds=IDLE_SECONDS)
        self._pruned_at = float("-inf")
        self._renewed_at = time.monotonic()

    def wake(self) -> None:
        """Look for messages to send now (called after every committed enqueue)."""
        self.loop.wake()

    def run(self, stop: threading.Event) -> None:
        """Send until stop is set, then finish the sends in flight."""
        self.db.listen(outbox.TOPIC, self.wake)
        try:
            with self.db.session() as session:
                resumed = outbox.take_over_predecessor(session, owner=self.owner)
            if resumed:
                log.info("resuming %d message(s) this replica's previous process was sending", resumed)
        except Exception:
            log.exception("could not take over the sends of this replica's previous process; they lapse anyway")
        try:
            self.loop.run(stop)
        finally:
            self.db.unlisten(outbox.TOPIC, self.wake)
            self.sends.shutdown()

    def step(self) -> float:
        """Claim and start sending what is ready; return how long to wait before looking again."""
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            with self.db.session() as session:
                outbox.prune(session)
            for chore in self.housekeeping:
                try:
                    chore()
                except Exception:
                    log.exception("an hourly housekeeping chore failed; trying again in an hour")
        busy = self.sends.busy()
        if busy and time.monotonic() - self._renewed_at >= self.lease.heartbeat_seconds:
            # A heartbeat: a send slower than the claim (timeouts, retries) is not taken over while in flight.
            self._renewed_at = time.monotonic()
            with self.db.session() as session:
                outbox.renew(session, busy, owner=self.owner, lease=self.lease)
        free = self.workers - len(busy)
        if free <= 0:
            return IDLE_SECONDS  # a finishing send wakes us
        with self.db.session(readonly=True) as session:
            found = outbox.ready(session, busy=busy)
        claimed: list[outbox.Claimed] = []
        if found.channels[:free]:
            with self.db.session() as session:
                claimed = outbox.claim(session, found.channels[:free], owner=self.owner, lease=self.lease)
        for row in claimed:
            if not self.sends.submit(row.channel_id, self._send, row):
                log.info("not sending message %s now (shutting down); its claim lapses", row.id)
        if len(found.channels) > free or found.wait_seconds is None:
            return IDLE_SECONDS
        return min(IDLE_SECONDS, max(0.01, found.wait_seconds))

    def _send(self, row: outbox.Claimed) -> None:
        """Deliver one claimed row and settle what happened to it; never raises."""
        try:
            verdict: Verdict = self.courier.deliver(row)
        except Exception:
            log.exception("could not deliver message %s (%s of request %s)", row.id, row.kind, row.request_id)
            verdict = Failed("internal error")
        try:
            self._settle(row, verdict)
        except Exception:
            log.exception("could not record what became of message %s; its claim lapses", row.id)
        finally:
            self.wake()

    def _settle(self, row: outbox.Claimed, verdict: Verdict) -> None:
        """Hold the channel (429), give up (permanent, or the last try) or retry later (transient)."""
        if isinstance(verdict, Held):
            log.warning("Slack rate-limited channel %s; holding it back for %.0f s", row.channel_id, verdict.seconds)
            with self.db.session() as session:
                outbox.hold(session, row, owner=self.owner, seconds=verdict.seconds)
            self.courier.delayed(row, verdict.seconds)
        elif isinstance(verdict, Failed) and verdict.permanent:
            log.warning(
                "Slack refused the %s message of request %s for good (%s)", row.kind, row.request_id, verdict.error
            )
            self.courier.give_up(row, verdict.error)
        elif isinstance(verdict, Failed) and row.last_try:
            log.warning("giving up on the %s message of request %s (%s)", row.kind, row.request_id, verdict.error)
            self.courier.give_up(row, f"gave up after {row.attempts + 1} tries: {verdict.error}")
        elif isinstance(verdict, Failed):
            log.warning(
                "could not send the %s message of request %s (%s); retrying", row.kind, row.request_id, verdict.error
            )
            with self.db.session() as session:
                outbox.retry(session, row, owner=self.owner, error=verdict.error)
            self.courier.warn(row, verdict.error)
