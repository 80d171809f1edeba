"""The run timers, fired by the engine on every step: reminders and due stops. A timer is a row (bot.operations.runs);
firing one is a compare-and-set on the database's clock, so two replicas never both fire it, and a crash at any
instant leaves it either not fired (the next step fires it) or fired with its effect recorded in the same
transaction (the stop operation it made, or the reminder it owes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from itertools import groupby

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.db import audit
from bot.db.clock import db_time
from bot.db.models import Run
from bot.db.session import Database
from bot.delivery import outbox
from bot.domain.actions import RUNNING, STOP
from bot.domain.ports import VmApi
from bot.domain.vm_errors import VmError
from bot.domain.vocabulary import SYSTEM_ACTOR
from bot.operations import repository, runs
from bot.operations.claims import InstancesBusy
from bot.operations.records import OperationRecord, RunState
from bot.operations.repository import NewInstance
from bot.operations.states import State

log = logging.getLogger(__name__)

DUE_BATCH = 1000  # runs stopped in one step at most (the rest in the next: a step is not held up by a backlog)
STOP_TTL_SECONDS = 600.0  # an auto-stop is approved at once; this only bounds the pending instant


class Timers:
    """Fires due reminders and due stops; the engine runs the stop operations like any other."""

    def __init__(self, db: Database, vm: VmApi):
        self.db = db
        self.vm = vm

    def next_due_in(self) -> float | None:
        """Seconds until the next reminder or stop falls due (None: no run is running)."""
        with self.db.session(readonly=True) as session:
            return next_due_in(session)

    def remind(self) -> None:
        """Owe a reminder in the thread of every run whose reminder fell due (once: a compare-and-set)."""
        with self.db.session() as session:
            due = runs.take_due_reminders(session)
            if due:
                outbox.enqueue(session, due, outbox.Kind.REMINDER)
                for request_id in due:
                    audit.record(session, "run_reminded", actor=SYSTEM_ACTOR, request_id=request_id)

    def stop_due(self) -> bool:
        """Stop the runs whose time is up: one stop operation per start (reporting in its thread), their calls
        shared; instances someone already stopped, released or recycled are noted, not stopped again. True when
        stop operations were made (the engine then has calls to make)."""
        with self.db.session(readonly=True) as session:
            due = runs.due_stops(session, limit=DUE_BATCH)
        if not due:
            return False
        try:
            statuses = self.vm.describe_instances_status(sorted({instance for _, _, instance in due}))
        except VmError as exc:
            log.warning("could not check %d runs falling due: %s; trying again", len(due), exc.describe())
            return False
        with self.db.session() as session:
            # A compare-and-set: an Extend (or another replica) that came while Zenlayer was asked wins over this.
            taken = runs.take_for_stopping(session, [run_id for run_id, _, _ in due], due_only=True)
            for request_id, group in groupby(sorted(taken, key=lambda r: r[1]), key=lambda r: r[1]):
                stop_runs(session, request_id, list(group), statuses, by=SYSTEM_ACTOR, event="run_auto_stopped")
        return bool(taken)


def stop_runs(
    session: Session,
    request_id: int,
    taken: Sequence[tuple[int, int, str]],
    statuses: Mapping[str, str] | None,
    *,
    by: str,
    event: str,
) -> int | None:
    """Make the stop operation for runs just moved to stopping (in the caller's transaction); return its id.

    `statuses` (None: not looked up) tells which instances still run; the others end their run, noted.
    """
    start = repository.record(session, request_id)
    if start is None or not taken:
        return None
    instances, skipped = _split(start, taken, statuses)
    stop_id = repository.create(
        session,
        action=STOP,
        requester_id=start.requester_id,
        channel_id=start.channel_id,
        instances=instances,
        needs_approval=False,
        ttl_seconds=STOP_TTL_SECONDS,
        parent_id=request_id,
    )
    runs.end(session, Run.id.in_(skipped), "stopped elsewhere")
    stopping = [run_id for run_id, _, _ in taken if run_id not in skipped]
    runs.link_stop(session, stopping, stop_id)
    stopped_ids = [instance_id for _, _, instance_id in taken]
    audit.record(session, event, actor=by, request_id=request_id, stop_request=stop_id, instance_ids=stopped_ids)
    if not stopping:
        repository.transition(session, stop_id, from_states=[State.PENDING], to=State.DONE, decided_by=by)
        return stop_id
    try:
        with session.begin_nested():  # an instance another operation holds is left to it
            repository.approve(session, stop_id, by=by)
    except InstancesBusy as busy:
        held = "another request holds " + ", ".join(sorted(busy.holders))
        repository.transition(session, stop_id, from_states=[State.PENDING], to=State.FAILED, decided_by=by, error=held)
    return stop_id


def _split(
    start: OperationRecord, taken: Sequence[tuple[int, int, str]], statuses: Mapping[str, str] | None
) -> tuple[list[NewInstance], list[int]]:
    """Return the stop's instances (those no longer running noted, not included) and the runs that ended already."""
    known = {i.instance_id: i for i in start.instances}
    instances, skipped = [], []
    for run_id, _, instance_id in taken:
        status = statuses.get(instance_id) if statuses is not None else RUNNING
        name, zone = known[instance_id].name, known[instance_id].zone
        if status == RUNNING:
            instances.append(NewInstance(instance_id, name, zone, RUNNING))
            continue
        if status is None:
            why = "released elsewhere (no longer exists)"
        elif status in ("RECYCLE", "RECYCLING", "RELEASING"):
            why = f"{status}: recycled or released elsewhere"
        else:
            why = f"already {status}: stopped elsewhere"
        instances.append(NewInstance(instance_id, name, zone, status, included=False, skip_reason=why))
        skipped.append(run_id)
    return instances, skipped


def next_due_in(session: Session) -> float | None:
    """Seconds until the next reminder or stop falls due (None: no run is running)."""
    running = Run.state == RunState.RUNNING.value
    stop_at, now = session.execute(select(func.min(Run.stop_at), db_time()).where(running)).one()
    remind_at = session.scalar(select(func.min(Run.remind_at)).where(running, Run.reminded_at.is_(None)))
    moments = [m for m in (stop_at, remind_at) if m is not None]
    if not moments:
        return None
    return max(0.0, (min(moments) - now).total_seconds())
