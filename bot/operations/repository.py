"""The operation lifecycle in SQL: every state change is one compare-and-set UPDATE, safe across threads and replicas,
with the message it owes Slack recorded in the same transaction. Times are the database's."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, selectinload

from bot.db import audit
from bot.db.clock import as_utc, db_time
from bot.db.models import InstanceClaim, Operation, OperationInstance
from bot.db.sql import fit, insert_ignoring_conflicts, length_of, rowcount
from bot.delivery import outbox
from bot.domain.actions import Action
from bot.domain.errors import InvalidInput
from bot.domain.ids import is_instance_id
from bot.domain.vocabulary import SYSTEM_ACTOR
from bot.operations.records import Holder, OperationRecord, record_of
from bot.operations.states import FINAL_STATES, OPEN_STATES, State

# The messages a move to a state owes (the courier renders them from the database when it sends them).
TOLD: dict[State, tuple[outbox.Kind, ...]] = {
    State.APPROVED: (outbox.Kind.REFRESH,),
    # WATCHING: the first change a poll sees owes the first reply ("Start requested", with that status) and an edit.
    State.DONE: (outbox.Kind.FINAL, outbox.Kind.REFRESH),
    State.FAILED: (outbox.Kind.FINAL, outbox.Kind.REFRESH),
    State.TIMED_OUT: (outbox.Kind.FINAL, outbox.Kind.REFRESH),
    State.CANCELLED: (outbox.Kind.REFRESH,),
    State.REJECTED: (outbox.Kind.REFRESH,),
    State.WITHDRAWN: (outbox.Kind.REFRESH,),
    State.EXPIRED: (outbox.Kind.FINAL, outbox.Kind.REFRESH),  # no reply for an expiry: FINAL only marks it told
}
# Columns transition() may set besides state, updated_at and finished_at.
_SETTABLE = frozenset(c.key for c in Operation.__table__.columns) - {
    "id",
    "state",
    "updated_at",
    "finished_at",
    "lease_owner",
    "lease_until",
}


class InstancesBusy(Exception):
    """Approval lost: other active operations hold some of the instances (raised inside the approving transaction)."""

    def __init__(self, holders: dict[str, Holder]):
        self.holders = holders
        super().__init__("held by other operations: " + ", ".join(sorted(holders)))


@dataclass(frozen=True)
class NewInstance:
    """One instance to record in a new operation, as looked up before asking for confirmation."""

    instance_id: str
    name: str | None = None
    zone: str | None = None
    status: str | None = None
    included: bool = True
    skip_reason: str | None = None


def create(
    session: Session,
    *,
    action: Action,
    requester_id: str,
    channel_id: str,
    instances: Sequence[NewInstance],
    needs_approval: bool,
    ttl_seconds: float,
    approvers: Sequence[str] = (),
) -> int:
    """Record a pending operation with its instances, expiring ttl_seconds from now, and audit it; return its id.

    `approvers` are the people who may approve it (shown on its confirmation while it waits).
    """
    if not instances:
        raise InvalidInput("an operation needs at least one instance")
    bad = [i.instance_id for i in instances if not is_instance_id(i.instance_id)]
    if bad:
        raise InvalidInput(f"not instance ids: {', '.join(repr(b) for b in bad[:10])}")
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
    first_mention: dict[str, NewInstance] = {}
    for instance in instances:
        first_mention.setdefault(instance.instance_id, instance)
    unique = list(first_mention.values())
    operation_id = int(
        session.scalars(
            insert(Operation)
            .values(
                action=action.name,
                requester_id=requester_id,
                channel_id=channel_id,
                state=State.PENDING.value,
                needs_approval=needs_approval,
                approvers=json.dumps(list(approvers)) if approvers else None,
                created_at=db_time(),
                updated_at=db_time(),
                expires_at=db_time(ttl_seconds),
            )
            .returning(Operation.id)
        ).one()
    )
    session.execute(insert(OperationInstance), [_instance_row(operation_id, i) for i in unique])
    _audit_created(session, operation_id, unique)
    return operation_id


def _audit_created(session: Session, operation_id: int, instances: Sequence[NewInstance]) -> None:
    """Write a new operation's `request_created` audit event (the name every start had)."""
    row = session.execute(
        select(
            Operation.requester_id,
            Operation.action,
            Operation.channel_id,
            Operation.needs_approval,
            Operation.expires_at,
        ).where(Operation.id == operation_id)
    ).one()
    audit.record(
        session,
        "request_created",
        actor=row.requester_id,
        request_id=operation_id,
        action=row.action,
        channel=row.channel_id,
        needs_approval=row.needs_approval,
        to_start=[i.instance_id for i in instances if i.included],
        skipped={i.instance_id: i.skip_reason for i in instances if not i.included},
        expires_at=as_utc(row.expires_at).isoformat(),
    )


