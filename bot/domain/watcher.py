"""The background worker: starts approved requests, polls their instances and reports, all from the database."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import selectinload

from bot.db.models import InstanceClaim, RequestInstance, StartAttempt, StartRequest, utcnow
from bot.db.session import Database
from bot.domain import audit, lifecycle, outbox
from bot.domain.lifecycle import State
from bot.domain.ports import VmApi
from bot.domain.vm_errors import OutcomeUnknown, StateRefused, VmError
from bot.domain.vocabulary import SYSTEM_ACTOR, Outcome

log = logging.getLogger(__name__)

RUNNING = "RUNNING"
STOPPED = "STOPPED"
# Statuses from which an instance will not reach RUNNING by itself; anything unknown counts as still changing.
OFF_PATH_STATUSES = frozenset({"CREATE_FAILED", "RELEASING", "RECYCLE", "RECYCLING", "STOPPING"})
START_BATCH = 100
STATUS_LENGTH = RequestInstance.__table__.c.last_status.type.length  # type: ignore[attr-defined]
# Kubernetes' leader election uses a 15 s lease renewed every 10 s (here: every third of it, by a heartbeat).
DEFAULT_LEASE_SECONDS = 15.0
# After a StartInstances whose outcome is unknown, an instance still STOPPED this many polls later was not started.
CONFIRM_POLLS = 3
# An instance is declared gone only after this many consecutive polls that did not return it.
MISSING_POLLS = 3
# The first call, and one more after it was shown not to have taken effect; Zenlayer never starts a
# non-STOPPED instance, so the second can only be accepted if the first was not.
MAX_START_CALLS = 2
# One accepted start, shown by the instance leaving STOPPED.
ACCEPTED, UNKNOWN = "accepted", "unknown"


@dataclass(frozen=True)
class InstanceUpdate:
    """What one poll learned about one instance of a request."""

    row_id: int
    status: str | None
    outcome: Outcome | None
    changed: bool
    instance_id: str = ""


class Watcher:
    """Moves requests from approved to a final state; safe to run in several replicas thanks to leases.

    `owner` names this process in leases; `replica` is its stable identity (the owner is `replica/nonce`), so
    a restarted replica takes over its predecessor's leases at once. With `workers`, each request's start and
    reconciliation run on a bounded pool so one slow request never delays another; without, inline. It never
    talks to Slack: what users must be told is written to the outbox with each change, for the sender.
    """

    def __init__(
        self,
        db: Database,
        vm: VmApi,
        *,
        poll_interval_seconds: float,
        start_timeout_seconds: float,
        owner: str,
        replica: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        workers: int = 0,
        chores: Sequence[Callable[[], object]] = (),
        clock: Callable[[], datetime] = utcnow,
    ):
        self.db = db
        self.vm = vm
        self.poll_interval = poll_interval_seconds
        self.start_timeout = timedelta(seconds=start_timeout_seconds)
        self.owner = owner
        self.replica = replica
        self.lease = timedelta(seconds=lease_seconds)
        self.chores = list(chores)  # run first in every tick, e.g. deciding clicks a crashed process left
        self.clock = clock
        self._wake = threading.Event()
        # Observers for metrics and readiness (set by app.py): a finished tick's duration, leases taken over.
        self.on_tick: Callable[[float], None] = _ignore
        self.on_takeover: Callable[[int], None] = _ignore
        self._pool: Executor | None = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vm-bot-work") if workers else None
        )
        self._busy: set[int] = set()
        self._busy_lock = threading.Lock()

    def wake(self) -> None:
        """Ask for a tick now, e.g. right after a confirmation was approved."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Tick every poll interval (or when woken) until stop is set; a failing tick is logged and retried."""
        log.info("watcher %s started (poll every %ss, lease %ss)", self.owner, self.poll_interval, self.lease.seconds)
        try:
            self.take_over_predecessor()
        except Exception:
            log.exception("could not take over the leases of this replica's previous process; they lapse anyway")
        heartbeat = threading.Thread(target=self._heartbeat, args=(stop,), name="lease-heartbeat", daemon=True)
        heartbeat.start()
        while not stop.is_set():
            try:
                started = time.monotonic()
                self.tick()
                self.on_tick(time.monotonic() - started)
            except Exception:
                log.exception("watcher tick failed; retrying on the next tick")
            self._wake.wait(self.poll_interval)
            self._wake.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        heartbeat.join(timeout=5)
        try:
            # Hand unfinished requests over at once instead of making the next process wait out the lease.
            with self.db.session() as session:
                lifecycle.release_leases(session, owner=self.owner)
        except Exception:
            log.exception("could not release leases; they lapse by themselves")
        log.info("watcher %s stopped", self.owner)

    def take_over_predecessor(self) -> int:
        """Take the leases an earlier process of this replica left behind; return how many."""
        if self.replica is None:
            return 0
        with self.db.session() as session:
            taken = lifecycle.take_over_predecessor(
                session,
                replica=self.replica,
                owner=self.owner,
                now=self.clock(),
                lease_seconds=self.lease.total_seconds(),
            )
        self.on_takeover(taken)
        if taken:
            log.info("resuming %d request(s) left by this replica's previous process", taken)
        return taken

    def _heartbeat(self, stop: threading.Event) -> None:
        """Renew every lease this process holds, a few times per lease, however slow the work under it is."""
        interval = self.lease.total_seconds() / 3
        while not stop.wait(interval):
            try:
                with self.db.session() as session:
                    lifecycle.renew_leases(
                        session, owner=self.owner, now=self.clock(), lease_seconds=self.lease.total_seconds()
                    )
            except Exception:
                log.exception("lease heartbeat failed; retrying")

    def tick(self) -> None:
        """Do one round: expire stale confirmations, start approved requests, poll watched ones, report ends."""
        for chore in self.chores:
            try:
                chore()
            except Exception:
                log.exception("a watcher chore failed; retrying on the next tick")
        now = self.clock()
        with self.db.session() as session:
            lifecycle.expire_due(session, now=now)
        with self.db.session() as session:
            taken_over = lifecycle.count_lapsed_foreign_leases(session, owner=self.owner, now=now)
            claimed = lifecycle.claim_work(session, owner=self.owner, now=now, lease_seconds=self.lease.total_seconds())
        self.on_takeover(taken_over)
        for request in self._load_many(self._idle(claimed), [State.APPROVED, State.STARTING]):
            work = self._start if request.state == State.APPROVED else self._recover_start
            self._submit(request.id, work, request)
        self._poll(self._idle(claimed))
        self._report_finished(self._idle(claimed))

    # --- running work per request -----------------------------------------------------------------------

    def _idle(self, request_ids: Iterable[int]) -> list[int]:
        """Return the ids with no job of ours in flight."""
        with self._busy_lock:
            return [i for i in request_ids if i not in self._busy]

    def _submit(self, request_id: int, work: Callable[..., None], *args: Any) -> None:
        """Run work for one request on the pool (inline without one); never two jobs for one request at once."""
        with self._busy_lock:
            if request_id in self._busy:
                return
            self._busy.add(request_id)

        def job() -> None:
            try:
                work(*args)
            except Exception:
                # One request's trouble must not hold up the others; it is retried on the next tick.
                log.exception("work on request %s failed; will retry", request_id)
            finally:
                with self._busy_lock:
                    self._busy.discard(request_id)

        if self._pool is None:
            job()
        else:
            try:
                self._pool.submit(job)
            except RuntimeError:  # shutting down
                with self._busy_lock:
                    self._busy.discard(request_id)

    def _load_many(self, request_ids: Sequence[int], states: Iterable[State]) -> list[StartRequest]:
        """Load the requests among request_ids that are in states and leased to us, with their instances."""
        if not request_ids:
            return []
        with self.db.session(readonly=True) as session:
            return list(
                session.scalars(
                    select(StartRequest)
                    .where(
                        StartRequest.id.in_(list(request_ids)),
                        StartRequest.state.in_([s.value for s in states]),
                        StartRequest.lease_owner == self.owner,
                    )
                    .options(selectinload(StartRequest.instances))
                    .order_by(StartRequest.id)
                )
            )

    # --- starting ---------------------------------------------------------------------------------------

    def _start(self, request: StartRequest) -> None:
        """Call StartInstances for an approved request, at most once per instance, then watch it."""
        with self.db.session() as session:
            if not lifecycle.transition(
                session, request.id, from_states=[State.APPROVED], to=State.STARTING, now=self.clock()
            ):
                return
        self._start_remaining(request.id)

    def _recover_start(self, request: StartRequest) -> None:
        """A request left in `starting` by a crash: settle its open calls as unknown, start what was never called."""
        now = self.clock()
        with self.db.session() as session:
            open_attempts = list(
                session.scalars(
                    select(StartAttempt).where(
                        StartAttempt.request_id == request.id, StartAttempt.completed_at.is_(None)
                    )
                )
            )
            for attempt in open_attempts:
                attempt.completed_at = now
                attempt.outcome = UNKNOWN
                attempt.error = "the process making this call stopped before it returned"
                audit.record(
                    session,
                    "zenlayer_start_instances",
                    actor=request.decided_by or request.requester_id,
                    request_id=request.id,
                    instance_ids=json.loads(attempt.instance_ids),
                    outcome=UNKNOWN,
                    error=attempt.error,
                    replica=attempt.replica,
                )
            audit.record(
                session,
                "start_interrupted",
                actor=SYSTEM_ACTOR,
                request_id=request.id,
                open_calls=len(open_attempts),
                resumed_by=self.owner,
            )
        self._start_remaining(request.id)

    def _start_remaining(self, request_id: int) -> None:
        """Start the instances of a `starting` request no call has named yet, then move it to watching."""
        request = self._load(request_id)
        to_start = [i for i in request.instances if i.to_start and i.outcome is None and i.start_calls == 0]
        errors: list[str] = []
        for offset in range(0, len(to_start), START_BATCH):
            if not self._renew_lease(request.id):
                log.warning("lost the lease on request %s while starting it; another replica took over", request.id)
                return
            batch = to_start[offset : offset + START_BATCH]
            errors.extend(self._start_batch(request, batch))
        with self.db.session() as session:
            remaining = session.scalar(
                select(RequestInstance.id).where(
                    RequestInstance.request_id == request.id,
                    RequestInstance.to_start.is_(True),
                    RequestInstance.outcome.is_(None),
                )
            )
            now = self.clock()
            error = "; ".join(errors) or None
            if remaining is None:
                lifecycle.transition(
                    session,
                    request.id,
                    from_states=[State.STARTING],
                    to=State.FAILED,
                    now=now,
                    error=error,
                    finished_at=now,
                )
            else:
                lifecycle.transition(
                    session,
                    request.id,
                    from_states=[State.STARTING],
                    to=State.WATCHING,
                    now=now,
                    started_at=request.started_at or now,
                    watch_deadline=now + self.start_timeout,
                    error=error,
                )
        self.wake()

    def _start_batch(
        self, request: StartRequest, batch: Sequence[RequestInstance], retried: bool = False, reconciling: bool = False
    ) -> list[str]:
        """Start one batch, its intent recorded first; a refusal re-checks and starts the ones still STOPPED once."""
        ids = [i.instance_id for i in batch]
        attempt_id = self._begin_attempt(request, batch)
        try:
            zenlayer_request_id = self.vm.start_instances(ids)
        except StateRefused as exc:
            if reconciling:
                # Left STOPPED since, or started late by the first call: the next polls tell which.
                self._complete_attempt(request, attempt_id, ids, "refused", exc)
                return [f"StartInstances refused: {exc.describe()}"]
            self._complete_attempt(request, attempt_id, ids, "refused", exc, start_result=None)
            if retried:
                self._set_outcome(request, batch, Outcome.FAILED, exc.describe())
                return [f"StartInstances refused: {exc.describe()}"]
            return self._restart_after_state_change(request, batch, exc)
        except OutcomeUnknown as exc:
            # The call may have been accepted: the instances' status decides (see _reconcile_unknown).
            self._complete_attempt(request, attempt_id, ids, UNKNOWN, exc)
            return [f"StartInstances outcome unknown, checking the instances' status: {exc.describe()}"]
        except VmError as exc:
            self._complete_attempt(request, attempt_id, ids, "failed", exc, start_result=None)
            self._set_outcome(request, batch, Outcome.FAILED, exc.describe())
            return [f"StartInstances failed: {exc.describe()}"]
        self._complete_attempt(request, attempt_id, ids, ACCEPTED, None, zenlayer_request_id, start_result=ACCEPTED)
        return []

    def _restart_after_state_change(
        self, request: StartRequest, batch: Sequence[RequestInstance], refusal: StateRefused
    ) -> list[str]:
        """After an all-or-nothing refusal, skip the ids that changed state and start the ones still STOPPED."""
        try:
            statuses = self.vm.describe_instances_status([i.instance_id for i in batch])
        except VmError as exc:
            self._set_outcome(request, batch, Outcome.FAILED, exc.describe())
            return [f"StartInstances refused ({refusal.describe()}) and the re-check failed: {exc.describe()}"]
        still_stopped = [i for i in batch if statuses.get(i.instance_id) == STOPPED]
        for instance in batch:
            if instance not in still_stopped:
                status = statuses.get(instance.instance_id)
                self._set_outcome(
                    request,
                    [instance],
                    Outcome.SKIPPED,
                    "no longer exists" if status is None else f"was {status} when starting",
                )
        refused = [f"StartInstances refused: {refusal.describe()}"]
        if not still_stopped:
            return refused
        return refused + self._start_batch(request, still_stopped, retried=True)

    def _begin_attempt(self, request: StartRequest, batch: Sequence[RequestInstance]) -> int:
        """Record a StartInstances call before making it: an open attempt, and its instances' outcome unknown."""
        with self.db.session() as session:
            attempt = StartAttempt(
                request_id=request.id,
                instance_ids=json.dumps([i.instance_id for i in batch]),
                replica=self.owner,
                created_at=self.clock(),
            )
            session.add(attempt)
            session.execute(
                update(RequestInstance)
                .where(RequestInstance.id.in_([i.id for i in batch]))
                .values(
                    start_calls=RequestInstance.start_calls + 1,
                    start_result=UNKNOWN,
                    stopped_polls=0,
                )
                .execution_options(synchronize_session=False)
            )
            session.flush()
            return attempt.id

    def _complete_attempt(
        self,
        request: StartRequest,
        attempt_id: int,
        ids: Sequence[str],
        outcome: str,
        error: VmError | None,
        zenlayer_request_id: str | None = None,
        *,
        start_result: str | None = UNKNOWN,
    ) -> None:
        """Complete a StartInstances attempt with its outcome and requestId, and audit the call."""
        zenlayer_request_id = zenlayer_request_id or (error.request_id if error else None)
        with self.db.session() as session:
            session.execute(
                update(StartAttempt)
                .where(StartAttempt.id == attempt_id)
                .values(
                    completed_at=self.clock(),
                    outcome=outcome,
                    zenlayer_request_id=zenlayer_request_id,
                    error=None if error is None else error.describe(),
                )
                .execution_options(synchronize_session=False)
            )
            values: dict[str, Any] = {"start_result": start_result}
            if zenlayer_request_id is not None and outcome == ACCEPTED:
                values["zenlayer_request_id"] = zenlayer_request_id
            session.execute(
                update(RequestInstance)
                .where(RequestInstance.request_id == request.id, RequestInstance.instance_id.in_(list(ids)))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            audit.record(
                session,
                "zenlayer_start_instances",
                actor=request.decided_by or request.requester_id,
                request_id=request.id,
                zenlayer_request_id=zenlayer_request_id,
                instance_ids=list(ids),
                outcome=outcome if outcome != ACCEPTED or error is not None else "accepted",
                error=None if error is None else error.describe(),
                replica=self.owner,
            )

    # --- polling ----------------------------------------------------------------------------------------

    def _poll(self, request_ids: Sequence[int]) -> None:
        """Ask Zenlayer about every watched instance in as few calls as possible, then update each request apart."""
        watching = self._watched_rows(request_ids)
        if not watching:
            return
        watched = sorted(
            {i.instance_id for rows in watching.values() for i in rows if i.to_start and i.outcome is None}
        )
        statuses: dict[str, str] | None = None
        poll_error = None
        if watched:
            try:
                statuses = self.vm.describe_instances_status(watched)
            except VmError as exc:
                log.warning("polling %d instances failed: %s", len(watched), exc.describe())
                poll_error = exc.describe()
        now = self.clock()
        # A quiet poll would write, post and finish nothing (claim_work renewed the lease): no load and no job for it.
        busy = [r for r, rows in watching.items() if statuses is None or not _poll_is_quiet(rows, statuses, now)]
        # Requests whose poll needs no reconciliation (every open instance returned, its start accepted, nothing
        # missing, time not up) are applied together here: one write transaction for all. The rest get a job each.
        plain: list[StartRequest] = []
        for request in self._load_many(self._idle(busy), [State.WATCHING]):
            if statuses is None:
                self._submit(request.id, self._finish_if_settled, request, poll_error)
            elif _is_plain(request, statuses, now):
                plain.append(request)
            else:
                self._submit(request.id, self._apply_poll, request, statuses)
        if plain:
            self._apply_polls(plain, statuses or {}, now)

    def _apply_polls(self, requests: Sequence[StartRequest], statuses: dict[str, str], now: datetime) -> None:
        """Apply one poll to many requests in one transaction: statuses, claims, what Slack is owed, and the
        requests it settles; the lease check is folded into it (only requests still leased to us are written)."""
        updates: dict[int, list[InstanceUpdate]] = {}
        for request in requests:
            seen = [
                _classify(i, statuses[i.instance_id]) for i in request.instances if i.to_start and i.outcome is None
            ]
            changed = [u for u in seen if u.changed or u.outcome is not None]
            if changed:
                updates[request.id] = changed
        if not updates:
            return
        addresses = self._addresses([u.instance_id for us in updates.values() for u in us if u.status == RUNNING])
        with self.db.session() as session:
            mine = set(
                session.scalars(
                    update(StartRequest)
                    .where(
                        StartRequest.id.in_(list(updates)),
                        StartRequest.lease_owner == self.owner,
                        StartRequest.state == State.WATCHING.value,
                    )
                    .values(lease_until=now + self.lease)
                    .returning(StartRequest.id)
                    .execution_options(synchronize_session=False)
                )
            )
            changed = [u for request_id in mine for u in updates[request_id]]
            for located in (False, True):
                rows = [
                    {"id": u.row_id, "last_status": u.status, "outcome": u.outcome, "status_changed_at": now}
                    | ({"ip_address": addresses[u.instance_id]} if located else {})
                    for u in changed
                    if (u.instance_id in addresses) == located
                ]
                if rows:
                    session.execute(update(RequestInstance).execution_options(synchronize_session=False), rows)
            ended = [u.instance_id for u in changed if u.outcome is not None]
            if ended:
                session.execute(
                    delete(InstanceClaim)
                    .where(InstanceClaim.request_id.in_(list(mine)), InstanceClaim.instance_id.in_(ended))
                    .execution_options(synchronize_session=False)
                )
            finals: dict[State, list[int]] = {State.DONE: [], State.FAILED: []}
            moving: list[int] = []
            for request in requests:
                if request.id not in mine:
                    continue
                outcome = {u.row_id: u.outcome for u in updates[request.id] if u.outcome is not None}
                started = [outcome.get(i.id, i.outcome) for i in request.instances if i.to_start]
                if all(o is not None for o in started):
                    finals[
                        State.DONE if started and all(o == Outcome.RUNNING for o in started) else State.FAILED
                    ].append(request.id)
                elif any(u.changed for u in updates[request.id]):
                    moving.append(request.id)
            # The reply that settles a request is the final one; a separate progress reply would only repeat it.
            outbox.enqueue_many(session, moving, [outbox.Kind.PROGRESS, outbox.Kind.REFRESH], now=now)
            for final, request_ids in finals.items():
                lifecycle.transition_many(session, request_ids, from_state=State.WATCHING, to=final, now=now)

    def _watched_rows(self, request_ids: Sequence[int]) -> dict[int, list[Any]]:
        """Read the instance rows of the watching requests among request_ids leased to us, as plain rows by request."""
        if not request_ids:
            return {}
        r, i = StartRequest, RequestInstance
        query = (
            select(
                r.id.label("request_id"),
                r.watch_deadline,
                i.id,
                i.instance_id,
                i.to_start,
                i.outcome,
                i.skip_reason,
                i.last_status,
                i.reported_status,
                i.missing_polls,
                i.start_result,
            )
            .select_from(r)
            .outerjoin(i, i.request_id == r.id)  # a request without rows still gets its job, as before
            .where(
                r.id.in_(list(request_ids)),
                r.state == State.WATCHING.value,
                r.lease_owner == self.owner,
            )
            .order_by(r.id, i.id)
        )
        by_request: dict[int, list[Any]] = {}
        with self.db.session(readonly=True) as session:
            for row in session.execute(query):
                by_request.setdefault(row.request_id, []).append(row)
        return by_request

    def _apply_poll(self, request: StartRequest, statuses: dict[str, str]) -> None:
        """Record one poll's statuses for a request, tell its thread what changed, and finish it if settled."""
        if not self._renew_lease(request.id):
            return
        now = self.clock()
        retry = self._reconcile(request, statuses, now)
        if retry:
            if not self._renew_lease(request.id):
                return
            self._start_batch(request, retry, reconciling=True)
        updates = [
            _classify(i, statuses[i.instance_id])
            for i in request.instances
            if i.to_start and i.outcome is None and i.instance_id in statuses and i.start_result == ACCEPTED
        ]
        changed = [u for u in updates if u.changed or u.outcome is not None]
        if changed:
            addresses = self._addresses([u.instance_id for u in changed if u.status == RUNNING])
            ended_rows = {u.row_id for u in changed if u.outcome is not None}
            open_rows = {i.id for i in request.instances if i.to_start and i.outcome is None}
            # The reply that settles a request is the final one; a separate progress reply would only repeat it.
            settles = open_rows <= ended_rows
            with self.db.session() as session:
                # One executemany by primary key instead of an UPDATE statement per row (rows that learnt their
                # address in a second one: an executemany needs the same columns in every row).
                rows = [
                    {"id": u.row_id, "last_status": u.status, "outcome": u.outcome, "status_changed_at": now}
                    for u in changed
                    if u.instance_id not in addresses
                ]
                located = [
                    {
                        "id": u.row_id,
                        "last_status": u.status,
                        "outcome": u.outcome,
                        "status_changed_at": now,
                        "ip_address": addresses[u.instance_id],
                    }
                    for u in changed
                    if u.instance_id in addresses
                ]
                for batch in (rows, located):
                    if batch:
                        session.execute(update(RequestInstance).execution_options(synchronize_session=False), batch)
                ended = [i.instance_id for i in request.instances if i.id in ended_rows]
                if ended:
                    lifecycle.release_claims(session, request.id, ended)
                if any(u.changed for u in changed):
                    told = [outbox.Kind.REFRESH] if settles else [outbox.Kind.PROGRESS, outbox.Kind.REFRESH]
                    outbox.enqueue(session, request.id, told, now=now)
        if changed or retry:
            request = self._load(request.id)
        settled = all(i.outcome is not None for i in request.instances if i.to_start)
        if settled or (request.watch_deadline is not None and now >= request.watch_deadline):
            self._finish_if_settled(request, poll_error=None)

    def _reconcile(self, request: StartRequest, statuses: dict[str, str], now: datetime) -> list[RequestInstance]:
        """Confirm absences and unknown starts from the statuses; return the instances to start once more.

        An instance missing from one poll is declared gone only after MISSING_POLLS in a row. After a
        StartInstances whose outcome is unknown, leaving STOPPED shows it was applied; still STOPPED for
        CONFIRM_POLLS polls shows it was not, and it is started again once (or failed, after the second call).
        """
        retry: list[RequestInstance] = []
        gone: list[str] = []
        writes: list[tuple[int, dict[str, Any]]] = []
        for i in request.instances:
            if not i.to_start or i.outcome is not None:
                continue
            status = statuses.get(i.instance_id)
            values: dict[str, Any] = {}
            if status is None:
                values["missing_polls"] = i.missing_polls + 1
                if values["missing_polls"] >= MISSING_POLLS:
                    values.update(outcome=Outcome.FAILED, last_status=None, status_changed_at=now)
                    gone.append(i.instance_id)
            elif i.missing_polls:
                values["missing_polls"] = 0
            if status is not None and i.start_result != ACCEPTED:
                if status != STOPPED:
                    values["start_result"] = ACCEPTED  # it left STOPPED: a start was applied
                    i.start_result = ACCEPTED
                elif i.stopped_polls + 1 < CONFIRM_POLLS:
                    values["stopped_polls"] = i.stopped_polls + 1
                elif i.start_calls < MAX_START_CALLS:
                    retry.append(i)
                else:
                    values.update(outcome=Outcome.FAILED, skip_reason="StartInstances did not take effect")
                    gone.append(i.instance_id)
            if values:
                writes.append((i.id, values))
        if writes:  # most polls change nothing here: no write transaction for them
            with self.db.session() as session:
                for row_id, values in writes:
                    session.execute(
                        update(RequestInstance)
                        .where(RequestInstance.id == row_id)
                        .values(**values)
                        .execution_options(synchronize_session=False)
                    )
                if gone:
                    lifecycle.release_claims(session, request.id, gone)
                    outbox.enqueue(session, request.id, [outbox.Kind.PROGRESS, outbox.Kind.REFRESH], now=now)
        for i in request.instances:
            if i.instance_id in gone:
                i.outcome = Outcome.FAILED
        return retry

    def _addresses(self, ids: Sequence[str]) -> dict[str, str]:
        """Return the address to connect to of instances that just came up; best effort (the thread can do without)."""
        if not ids:
            return {}
        try:
            found = self.vm.describe_instances(ids)
        except VmError as exc:
            log.warning("could not look up the addresses of %d running instances: %s", len(ids), exc.describe())
            return {}
        return {i: info.ip for i, info in found.items() if info.ip}

    def _finish_if_settled(self, request: StartRequest, poll_error: str | None) -> None:
        """Move a watched request to done / failed / timed_out once every instance has an outcome or time is up."""
        now = self.clock()
        open_instances = [i for i in request.instances if i.to_start and i.outcome is None]
        with self.db.session() as session:
            if not open_instances:
                started = [i for i in request.instances if i.to_start]
                all_running = bool(started) and all(i.outcome == Outcome.RUNNING for i in started)
                final = State.DONE if all_running else State.FAILED
                lifecycle.transition(
                    session, request.id, from_states=[State.WATCHING], to=final, now=now, finished_at=now
                )
                return
            if request.watch_deadline is not None and now >= request.watch_deadline:
                session.execute(
                    update(RequestInstance)
                    .where(RequestInstance.id.in_([i.id for i in open_instances]))
                    .values(outcome=Outcome.TIMED_OUT)
                    .execution_options(synchronize_session=False)
                )
                values: dict[str, Any] = {"error": poll_error} if poll_error else {}
                lifecycle.transition(
                    session,
                    request.id,
                    from_states=[State.WATCHING],
                    to=State.TIMED_OUT,
                    now=now,
                    finished_at=now,
                    **values,
                )

    # --- final reports ----------------------------------------------------------------------------------

    def _report_finished(self, request_ids: Sequence[int]) -> None:
        """Make sure every claimed request that ended untold has its final reply in the outbox.

        Ends are enqueued with their state change; this catches requests that ended before the outbox existed.
        """
        if not request_ids:
            return
        with self.db.session(readonly=True) as session:
            untold = outbox.untold_finals(session, request_ids)
        if untold:
            with self.db.session() as session:
                for request_id in untold:
                    outbox.enqueue(session, request_id, outbox.Kind.FINAL, now=self.clock())

    # --- helpers ----------------------------------------------------------------------------------------

    def _renew_lease(self, request_id: int) -> bool:
        """Extend our lease on a request before slow or visible work; False when another replica holds it."""
        with self.db.session() as session:
            result = session.execute(
                update(StartRequest)
                .where(StartRequest.id == request_id, StartRequest.lease_owner == self.owner)
                .values(lease_until=self.clock() + self.lease)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def _load(self, request_id: int) -> StartRequest:
        """Load a request with its instances, fresh from the database."""
        with self.db.session() as session:
            request = lifecycle.get_request(session, request_id)
            assert request is not None
            return request

    def _set_outcome(
        self, request: StartRequest, instances: Iterable[RequestInstance], outcome: Outcome, reason: str
    ) -> None:
        """Record a final outcome for instances that will not be watched, and let go of their claims."""
        instances = list(instances)
        with self.db.session() as session:
            session.execute(
                update(RequestInstance)
                .where(RequestInstance.id.in_([i.id for i in instances]))
                .values(outcome=outcome, skip_reason=reason[:255])
                .execution_options(synchronize_session=False)
            )
            lifecycle.release_claims(session, request.id, [i.instance_id for i in instances])


def _ignore(value: float) -> None:
    """Observe nothing (the default observer)."""


def _is_plain(request: StartRequest, statuses: dict[str, str], now: datetime) -> bool:
    """Tell whether a poll applies to a request without reconciliation: every open instance returned with its start
    accepted and none missing before, and its time not up (else _apply_poll and _finish_if_settled decide)."""
    if request.watch_deadline is not None and now >= request.watch_deadline:
        return False
    return all(
        i.instance_id in statuses and i.start_result == ACCEPTED and not i.missing_polls
        for i in request.instances
        if i.to_start and i.outcome is None
    )


def _poll_is_quiet(rows: Sequence[Any], statuses: dict[str, str], now: datetime) -> bool:
    """Tell whether applying this poll to one watched request's instance rows would change, post or finish nothing."""
    deadline = rows[0].watch_deadline if rows else None
    if deadline is not None and now >= deadline:
        return False
    open_instances = 0
    for i in rows:
        if not i.to_start:
            continue
        if i.outcome is not None:
            continue
        open_instances += 1
        status = statuses.get(i.instance_id)
        if status is None or i.missing_polls or i.start_result != ACCEPTED:
            return False
        seen = _classify(i, status)
        if seen.changed or seen.outcome is not None:
            return False
    return open_instances > 0


def _classify(instance: RequestInstance, status: str | None) -> InstanceUpdate:
    """Decide what a freshly polled status means for one instance being started."""
    if status is not None:
        status = status[:STATUS_LENGTH]  # unknown statuses are shown verbatim, but must fit the column
    changed = status != instance.last_status
    if status is None:
        return InstanceUpdate(instance.id, None, Outcome.FAILED, changed, instance.instance_id)
    if status == RUNNING:
        return InstanceUpdate(instance.id, status, Outcome.RUNNING, changed, instance.instance_id)
    if status in OFF_PATH_STATUSES:
        return InstanceUpdate(instance.id, status, Outcome.FAILED, changed, instance.instance_id)
    if status == STOPPED and instance.last_status not in (None, STOPPED):
        # it booted, then stopped again
        return InstanceUpdate(instance.id, status, Outcome.FAILED, changed, instance.instance_id)
    return InstanceUpdate(instance.id, status, None, changed, instance.instance_id)
