"""Reading the work a replica holds: its leased operations in one state, with their instances, as plain snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, select

from bot.db.clock import db_time
from bot.db.lease import Owner
from bot.db.models import Operation, OperationInstance
from bot.db.session import Database
from bot.domain.actions import Outcome, action_named
from bot.execution.ports import Target, Watched
from bot.operations.states import State


def read_work(db: Database, owner: Owner, operation_ids: Sequence[int], state: State) -> list[Watched]:
    """Read the operations among operation_ids in one state and leased to owner, with their included instances
    (only open ones unless watching), as plain snapshots: no ORM object leaves the session."""
    if not operation_ids:
        return []
    found: dict[int, tuple[Any, list[Target]]] = {}
    with db.session(readonly=True) as session:
        for row in session.execute(_query(owner, operation_ids, state)):
            _, targets = found.setdefault(row.operation_id, (row, []))
            if row.row_id is not None:
                targets.append(_target(row))
    return [
        Watched(
            head.operation_id,
            action_named(head.action),
            head.decided_by or head.requester_id,
            bool(head.past_deadline),
            tuple(t for t in targets if state == State.WATCHING or t.outcome is None),
        )
        for head, targets in found.values()
    ]


def _query(owner: Owner, operation_ids: Sequence[int], state: State) -> Select[*tuple[Any, ...]]:
    """One row per included instance of each operation (one with no instance columns for an operation without)."""
    o, i = Operation, OperationInstance
    return (
        select(
            o.id.label("operation_id"),
            o.action,
            o.requester_id,
            o.decided_by,
            and_(o.watch_deadline.is_not(None), o.watch_deadline <= db_time()).label("past_deadline"),
            i.id.label("row_id"),
            i.instance_id,
            i.last_status,
            i.outcome,
            i.call_result,
            i.calls,
            i.unchanged_polls,
            i.missing_polls,
        )
        .select_from(o)
        .outerjoin(i, and_(i.request_id == o.id, i.included.is_(True)))
        .where(o.id.in_(list(operation_ids)), o.state == state.value, o.lease_owner == owner.name)
        .order_by(o.id, i.id)
    )


def _target(row: Any) -> Target:
    """Copy one instance row of the read into a Target."""
    outcome = Outcome(row.outcome) if row.outcome else None
    return Target(
        row.row_id,
        row.instance_id,
        row.last_status,
        outcome,
        row.call_result,
        row.calls,
        row.unchanged_polls,
        row.missing_polls,
    )