def _instance_row(operation_id: int, new: NewInstance) -> dict[str, Any]:
    """Return the row for one new instance, with what Zenlayer said cut to fit its columns."""
    return {
        "request_id": operation_id,
        "instance_id": new.instance_id,
        "name": fit(new.name, length_of(OperationInstance, "name")),
        "zone": fit(new.zone, length_of(OperationInstance, "zone")),
        "initial_status": fit(new.status, length_of(OperationInstance, "initial_status")),
        "last_status": fit(new.status, length_of(OperationInstance, "last_status")),
        "included": new.included,
        "skip_reason": fit(new.skip_reason, length_of(OperationInstance, "skip_reason")),
    }


def _states(states: State | str | Iterable[State | str]) -> tuple[State, ...]:
    """Normalise one state or several to a tuple of States (a lone string is one state, not characters)."""
    if isinstance(states, str):
        return (State(states),)
    return tuple(State(s) for s in states)


def transition(
    session: Session,
    operation_id: int,
    *,
    from_states: State | str | Iterable[State | str],
    to: State | str,
    unexpired: bool = False,
    owner: str | None = None,
    **values: Any,
) -> bool:
    """Move an operation to `to` iff it is in one of from_states (and unexpired, and leased to `owner`, if asked);
    True iff this call did it. A move to a final state records when, lets go of the instances and owes Slack its
    messages, all in this transaction."""
    sources, target = _states(from_states), State(to)
    if not sources:
        raise ValueError("from_states is empty")
    if any(s in FINAL_STATES and s != target for s in sources) or (
        target == State.PENDING and sources != (State.PENDING,)
    ):
        raise ValueError(f"no transition from {[s.value for s in sources]} to {target.value}")
    unknown = set(values) - _SETTABLE
    if unknown:
        raise TypeError(f"transition() cannot set {sorted(unknown)}")
    statement = update(Operation).where(Operation.id == operation_id, Operation.state.in_([s.value for s in sources]))
    if unexpired:
        statement = statement.where(Operation.expires_at > db_time())
    if owner is not None:
        statement = statement.where(Operation.lease_owner == owner)
    if target in FINAL_STATES:
        # Ended: when, and nobody's work any more (what Slack is owed goes through the outbox, not a lease).
        values.update(finished_at=db_time(), lease_owner=None, lease_until=None)
    # The WHERE clause is the compare-and-set; "evaluate" would judge it against possibly stale objects in memory.
    moved = rowcount(
        session.execute(
            statement.values(state=target.value, updated_at=db_time(), **values).execution_options(
                synchronize_session=False
            )
        )
    )
    if moved and target in FINAL_STATES:
        release_claims(session, operation_id)
    if moved and target not in sources:
        outbox.enqueue(session, operation_id, TOLD.get(target, ()))
    return moved == 1


def transition_many(session: Session, operation_ids: Sequence[int], *, from_state: State, to: State) -> list[int]:
    """Move every operation among operation_ids still in from_state to the final state `to` in one compare-and-set
    UPDATE, let go of their instances and owe Slack their messages; return the ids moved."""
    if not operation_ids:
        return []
    if to not in FINAL_STATES or from_state in FINAL_STATES:
        raise ValueError(f"transition_many moves to a final state, not {from_state.value} to {to.value}")
    moved = list(
        session.scalars(
            update(Operation)
            .where(Operation.id.in_(list(operation_ids)), Operation.state == from_state.value)
            .values(state=to.value, updated_at=db_time(), finished_at=db_time(), lease_owner=None, lease_until=None)
            .returning(Operation.id)
            .execution_options(synchronize_session=False)
        )
    )
    if moved:
        session.execute(
            delete(InstanceClaim)
            .where(InstanceClaim.request_id.in_(moved))
            .execution_options(synchronize_session=False)
        )
        outbox.enqueue(session, sorted(moved), TOLD.get(to, ()))
    return moved


