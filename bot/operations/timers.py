"""The run timers, fired by the engine on every step: reminders and due stops. A timer is a row (bot.operations.runs);
firing one is a compare-and-set on the database's clock, so two replicas never both fire it, and a crash at any
instant leaves it either not fired (the next step fires it) or fired with its effect recorded in the same
transaction (the stop operation it made, or the reminder it owes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from itertools import groupby
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.db import audit
from bot.db.clock import db_time
from bot.db.models import Operation, OperationInstance, Run
from bot.db.session import Database
from bot.delivery import outbox
from bot.domain.actions import RUNNING, STOP
from bot.domain.ports import VmApi
from bot.domain.vm_errors import VmError
from bot.domain.vocabulary import SYSTEM_ACTOR
from bot.operations import repository, runs
from bot.operations.claims import InstancesBusy
from bot.operations.creation import NewInstance, NewOperation, create_many
from bot.operations.records import Holder, RunState
from bot.operations.states import State

log = logging.getLogger(__name__)

DUE_BATCH = 1000  # runs stopped in one step at most (the rest in the next: a step is not held up by a backlog)
STOP_TTL_SECONDS = 600.0  # an auto-stop is approved at once; this only bounds the pending instant


class Timers:
    """Fires due reminders and due stops; the engine runs the stop operations like any other."""

    def __init__(self, db: Database, vm: VmApi, *, edit_after: float = 0.0):
        self.db = db
        self.vm = vm
        # The parents' "stopping…" edit waits this long (a poll interval): a stop whose first poll comes sooner
        # shows in one edit, with that poll's news, instead of two.
        self.edit_after = edit_after

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
            stop_runs(session, taken, statuses, by=SYSTEM_ACTOR, event="run_auto_stopped", edit_after=self.edit_after)
        return bool(taken)


def stop_runs(
    session: Session,
    taken: Sequence[tuple[int, int, str]],
    statuses: Mapping[str, str] | None,
    *,
    by: str,
    event: str,
    edit_after: float = 0.0,
) -> dict[int, int]:
    """Make the stop operations for runs just moved to stopping (run id, start id, instance id), one per start
    (reporting in its thread), in the caller's transaction and a few statements however many; return each start's
    stop operation.

    `statuses` (None: not looked up) tells which instances still run; the others end their run, noted.
    """
    if not taken:
        return {}
    groups = {request_id: list(group) for request_id, group in groupby(sorted(taken, key=_start), key=_start)}
    starts = _starts(session, list(groups))
    made = [
        (request_id, *_split(starts[request_id][1], group, statuses))
        for request_id, group in groups.items()
        if request_id in starts
    ]
    stop_ids = create_many(
        session,
        [
            NewOperation(
                STOP,
                starts[request_id][0].requester_id,
                starts[request_id][0].channel_id,
                instances,
                parent_id=request_id,
            )
            for request_id, instances, _ in made
        ],
        ttl_seconds=STOP_TTL_SECONDS,
    )
    stop_of = {request_id: stop_id for (request_id, _, _), stop_id in zip(made, stop_ids, strict=True)}
    skipped = {run_id for _, _, ended in made for run_id in ended}
    runs.end(session, Run.id.in_(sorted(skipped)), "stopped elsewhere")
    links = {run_id: stop_of[request_id] for run_id, request_id, _ in taken if request_id in stop_of}
    runs.link_stop(session, {run_id: stop_id for run_id, stop_id in links.items() if run_id not in skipped})
    _audit_fired(session, event, by, stop_of, groups)
    stopping = {links[run_id] for run_id in links if run_id not in skipped}
    nothing = [stop_id for stop_id in stop_ids if stop_id not in stopping]
    repository.transition_many(session, nothing, from_state=State.PENDING, to=State.DONE, decided_by=by)
    _approve(session, sorted(stopping), by=by, edit_after=edit_after)
    return stop_of


def _audit_fired(
    session: Session,
    event: str,
    by: str,
    stop_of: Mapping[int, int],
    groups: Mapping[int, Sequence[tuple[int, int, str]]],
) -> None:
    """Audit each start's stop operation just made, with the instances it stops (one statement)."""
    audit.record_many(
        session,
        [
            audit.entry(
                event, actor=by, request_id=request_id, stop_request=stop_id, instance_ids=_ids(groups[request_id])
            )
            for request_id, stop_id in stop_of.items()
        ],
    )


def _ids(taken: Sequence[tuple[int, int, str]]) -> list[str]:
    """The instance ids of taken runs."""
    return [instance_id for _, _, instance_id in taken]


def _start(run: tuple[int, int, str]) -> int:
    """The start a taken run belongs to."""
    return run[1]


def _starts(
    session: Session, request_ids: Sequence[int]
) -> dict[int, tuple[Any, dict[str, tuple[str | None, str | None]]]]:
    """Read starts: who asked where, and their instances' names and zones."""
    heads = session.execute(
        select(Operation.id, Operation.requester_id, Operation.channel_id).where(Operation.id.in_(request_ids))
    )
    found: dict[int, tuple[Any, dict[str, tuple[str | None, str | None]]]] = {row.id: (row, {}) for row in heads}
    for row in session.execute(
        select(
            OperationInstance.request_id, OperationInstance.instance_id, OperationInstance.name, OperationInstance.zone
        ).where(OperationInstance.request_id.in_(request_ids))
    ):
        found[row.request_id][1][row.instance_id] = (row.name, row.zone)
    return found


def _approve(session: Session, stop_ids: Sequence[int], *, by: str, edit_after: float) -> None:
    """Approve stop operations; one whose instance another operation holds is left to it and fails, saying so."""
    busy: dict[int, dict[str, Holder]] = {}
    while True:
        try:
            with session.begin_nested():  # the approvals and their claims commit together or not at all
                repository.approve_many(session, [i for i in stop_ids if i not in busy], by=by, edit_after=edit_after)
            break
        except InstancesBusy as found:
            if not found.operations:
                raise
            busy.update(found.operations)
    for stop_id, held in busy.items():
        error = "another request holds " + ", ".join(sorted(held))
        repository.transition(
            session, stop_id, from_states=[State.PENDING], to=State.FAILED, decided_by=by, error=error
        )


def _split(
    known: Mapping[str, tuple[str | None, str | None]],
    taken: Sequence[tuple[int, int, str]],
    statuses: Mapping[str, str] | None,
) -> tuple[list[NewInstance], list[int]]:
    """Return the stop's instances (those no longer running noted, not included) and the runs that ended already."""
    instances, skipped = [], []
    for run_id, _, instance_id in taken:
        status = statuses.get(instance_id) if statuses is not None else RUNNING
        name, zone = known.get(instance_id, (None, None))
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
