"""The background worker: starts approved requests, polls their instances and reports, all from the database."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import selectinload

from bot.db.models import RequestInstance, StartRequest, utcnow
from bot.db.session import Database
from bot.domain import audit, lifecycle
from bot.domain.lifecycle import State
from bot.domain.ports import Notifier, StatusChange, VmApi
from bot.domain.vm_errors import OutcomeUnknown, StartRefused, VmError
from bot.domain.vocabulary import SYSTEM_ACTOR, Outcome

log = logging.getLogger(__name__)

RUNNING = "RUNNING"
STOPPED = "STOPPED"
# Statuses from which an instance will not reach RUNNING by itself; anything unknown counts as still changing.
OFF_PATH_STATUSES = frozenset({"CREATE_FAILED", "RELEASING", "RECYCLE", "RECYCLING", "STOPPING"})
START_BATCH = 100
STATUS_LENGTH = RequestInstance.__table__.c.last_status.type.length  # type: ignore[attr-defined]
WORK_STATES = (State.APPROVED, State.STARTING, State.WATCHING)
REPORTED_FINAL_STATES = (State.DONE, State.FAILED, State.TIMED_OUT, State.EXPIRED)


@dataclass(frozen=True)
class InstanceUpdate:
    """What one poll learned about one instance of a request."""

    row_id: int
    status: str | None
    outcome: Outcome | None
    changed: bool
    instance_id: str = ""


class Watcher:
    """Moves requests from approved to a final state; safe to run in several replicas thanks to leases."""

    def __init__(
        self,
        db: Database,
        vm: VmApi,
        notifier: Notifier,
        *,
        poll_interval_seconds: float,
        start_timeout_seconds: float,
        owner: str,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.db = db
        self.vm = vm
        self.notifier = notifier
        self.poll_interval = poll_interval_seconds
        self.start_timeout = timedelta(seconds=start_timeout_seconds)
        self.owner = owner
        # Renewed before every StartInstances batch and every post, so it need only outlast one slow call
        # (a 10 s timeout, plus throttling retries honouring Retry-After).
        self.lease = timedelta(seconds=max(120.0, 6 * poll_interval_seconds))
        self.clock = clock
        self._wake = threading.Event()

    def wake(self) -> None:
        """Ask for a tick now, e.g. right after a confirmation was approved."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Tick every poll interval (or when woken) until stop is set; a failing tick is logged and retried."""
        log.info("watcher %s started (poll every %ss)", self.owner, self.poll_interval)
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("watcher tick failed; retrying on the next tick")
            self._wake.wait(self.poll_interval)
            self._wake.clear()
        try:
            # Hand unfinished requests over at once instead of making the next process wait out the lease.
            with self.db.session() as session:
                lifecycle.release_leases(session, owner=self.owner)
        except Exception:
            log.exception("could not release leases; they lapse by themselves")
        log.info("watcher %s stopped", self.owner)

    def tick(self) -> None:
        """Do one round: expire stale confirmations, start approved requests, poll watched ones, report ends."""
        now = self.clock()
        with self.db.session() as session:
            lifecycle.expire_due(session, now=now)
        requests = self._claim(now)
        for request in requests:
            try:
                if request.state == State.APPROVED:
                    self._start(request)
                elif request.state == State.STARTING:
                    self._adopt_interrupted_start(request)
            except Exception:
                # One request's trouble must not hold up the others; it is retried on the next tick.
                log.exception("could not start request %s; will retry", request.id)
        self._poll([r.id for r in requests if r.state in (State.APPROVED, State.STARTING, State.WATCHING)])
        self._report_finished()

    # --- claiming ---------------------------------------------------------------------------------------

    def _claim(self, now: datetime) -> list[StartRequest]:
        """Take a lease on every request that needs work and no other live replica holds."""
        needs_work = or_(
            StartRequest.state.in_([s.value for s in WORK_STATES]),
            and_(
                StartRequest.state.in_([s.value for s in REPORTED_FINAL_STATES]),
                StartRequest.outcome_posted_at.is_(None),
            ),
        )
        free = or_(
            StartRequest.lease_until.is_(None),
            StartRequest.lease_until < now,
            StartRequest.lease_owner == self.owner,
        )
        with self.db.session() as session:
            session.execute(
                update(StartRequest)
                .where(needs_work, free)
                .values(lease_owner=self.owner, lease_until=now + self.lease)
                .execution_options(synchronize_session=False)
            )
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(StartRequest)
                    .where(needs_work, StartRequest.lease_owner == self.owner)
                    .options(selectinload(StartRequest.instances))
                    .order_by(StartRequest.id)
                )
            )

    # --- starting ---------------------------------------------------------------------------------------

    def _start(self, request: StartRequest) -> None:
        """Call StartInstances for an approved request, at most once per instance, then watch it."""
        now = self.clock()
        with self.db.session() as session:
            if not lifecycle.transition(session, request.id, from_states=[State.APPROVED], to=State.STARTING, now=now):
                return
        to_start = [i for i in request.instances if i.to_start and i.outcome is None]
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
                    started_at=now,
                    watch_deadline=now + self.start_timeout,
                    error=error,
                )

    def _start_batch(self, request: StartRequest, batch: Sequence[RequestInstance], retried: bool = False) -> list[str]:
        """Start one batch; if Zenlayer says some are no longer STOPPED, re-check and start the rest once."""
        ids = [i.instance_id for i in batch]
        try:
            zenlayer_request_id = self.vm.start_instances(ids)
        except StartRefused as exc:
            self._audit_call(request, ids, exc)
            if retried:
                self._set_outcome(batch, Outcome.FAILED, exc.describe())
                return [f"StartInstances refused: {exc.describe()}"]
            return self._restart_after_state_change(request, batch, exc)
        except OutcomeUnknown as exc:
            # The call may have been accepted: never retry it; the polls will show what happened.
            self._audit_call(request, ids, exc)
            return [f"StartInstances outcome unknown, not retried: {exc.describe()}"]
        except VmError as exc:
            self._audit_call(request, ids, exc)
            self._set_outcome(batch, Outcome.FAILED, exc.describe())
            return [f"StartInstances failed: {exc.describe()}"]
        self._audit_call(request, ids, None, zenlayer_request_id)
        with self.db.session() as session:
            session.execute(
                update(RequestInstance)
                .where(RequestInstance.id.in_([i.id for i in batch]))
                .values(zenlayer_request_id=zenlayer_request_id)
                .execution_options(synchronize_session=False)
            )
        return []

    def _restart_after_state_change(
        self, request: StartRequest, batch: Sequence[RequestInstance], refusal: StartRefused
    ) -> list[str]:
        """After an all-or-nothing refusal, skip the ids that changed state and start the ones still STOPPED."""
        try:
            statuses = self.vm.describe_instances_status([i.instance_id for i in batch])
        except VmError as exc:
            self._set_outcome(batch, Outcome.FAILED, exc.describe())
            return [f"StartInstances refused ({refusal.describe()}) and the re-check failed: {exc.describe()}"]
        still_stopped = [i for i in batch if statuses.get(i.instance_id) == STOPPED]
        for instance in batch:
            if instance not in still_stopped:
                status = statuses.get(instance.instance_id)
                self._set_outcome(
                    [instance],
                    Outcome.SKIPPED,
                    "no longer exists" if status is None else f"was {status} when starting",
                )
        refused = [f"StartInstances refused: {refusal.describe()}"]
        if not still_stopped:
            return refused
        return refused + self._start_batch(request, still_stopped, retried=True)

    def _adopt_interrupted_start(self, request: StartRequest) -> None:
        """A request left in `starting` by a crash: its StartInstances may have run, so only watch it."""
        now = self.clock()
        with self.db.session() as session:
            if lifecycle.transition(
                session,
                request.id,
                from_states=[State.STARTING],
                to=State.WATCHING,
                now=now,
                started_at=request.started_at or now,
                watch_deadline=now + self.start_timeout,
                error="vm-bot restarted while starting these instances; the start was not repeated",
            ):
                audit.record(session, "start_interrupted", actor=SYSTEM_ACTOR, request_id=request.id)

    # --- polling ----------------------------------------------------------------------------------------

    def _poll(self, request_ids: Sequence[int]) -> None:
        """Ask Zenlayer about every watched instance in as few calls as possible and report what changed."""
        if not request_ids:
            return
        with self.db.session() as session:
            requests = list(
                session.scalars(
                    select(StartRequest)
                    .where(StartRequest.id.in_(request_ids), StartRequest.state == State.WATCHING)
                    .options(selectinload(StartRequest.instances))
                )
            )
        watched = sorted({i.instance_id for r in requests for i in r.instances if i.to_start and i.outcome is None})
        if not watched:
            for request in requests:
                self._finish_if_settled(request, poll_error=None)
            return
        try:
            statuses: dict[str, str] | None = self.vm.describe_instances_status(watched)
            poll_error = None
        except VmError as exc:
            log.warning("polling %d instances failed: %s", len(watched), exc.describe())
            statuses, poll_error = None, exc.describe()
        for request in requests:
            try:
                if statuses is None:
                    self._finish_if_settled(request, poll_error=poll_error)
                elif self._renew_lease(request.id):
                    self._apply_poll(request, statuses)
            except Exception:
                log.exception("could not update request %s; will retry", request.id)

    def _apply_poll(self, request: StartRequest, statuses: dict[str, str]) -> None:
        """Record one poll's statuses for a request, tell its thread what changed, and finish it if settled."""
        now = self.clock()
        updates = [
            _classify(i, statuses.get(i.instance_id)) for i in request.instances if i.to_start and i.outcome is None
        ]
        changed = [u for u in updates if u.changed or u.outcome is not None]
        if changed:
            addresses = self._addresses([u.instance_id for u in changed if u.status == RUNNING])
            with self.db.session() as session:
                for u in changed:
                    values: dict[str, object] = {
                        "last_status": u.status,
                        "outcome": u.outcome,
                        "status_changed_at": now,
                    }
                    if u.instance_id in addresses:
                        values["ip_address"] = addresses[u.instance_id]
                    session.execute(
                        update(RequestInstance)
                        .where(RequestInstance.id == u.row_id)
                        .values(**values)
                        .execution_options(synchronize_session=False)
                    )
            request = self._load(request.id)
        settled = all(i.outcome is not None for i in request.instances if i.to_start)
        changes = [
            StatusChange(i.instance_id, i.name, i.reported_status, i.last_status, i.ip_address)
            for i in request.instances
            if i.to_start and i.skip_reason is None and i.last_status != i.reported_status
        ]
        # The reply that settles a request is the final one; a separate progress reply would only repeat it.
        if changes and not settled:
            try:
                self.notifier.progress(request, changes)
            except Exception:
                log.exception("could not post progress for request %s; will retry", request.id)
            else:
                with self.db.session() as session:
                    for change in changes:
                        session.execute(
                            update(RequestInstance)
                            .where(
                                RequestInstance.request_id == request.id,
                                RequestInstance.instance_id == change.instance_id,
                            )
                            .values(reported_status=change.new)
                            .execution_options(synchronize_session=False)
                        )
        if settled or (request.watch_deadline is not None and now >= request.watch_deadline):
            self._finish_if_settled(request, poll_error=None)

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

    def _report_finished(self) -> None:
        """Post the final reply for every request of ours that ended but was not yet reported, then mark it."""
        with self.db.session() as session:
            finished = list(
                session.scalars(
                    select(StartRequest)
                    .where(
                        StartRequest.state.in_([s.value for s in REPORTED_FINAL_STATES]),
                        StartRequest.outcome_posted_at.is_(None),
                        StartRequest.lease_owner == self.owner,
                    )
                    .options(selectinload(StartRequest.instances))
                )
            )
        for request in finished:
            if not self._renew_lease(request.id):
                continue
            try:
                self.notifier.finished(request)
            except Exception:
                log.exception("could not post the outcome of request %s; will retry", request.id)
                continue
            with self.db.session() as session:
                now = self.clock()
                if lifecycle.transition(
                    session,
                    request.id,
                    from_states=[request.state],
                    to=State(request.state),
                    now=now,
                    outcome_posted_at=now,
                ):
                    audit.record(
                        session,
                        "finished",
                        actor=SYSTEM_ACTOR,
                        request_id=request.id,
                        outcome=request.state,
                        instances={i.instance_id: i.outcome or i.skip_reason for i in request.instances},
                    )

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

    def _set_outcome(self, instances: Iterable[RequestInstance], outcome: Outcome, reason: str) -> None:
        """Record a final outcome for instances that will not be watched."""
        with self.db.session() as session:
            session.execute(
                update(RequestInstance)
                .where(RequestInstance.id.in_([i.id for i in instances]))
                .values(outcome=outcome, skip_reason=reason[:255])
                .execution_options(synchronize_session=False)
            )

    def _audit_call(
        self,
        request: StartRequest,
        ids: Sequence[str],
        error: VmError | None,
        zenlayer_request_id: str | None = None,
    ) -> None:
        """Write the StartInstances call and its outcome to the audit trail."""
        with self.db.session() as session:
            audit.record(
                session,
                "zenlayer_start_instances",
                actor=request.decided_by or request.requester_id,
                request_id=request.id,
                zenlayer_request_id=zenlayer_request_id or (error.request_id if error else None),
                instance_ids=list(ids),
                outcome="accepted" if error is None else type(error).__name__,
                error=None if error is None else error.describe(),
            )


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