def approve(session: Session, operation_id: int, *, by: str) -> bool:
    """Approve a pending, unexpired operation and claim its instances; True iff this call approved it.

    Raises InstancesBusy when another active operation holds an instance; the caller must then roll back (the click
    runs this in a savepoint), so the approval and the claims commit together or not at all.
    """
    ok = transition(
        session,
        operation_id,
        from_states=OPEN_STATES,
        to=State.APPROVED,
        unexpired=True,
        decided_by=by,
        decided_at=db_time(),
    )
    if ok:
        claim_instances(session, operation_id)
        audit.record(session, "request_approved", actor=by, request_id=operation_id)
    return ok


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


def decide(session: Session, operation_id: int, to: State, *, by: str, event: str, **detail: Any) -> bool:
    """Close a pending operation as a person decided it (cancelled or rejected) and audit it as event."""
    ok = transition(session, operation_id, from_states=OPEN_STATES, to=to, decided_by=by, decided_at=db_time())
    if ok:
        audit.record(session, event, actor=by, request_id=operation_id, **detail)
    return ok


def withdraw(session: Session, operation_id: int, reason: str) -> bool:
    """Withdraw a pending operation nobody should click (its confirmation is not known to be in Slack), and audit
    why; True iff this call did it (False: a click decided it first)."""
    if transition(session, operation_id, from_states=OPEN_STATES, to=State.WITHDRAWN, error=reason):
        audit.record(session, "abandoned", actor=SYSTEM_ACTOR, request_id=operation_id, reason=reason)
        return True
    return False


def expire_due(session: Session) -> list[int]:
    """Expire every pending operation whose time is up (by the database's clock); return the ids this call expired."""
    due = session.scalars(
        select(Operation.id)
        .where(Operation.state == State.PENDING.value, Operation.expires_at <= db_time())
        .order_by(Operation.id)
    ).all()
    expired: list[int] = []
    for operation_id in due:
        if transition(session, operation_id, from_states=OPEN_STATES, to=State.EXPIRED):
            audit.record(session, "request_expired", actor=SYSTEM_ACTOR, request_id=operation_id)
            expired.append(operation_id)
    return expired


def record(session: Session, operation_id: int) -> OperationRecord | None:
    """Read an operation with its instances into a read model (None when there is no such operation)."""
    row = session.scalars(
        select(Operation)
        .where(Operation.id == operation_id)
        .options(selectinload(Operation.instances))
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        return None
    return record_of(row, database_now(session))


def pending_same(
    session: Session, user_id: str, channel_id: str, action: Action, ids: Sequence[str]
) -> list[OperationRecord]:
    """Return the user's unexpired pending operations of this action in this channel for exactly these ids."""
    wanted = set(ids)
    candidates = session.scalars(
        select(Operation)
        .where(
            Operation.requester_id == user_id,
            Operation.channel_id == channel_id,
            Operation.action == action.name,
            Operation.state == State.PENDING.value,
            Operation.expires_at > db_time(),
        )
        .options(selectinload(Operation.instances))
        .order_by(Operation.id)
    )
    now = database_now(session)
    return [record_of(r, now) for r in candidates if {i.instance_id for i in r.instances} == wanted]


def database_now(session: Session) -> datetime:
    """Read the database's clock (what read models carry as `as_of`, so views say "in 4 h" from the same clock)."""
    return as_utc(session.execute(select(db_time())).scalar_one())


def attach_message(session: Session, operation_id: int, message_ts: str) -> bool:
    """Record where an operation's confirmation was posted, unless already known; True iff recorded now."""
    return (
        rowcount(
            session.execute(
                update(Operation)
                .where(Operation.id == operation_id, Operation.message_ts.is_(None))
                .values(message_ts=message_ts)
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )
