"""The operation lifecycle in SQL: every state change is one compare-and-set UPDATE, safe across threads and replicas,
with the message it owes Slack recorded in the same transaction. Times are the database's."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session, aliased, selectinload

from bot.db import audit
from bot.db.clock import as_utc, db_time
from bot.db.models import InstanceClaim, Operation, OperationInstance, Run
from bot.db.sql import rowcount
from bot.delivery import outbox
from bot.domain.actions import Action
from bot.domain.vocabulary import SYSTEM_ACTOR
from bot.operations import runs
from bot.operations.claims import claim_instances, release_claims
from bot.operations.records import OperationRecord, record_of, run_of
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
        runs.on_final(session, [operation_id])
    if moved and target not in sources:
        owe(session, [operation_id], TOLD.get(target, ()))
    return moved == 1


def transition_many(
    session: Session,
    operation_ids: Sequence[int],
    *,
    from_state: State,
    to: State,
    owner: str | None = None,
    **values: Any,
) -> list[int]:
    """Move every operation among operation_ids still in from_state (and leased to `owner`, if asked) to `to` in
    one compare-and-set UPDATE, setting `values` as transition() does; a move to a final state lets go of their
    instances and owes Slack their messages, in this transaction. Return the ids moved."""
    if not operation_ids:
        return []
    if from_state in FINAL_STATES or to == State.PENDING:
        raise ValueError(f"no transition from {from_state.value} to {to.value}")
    unknown = set(values) - _SETTABLE
    if unknown:
        raise TypeError(f"transition_many() cannot set {sorted(unknown)}")
    statement = update(Operation).where(Operation.id.in_(list(operation_ids)), Operation.state == from_state.value)
    if owner is not None:
        statement = statement.where(Operation.lease_owner == owner)
    if to in FINAL_STATES:
        values.update(finished_at=db_time(), lease_owner=None, lease_until=None)
    moved = sorted(
        session.scalars(
            statement.values(state=to.value, updated_at=db_time(), **values)
            .returning(Operation.id)
            .execution_options(synchronize_session=False)
        )
    )
    if moved and to in FINAL_STATES:
        session.execute(
            delete(InstanceClaim)
            .where(InstanceClaim.request_id.in_(moved))
            .execution_options(synchronize_session=False)
        )
        runs.on_final(session, moved)
    owe(session, moved, TOLD.get(to, ()))
    return moved


def owe(session: Session, operation_ids: Sequence[int], kinds: Iterable[outbox.Kind], *, after: float = 0.0) -> None:
    """Owe Slack these kinds of message about operations, in this transaction. An operation reporting in another's
    thread (an auto-stop in its run's start thread) has that one's confirmation re-rendered instead of its own.
    `after` makes the re-rendering due that many seconds later: news owed meanwhile joins it (outbox.enqueue)."""
    kinds = list(kinds)
    if not operation_ids or not kinds:
        return
    if outbox.Kind.REFRESH in kinds:
        parents = select(func.coalesce(Operation.parent_id, Operation.id)).where(Operation.id.in_(operation_ids))
        outbox.enqueue(session, sorted(set(session.scalars(parents))), outbox.Kind.REFRESH, after=after)
    outbox.enqueue(session, operation_ids, [k for k in kinds if k != outbox.Kind.REFRESH])


def approve(session: Session, operation_id: int, *, by: str) -> bool:
    """Approve a pending, unexpired operation and claim its instances; True iff this call approved it (InstancesBusy:
    as approve_many)."""
    return bool(approve_many(session, [operation_id], by=by))


def approve_many(session: Session, operation_ids: Sequence[int], *, by: str, edit_after: float = 0.0) -> list[int]:
    """Approve pending, unexpired operations and claim their instances, in one compare-and-set and one INSERT of
    claims however many; return the ids this call approved. `edit_after` delays the edits of their confirmations
    (see owe).

    Raises InstancesBusy when another active operation holds an instance; the caller must then roll back (a
    savepoint), so approvals and claims commit together or not at all.
    """
    if not operation_ids:
        return []
    moved = sorted(
        session.scalars(
            update(Operation)
            .where(
                Operation.id.in_(list(operation_ids)),
                Operation.state.in_([s.value for s in OPEN_STATES]),
                Operation.expires_at > db_time(),
            )
            .values(state=State.APPROVED.value, updated_at=db_time(), decided_by=by, decided_at=db_time())
            .returning(Operation.id)
            .execution_options(synchronize_session=False)
        )
    )
    if moved:
        claim_instances(session, moved)
        owe(session, moved, TOLD[State.APPROVED], after=edit_after)
        runs.on_approved(session, moved)
        audit.record_many(session, [audit.entry("request_approved", actor=by, request_id=i) for i in moved])
    return moved


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


# record()'s three statements, built once (building a statement costs more than running it): the operation with the
# database's time and its parent's message, its instances, its runs. populate_existing: a session that changed the
# rows with bulk UPDATEs reads them as they are now.
_PARENT = aliased(Operation)
_HEAD = (
    select(Operation, db_time(), select(_PARENT.message_ts).where(_PARENT.id == Operation.parent_id).scalar_subquery())
    .where(Operation.id == bindparam("operation_id"))
    .execution_options(populate_existing=True)
)
_INSTANCES = (
    select(OperationInstance)
    .where(OperationInstance.request_id == bindparam("operation_id"))
    .order_by(OperationInstance.id)
    .execution_options(populate_existing=True)
)
_RUNS = (
    select(Run)
    .where(or_(Run.request_id == bindparam("operation_id"), Run.stop_request_id == bindparam("operation_id")))
    .order_by(Run.id)
    .execution_options(populate_existing=True)
)


def record(session: Session, operation_id: int) -> OperationRecord | None:
    """Read an operation with its instances and runs into a read model (None when there is no such operation)."""
    key = {"operation_id": operation_id}
    found = session.execute(_HEAD, key).one_or_none()
    if found is None:
        return None
    row, now, parent_ts = found
    now = as_utc(now)
    instances = session.scalars(_INSTANCES, key).all()
    its_runs = tuple(run_of(r, now) for r in session.scalars(_RUNS, key))
    return record_of(row, now, its_runs, parent_ts, instances)


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
