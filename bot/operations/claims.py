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
    """Approval lost: other active operations hold some of the instances (raised inside the approving transaction)."""

    def __init__(self, holders: dict[str, Holder]):
        self.holders = holders
        super().__init__("held by other operations: " + ", ".join(sorted(holders)))


def claim_instances(session: Session, operation_id: int) -> None:
    """Insert one claim per instance the operation acts on; raise InstancesBusy if another operation holds one.

    The primary key on active_instance_claims.instance_id is the rule; ON CONFLICT DO NOTHING makes a concurrent
    claimer wait for the holder's transaction and then see its row. Sorted ids keep lock order the same for
    everyone, so two overlapping approvals queue instead of deadlocking.
    """
    ids = sorted(
        session.scalars(
            select(OperationInstance.instance_id).where(
                OperationInstance.request_id == operation_id,
                OperationInstance.included.is_(True),
                OperationInstance.outcome.is_(None),
            )
        )
    )
    rows = [{"instance_id": i, "request_id": operation_id, "claimed_at": db_time()} for i in ids]
    insert_ignoring_conflicts(session, InstanceClaim, rows, ["instance_id"])
    held = holders(session, ids, except_operation=operation_id)
    if held:
        raise InstancesBusy(held)


def holders(session: Session, ids: Sequence[str], *, except_operation: int | None = None) -> dict[str, Holder]:
    """Map each id held by an active operation (other than except_operation) to that operation."""
    query = (
        select(InstanceClaim.instance_id, Operation.id, Operation.channel_id, Operation.message_ts)
        .join(Operation, InstanceClaim.request_id == Operation.id)
        .where(InstanceClaim.instance_id.in_(list(ids)))
    )
    if except_operation is not None:
        query = query.where(InstanceClaim.request_id != except_operation)
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
