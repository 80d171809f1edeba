"""Who works on which active operation: leases taken, renewed, taken over and released in SQL (bot.db.lease)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from bot.db.lease import Lease, Owner
from bot.db.models import Operation
from bot.db.sql import rowcount
from bot.operations.states import ACTIVE_STATES


def _active() -> ColumnElement[bool]:
    """SQL: the operation is approved and not yet final (it needs a replica's work)."""
    return Operation.state.in_([s.value for s in ACTIVE_STATES])


def claim_work(session: Session, *, owner: Owner, lease: Lease, limit: int = 500) -> list[int]:
    """Take or renew the lease on active operations no other live owner holds; return their ids.

    On PostgreSQL the rows are locked with FOR UPDATE SKIP LOCKED, so replicas claiming at once split the work
    instead of queueing; on SQLite the session's BEGIN IMMEDIATE serialises them.
    """
    candidates = list(
        session.scalars(
            select(Operation.id)
            .where(_active(), or_(lease.lapsed(Operation.lease_until), Operation.lease_owner == owner.name))
            .order_by(Operation.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # rendered as nothing on SQLite
        )
    )
    if candidates:
        session.execute(
            update(Operation)
            .where(Operation.id.in_(candidates))
            .values(lease_owner=owner.name, lease_until=lease.until())
            .execution_options(synchronize_session=False)
        )
    return candidates


def count_lapsed_foreign(session: Session, *, owner: Owner, lease: Lease) -> int:
    """Count active operations whose lease another owner let lapse: what a claim now would take over."""
    lapsed = and_(
        _active(),
        Operation.lease_owner.is_not(None),
        Operation.lease_owner != owner.name,
        lease.lapsed(Operation.lease_until),
    )
    return int(session.scalar(select(func.count(Operation.id)).where(lapsed)) or 0)


def renew_all(session: Session, *, owner: Owner, lease: Lease) -> int:
    """Heartbeat: extend every lease owner still holds (a lapsed one another replica took is left alone)."""
    result = session.execute(
        update(Operation)
        .where(Operation.lease_owner == owner.name)
        .values(lease_until=lease.until())
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def renew(session: Session, operation_ids: Iterable[int], *, owner: Owner, lease: Lease) -> set[int]:
    """Extend owner's leases on these operations before slow or visible work; return the ids it still holds."""
    ids = list(operation_ids)
    if not ids:
        return set()
    return set(
        session.scalars(
            update(Operation)
            .where(Operation.id.in_(ids), Operation.lease_owner == owner.name)
            .values(lease_until=lease.until())
            .returning(Operation.id)
            .execution_options(synchronize_session=False)
        )
    )


def take_over_predecessor(session: Session, *, owner: Owner, lease: Lease) -> int:
    """At start-up, take every lease held by an earlier process of this replica (same replica, other nonce).

    That process is gone (this one replaced it), so its work resumes at once instead of after its lease.
    """
    result = session.execute(
        update(Operation)
        .where(owner.predecessor(Operation.lease_owner), _active())
        .values(lease_owner=owner.name, lease_until=lease.until())
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def release(session: Session, *, owner: Owner, operation_ids: Iterable[int] | None = None) -> int:
    """Give up owner's leases (all of them, or on operation_ids) so another replica may take over at once."""
    statement = update(Operation).where(Operation.lease_owner == owner.name)
    if operation_ids is not None:
        statement = statement.where(Operation.id.in_(list(operation_ids)))
    return rowcount(
        session.execute(
            statement.values(lease_owner=None, lease_until=None).execution_options(synchronize_session=False)
        )
    )
