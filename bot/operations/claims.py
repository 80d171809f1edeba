"""Who holds which instance: one active operation per instance (a primary key), and one new operation per user at a
time (an advisory lock on PostgreSQL, BEGIN IMMEDIATE on SQLite)."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bot.db.clock import db_time
from bot.db.models import InstanceClaim, Operation, OperationInstance
from bot.db.sql import insert_ignoring_conflicts
from bot.operations.records import Holder


class InstancesBusy(Exception):
    """Approval lost: other active operations hold some of the instances (raised inside the approving transaction).

    `holders` maps each busy instance to the operation holding it; `operations` which approvals it concerns."""

    def __init__(self, holders: dict[str, Holder], operations: dict[int, dict[str, Holder]] | None = None):
        self.holders = holders
        self.operations = operations or {}
        super().__init__("held by other operations: " + ", ".join(sorted(holders)))


def claim_instances(session: Session, operation_ids: int | Sequence[int]) -> None:
    """Insert one claim per instance the operations act on; raise InstancesBusy if another operation holds one.

    The primary key on active_instance_claims.instance_id is the rule; ON CONFLICT DO NOTHING makes a concurrent
    claimer wait for the holder's transaction and then see its row. Sorted ids keep lock order the same for
    everyone, so two overlapping approvals queue instead of deadlocking. One INSERT for every operation.
    """
    ids = [operation_ids] if isinstance(operation_ids, int) else list(operation_ids)
    wanted: list[tuple[str, int]] = sorted(
        (instance_id, operation_id)
        for instance_id, operation_id in session.execute(
            select(OperationInstance.instance_id, OperationInstance.request_id).where(
                OperationInstance.request_id.in_(ids),
                OperationInstance.included.is_(True),
                OperationInstance.outcome.is_(None),
            )
        )
    )
    rows = [{"instance_id": i, "request_id": operation_id, "claimed_at": db_time()} for i, operation_id in wanted]
    insert_ignoring_conflicts(session, InstanceClaim, rows, ["instance_id"])
    held = holders(session, [i for i, _ in wanted])
    busy: dict[int, dict[str, Holder]] = {}
    for instance_id, operation_id in wanted:
        holder = held.get(instance_id)
        if holder is not None and holder.request_id != operation_id:
            busy.setdefault(operation_id, {})[instance_id] = holder
    if busy:
        raise InstancesBusy({i: h for found in busy.values() for i, h in found.items()}, busy)


def holders(session: Session, ids: Sequence[str]) -> dict[str, Holder]:
    """Map each id held by an active operation to that operation."""
    query = (
        select(InstanceClaim.instance_id, Operation.id, Operation.channel_id, Operation.message_ts)
        .join(Operation, InstanceClaim.request_id == Operation.id)
        .where(InstanceClaim.instance_id.in_(list(ids)))
    )
    return {row[0]: Holder(row[1], row[2], row[3]) for row in session.execute(query)}


def release_claims(session: Session, operation_id: int, instance_ids: Iterable[str] | None = None) -> None:
    """Let go of an operation's claims (all, or on instance_ids once they have an outcome)."""
    statement = delete(InstanceClaim).where(InstanceClaim.request_id == operation_id)
    if instance_ids is not None:
        statement = statement.where(InstanceClaim.instance_id.in_(list(instance_ids)))
    session.execute(statement.execution_options(synchronize_session=False))


def lock_requester(session: Session, requester_id: str) -> None:
    """Serialise one user's new operations until the transaction ends (SQLite's BEGIN IMMEDIATE already does)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(zlib.crc32(requester_id.encode()))))
