"""The engine: one loop that moves every leased operation along — calls made, instances polled, timers fired.

Safe in several replicas: each works only on the operations it holds a lease on (bot.operations.leases), renewed by
a heartbeat however slow the work under it, and every write is fenced by that lease. One slow operation never
delays another: calls and reconciliation run on a keyed executor, one job per operation at a time, while status
polling stays one batched call per 100 watched instances for everyone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from itertools import groupby

from bot.db.clock import OffsetWatch, replica_offset
from bot.db.lease import Lease, Owner
from bot.db.session import Database
from bot.domain.ports import VmApi
from bot.domain.vocabulary import SYSTEM_ACTOR
from bot.execution.calls import Caller, LeaseLost
from bot.execution.polling import Poller
from bot.execution.ports import Job
from bot.operations import leases, repository
from bot.operations.journal import SqlJournal
from bot.operations.states import State
from bot.operations.timers import Timers
from bot.runtime.keyed import KeyedExecutor
from bot.runtime.loop import RunLoop

log = logging.getLogger(__name__)

# The run timers' key in the engine's KeyedExecutor: operation ids start at 1, so it is never an operation's.
TIMERS_KEY = 0


def _action(job: Job) -> str:
    """Group jobs by their action's name."""
    return job.action.name


def _ignore(value: float) -> None:
    """Observe nothing (the default observer)."""


class Engine:
    """Moves operations from approved to a final state; never talks to Slack (what users are owed goes through the
    outbox, written with each change)."""

    def __init__(
        self,
        db: Database,
        vm: VmApi,
        *,
        owner: Owner,
        lease: Lease,
        poll_interval_seconds: float,
        watch_seconds: float,
        reminder_seconds: float = 900.0,
        workers: int = 0,
        chores: Sequence[Callable[[], object]] = (),
    ):
        self.db = db
        self.owner = owner
        self.lease = lease
        self.poll_interval = poll_interval_seconds
        self.chores = list(chores)  # run first in every step, e.g. deciding clicks a crashed process left
        self.journal = SqlJournal(
            db, owner=owner, lease=lease, watch_seconds=watch_seconds, reminder_seconds=reminder_seconds
        )
        self.chores.append(self.journal.settle_unrecorded)
        self.timers = Timers(db, vm, edit_after=poll_interval_seconds)
        self.caller = Caller(vm, self.journal)
        self.poller = Poller(vm)
        self.jobs: KeyedExecutor[int] = KeyedExecutor(workers, name="vm-bot-work")
        # Observers for metrics and readiness (set by app.py): a finished step's duration, leases taken over.
        self.on_tick: Callable[[float], None] = _ignore
        self.on_takeover: Callable[[int], None] = _ignore
        self.on_clock_offset: Callable[[float], None] = _ignore  # this replica's clock minus the database's
        self.clock = OffsetWatch()
        self.loop = RunLoop("the engine", self.step, retry_seconds=poll_interval_seconds, on_step=self._ticked)
        self.heartbeat = RunLoop("the lease heartbeat", self._renew, retry_seconds=lease.heartbeat_seconds)

    def wake(self) -> None:
        """Ask for a step now, e.g. right after an operation was approved."""
        self.loop.wake()

    def run(self, stop: threading.Event) -> None:
        """Step every poll interval (or when woken) until stop is set, renewing leases beside it; then hand the
        unfinished operations over at once instead of making the next process wait out the lease."""
        log.info(
            "engine %s started (poll every %ss, lease %ss)", self.owner.name, self.poll_interval, self.lease.seconds
        )
        try:
            self.take_over_predecessor()
        except Exception:
            log.exception("could not take over the leases of this replica's previous process; they lapse anyway")
        heartbeat = threading.Thread(target=self.heartbeat.run, args=(stop,), name="lease-heartbeat", daemon=True)
        heartbeat.start()
        self.loop.run(stop)
        self.heartbeat.wake()
        self.jobs.shutdown(cancel_pending=True)
        heartbeat.join(timeout=5)
        try:
            with self.db.session() as session:
                leases.release(session, owner=self.owner)
        except Exception:
            log.exception("could not release leases; they lapse by themselves")
        log.info("engine %s stopped", self.owner.name)

    def take_over_predecessor(self) -> int:
        """Take the leases an earlier process of this replica left behind; return how many."""
        with self.db.session() as session:
            taken = leases.take_over_predecessor(session, owner=self.owner, lease=self.lease)
        self.on_takeover(taken)
        if taken:
            log.info("resuming %d operation(s) left by this replica's previous process", taken)
        return taken

    def step(self) -> float:
        """One round: chores, expiries, run timers, claims; calls for new operations, recovery of interrupted ones,
        one poll."""
        for chore in self.chores:
            try:
                chore()
            except Exception:
                log.exception("an engine chore failed; retrying on the next step")
        with self.db.session() as session:
            repository.expire_due(session)
        self.timers.remind()
        # Due stops ask Zenlayer first: on a worker of their own, so a slow answer never holds this loop up.
        self.jobs.submit(TIMERS_KEY, self._stop_due)
        due_in = self.timers.next_due_in()
        with self.db.session() as session:
            taken_over = leases.count_lapsed_foreign(session, owner=self.owner, lease=self.lease)
            claimed = leases.claim_work(session, owner=self.owner, lease=self.lease)
        self.on_takeover(taken_over)
        idle = self.jobs.idle(claimed)
        approved = self.journal.jobs(idle, State.APPROVED)
        for job in approved:
            if job.actor != SYSTEM_ACTOR:  # people's operations call apart: one slow call never holds another's
                self.jobs.submit(job.operation_id, self._call, [job])
        for _, jobs in groupby(sorted((j for j in approved if j.actor == SYSTEM_ACTOR), key=_action), key=_action):
            batch = list(jobs)  # vm-bot's own (auto-stops falling due together) share calls: ⌈N/100⌉ of them
            self.jobs.submit_many([j.operation_id for j in batch], self._call, batch)
        # Idle again: an operation handed to the pool just above is starting, and not for recovery.
        for job in self.journal.jobs(self.jobs.idle(idle), State.STARTING):
            self.jobs.submit(job.operation_id, self._recover, job)
        self._poll(self.jobs.idle(idle))
        # The next timer may fall due before the next poll: wake up for it (a stop is due on time, not a poll late).
        return self.poll_interval if due_in is None else max(0.05, min(self.poll_interval, due_in))

    def _ticked(self, seconds: float) -> None:
        """Tell the observer a step finished."""
        self.on_tick(seconds)

    def _renew(self) -> float:
        """Heartbeat: renew every lease this process holds, a few times per lease, and read how far this replica's
        clock is from the database's (which keeps every deadline) while at it."""
        with self.db.session() as session:
            leases.renew_all(session, owner=self.owner, lease=self.lease)
            offset = replica_offset(session)
        self.clock.observe(offset)
        self.on_clock_offset(offset)
        return self.lease.heartbeat_seconds

    def _call(self, jobs: list[Job]) -> None:
        """Make approved operations' calls (at most once per instance, shared where they are several), then watch
        them."""
        moved = set(self.journal.begin([job.operation_id for job in jobs]))
        begun = [job for job in jobs if job.operation_id in moved]
        if begun:
            self.caller.call_all(begun)
            self.wake()

    def _stop_due(self) -> None:
        """Make the stop operations of runs whose time is up; step again at once to call for them."""
        if self.timers.stop_due():
            self.wake()

    def _recover(self, job: Job) -> None:
        """An operation left starting by a crash: settle its open calls as unknown, make the calls never made."""
        self.journal.settle_interrupted(job)
        self.caller.call_all([job])
        self.wake()

    def _poll(self, operation_ids: Sequence[int]) -> None:
        """Poll every watched operation at once and write what changed in one transaction; repeat unconfirmed calls."""
        watched = self.journal.watched(operation_ids)
        if not watched:
            return
        plans = self.poller.poll(watched)
        mine = self.journal.apply(plans, self.poller.addresses([p for p in plans if not p.empty]))
        by_id = {w.operation_id: w for w in watched}
        for plan in plans:
            if plan.retry and plan.ending is None and plan.operation_id in mine:
                self.jobs.submit(plan.operation_id, self._retry, by_id[plan.operation_id].job(plan.retry))

    def _retry(self, job: Job) -> None:
        """Call once more for instances a call of unknown outcome did not change."""
        try:
            self.caller.call(job, job.targets, reconciling=True)
        except LeaseLost:
            log.warning("operation %s: lease lost, or called for by another job; not calling again", job.operation_id)
