"""The start-request lifecycle: every state change is one compare-and-set UPDATE, safe across threads and replicas."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from bot.db.models import InstanceClaim, RequestInstance, StartRequest
from bot.domain import audit, outbox
from bot.domain.errors import InvalidInput
from bot.domain.ids import is_instance_id
from bot.domain.vocabulary import SYSTEM_ACTOR


class State(StrEnum):
    """Where a start request is in its life."""

    PENDING = "pending"
    APPROVED = "approved"
    STARTING = "starting"
    WATCHING = "watching"
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


OPEN_STATES: tuple[State, ...] = (State.PENDING,)
ACTIVE_STATES: tuple[State, ...] = (State.APPROVED, State.STARTING, State.WATCHING)
FINAL_STATES: tuple[State, ...] = (State.DONE, State.FAILED, State.TIMED_OUT, State.CANCELLED, State.EXPIRED)
# Final states whose outcome is told in the thread (a cancel is shown by the click itself).
REPORTED_FINAL_STATES: tuple[State, ...] = (State.DONE, State.FAILED, State.TIMED_OUT, State.EXPIRED)


@dataclass(frozen=True)
class Holder:
    """The active request that holds an instance: enough for the Slack layer to link to its thread."""

    request_id: int
    channel_id: str
    message_ts: str | None


class InstancesBusy(Exception):
    """Approval lost: other active requests hold some of the instances (raised inside the approving transaction)."""

    def __init__(self, holders: dict[str, Holder]):
        self.holders = holders
        super().__init__("held by other requests: " + ", ".join(sorted(holders)))


# Columns transition() may set besides state and updated_at.
_SETTABLE = frozenset(StartRequest.__table__.columns.keys()) - {"id", "state", "updated_at"}


@dataclass
class NewInstance:
    """One instance to record in a new request, as looked up before asking for confirmation."""

    instance_id: str
    name: str | None = None
    zone: str | None = None
    status: str | None = None
    to_start: bool = True
    skip_reason: str | None = None


def create_request(
    session: Session,
    *,
    requester_id: str,
    channel_id: str,
    instances: Sequence[NewInstance],
    needs_approval: bool,
    ttl_seconds: float,
    now: datetime,
) -> StartRequest:
    """Record a pending request with its instances, expiring ttl_seconds from now, and audit it."""
    if not instances:
        raise InvalidInput("a start request needs at least one instance")
    bad = [i.instance_id for i in instances if not is_instance_id(i.instance_id)]
    if bad:
        raise InvalidInput(f"not instance ids: {', '.join(repr(b) for b in bad[:10])}")
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
    first_mention: dict[str, NewInstance] = {}
    for instance in instances:
        first_mention.setdefault(instance.instance_id, instance)
    unique = list(first_mention.values())

    request = StartRequest(
        requester_id=requester_id,
        channel_id=channel_id,
        state=State.PENDING.value,
        needs_approval=needs_approval,
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
        instances=[
            RequestInstance(
                instance_id=i.instance_id,
                name=_fit(i.name, "name"),
                zone=_fit(i.zone, "zone"),
                initial_status=_fit(i.status, "initial_status"),
                last_status=_fit(i.status, "last_status"),
                to_start=i.to_start,
                skip_reason=_fit(i.skip_reason, "skip_reason"),
            )
            for i in unique
        ],
    )
    session.add(request)
    session.flush()
    audit.record(
        session,
        "request_created",
        actor=requester_id,
        request_id=request.id,
        channel=channel_id,
        needs_approval=needs_approval,
        to_start=[i.instance_id for i in unique if i.to_start],
        skipped={i.instance_id: i.skip_reason for i in unique if not i.to_start},
        expires_at=request.expires_at.isoformat(),
    )
    return request


def _fit(value: str | None, column: str) -> str | None:
    """Shorten what Zenlayer returned to its column's length (ending in an ellipsis), so no name can refuse a row."""
    length = RequestInstance.__table__.c[column].type.length  # type: ignore[attr-defined]
    if value is None or len(value) <= length:
        return value
    return value[: length - 1] + "…"


def _states(states: State | str | Iterable[State | str]) -> tuple[State, ...]:
    """Normalise one state or several to a tuple of States (a lone string is one state, not characters)."""
    if isinstance(states, str):
        return (State(states),)
    return tuple(State(s) for s in states)


def _forget(session: Session, request_ids: Iterable[int]) -> None:
    """Expire cached StartRequest objects so the next access reloads what the database now holds."""
    for request_id in request_ids:
        cached = session.identity_map.get(Session.identity_key(StartRequest, request_id))
        if cached is not None:
            session.expire(cached)


def transition(
    session: Session,
    request_id: int,
    *,
    from_states: State | str | Iterable[State | str],
    to: State | str,
    now: datetime,
    unexpired: bool = False,
    **values: Any,
) -> bool:
    """Move a request to `to` iff it is in one of from_states (and unexpired, if asked); True iff this call did it."""
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

    statement = update(StartRequest).where(
        StartRequest.id == request_id, StartRequest.state.in_([s.value for s in sources])
    )
    if unexpired:
        statement = statement.where(StartRequest.expires_at > now)
    statement = statement.values(state=target.value, updated_at=now, **values)
    # The WHERE clause is the compare-and-set; "evaluate" would judge it against possibly stale objects in memory.
    result = session.execute(statement.execution_options(synchronize_session=False))
    _forget(session, [request_id])
    moved = result.rowcount == 1  # type: ignore[attr-defined]
    if moved and target in FINAL_STATES:
        release_claims(session, request_id)
    if moved and target not in sources:
        # What users see changes with the state: the message saying so is owed in this same transaction.
        outbox.enqueue(session, request_id, _TOLD.get(target, ()), now=now)
    return moved


def transition_many(
    session: Session, request_ids: Sequence[int], *, from_state: State, to: State, now: datetime
) -> list[int]:
    """Move every request among request_ids still in from_state to `to` (a final state, with finished_at) in one
    compare-and-set UPDATE, release their claims and enqueue what their move owes Slack; return the ids moved."""
    if not request_ids:
        return []
    if to not in FINAL_STATES or from_state in FINAL_STATES:
        raise ValueError(f"transition_many moves to a final state, not {from_state.value} to {to.value}")
    moved = list(
        session.scalars(
            update(StartRequest)
            .where(StartRequest.id.in_(list(request_ids)), StartRequest.state == from_state.value)
            .values(state=to.value, updated_at=now, finished_at=now)
            .returning(StartRequest.id)
            .execution_options(synchronize_session=False)
        )
    )
    if moved:
        _forget(session, moved)
        session.execute(
            delete(InstanceClaim)
            .where(InstanceClaim.request_id.in_(moved))
            .execution_options(synchronize_session=False)
        )
        outbox.enqueue_many(session, sorted(moved), _TOLD.get(to, ()), now=now)
    return moved


# The messages a move to a state owes (the sender renders them from the database when it sends them).
_TOLD: dict[State, tuple[outbox.Kind, ...]] = {
    State.APPROVED: (outbox.Kind.REFRESH,),
    # WATCHING: the first change a poll sees owes the first reply ("Start requested", with that status) and an edit.
    State.DONE: (outbox.Kind.FINAL, outbox.Kind.REFRESH),
    State.FAILED: (outbox.Kind.FINAL, outbox.Kind.REFRESH),
    State.TIMED_OUT: (outbox.Kind.FINAL, outbox.Kind.REFRESH),
    State.CANCELLED: (outbox.Kind.REFRESH,),
    State.EXPIRED: (outbox.Kind.FINAL, outbox.Kind.REFRESH),  # no reply for an expiry: FINAL only marks it told
}


def approve(session: Session, request_id: int, *, by: str, now: datetime) -> bool:
    """Approve a pending, unexpired request and claim its instances; True iff this call approved it.

    Raises InstancesBusy when another active request holds an instance; the caller must then roll back
    (decide() runs this in a savepoint), so the approval and the claims commit together or not at all.
    """
    ok = transition(
        session,
        request_id,
        from_states=OPEN_STATES,
        to=State.APPROVED,
        now=now,
        unexpired=True,
        decided_by=by,
        decided_at=now,
    )
    if ok:
        claim_instances(session, request_id, now=now)
        audit.record(session, "request_approved", actor=by, request_id=request_id)
    return ok


def claim_instances(session: Session, request_id: int, *, now: datetime) -> None:
    """Insert one claim per instance the request will start; raise InstancesBusy if another request holds one.

    The primary key on active_instance_claims.instance_id is the rule; ON CONFLICT DO NOTHING makes a concurrent
    claimer wait for the holder's transaction and then see its row. Sorted ids keep lock order the same for
    everyone, so two overlapping approvals queue instead of deadlocking.
    """
    ids = sorted(
        session.scalars(
            select(RequestInstance.instance_id).where(
                RequestInstance.request_id == request_id,
                RequestInstance.to_start.is_(True),
                RequestInstance.outcome.is_(None),
            )
        )
    )
    if not ids:
        return
    rows = [{"instance_id": i, "request_id": request_id, "claimed_at": now} for i in ids]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(postgresql.insert(InstanceClaim).values(rows).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite.insert(InstanceClaim).values(rows).on_conflict_do_nothing())
    else:  # pragma: no cover - other databases fail loudly on a conflict, which is still safe
        session.execute(insert(InstanceClaim).values(rows))
    held = holders(session, ids, except_request=request_id)
    if held:
        raise InstancesBusy(held)


def holders(session: Session, ids: Sequence[str], *, except_request: int | None = None) -> dict[str, Holder]:
    """Map each id held by an active request (other than except_request) to that request."""
    query = (
        select(InstanceClaim.instance_id, StartRequest.id, StartRequest.channel_id, StartRequest.message_ts)
        .join(StartRequest, InstanceClaim.request_id == StartRequest.id)
        .where(InstanceClaim.instance_id.in_(list(ids)))
    )
    if except_request is not None:
        query = query.where(InstanceClaim.request_id != except_request)
    return {row[0]: Holder(row[1], row[2], row[3]) for row in session.execute(query)}


def release_claims(session: Session, request_id: int, instance_ids: Iterable[str] | None = None) -> None:
    """Let go of a request's claims (all, or on instance_ids once they have an outcome)."""
    statement = delete(InstanceClaim).where(InstanceClaim.request_id == request_id)
    if instance_ids is not None:
        statement = statement.where(InstanceClaim.instance_id.in_(list(instance_ids)))
    session.execute(statement.execution_options(synchronize_session=False))


def lock_requester(session: Session, requester_id: str) -> None:
    """Serialise one user's new requests until the transaction ends (SQLite's BEGIN IMMEDIATE already does)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(zlib.crc32(requester_id.encode()))))


def _close(session: Session, request_id: int, *, by: str, now: datetime, event: str, **detail: Any) -> bool:
    """Move a pending request to cancelled and audit it as event."""
    ok = transition(
        session,
        request_id,
        from_states=OPEN_STATES,
        to=State.CANCELLED,
        now=now,
        decided_by=by,
        decided_at=now,
        finished_at=now,
    )
    if ok:
        audit.record(session, event, actor=by, request_id=request_id, **detail)
    return ok


def cancel(session: Session, request_id: int, *, by: str, now: datetime) -> bool:
    """Cancel a pending request (the requester's Cancel); True iff this call cancelled it."""
    return _close(session, request_id, by=by, now=now, event="request_cancelled")


def reject(session: Session, request_id: int, *, by: str, now: datetime, reason: str | None = None) -> bool:
    """Turn down a pending request (an approver's No); it ends cancelled, audited as rejected."""
    detail = {"reason": reason} if reason else {}
    return _close(session, request_id, by=by, now=now, event="request_rejected", **detail)


def expire_due(session: Session, *, now: datetime) -> list[int]:
    """Expire every pending request whose time is up; return the ids this call expired."""
    due = session.scalars(
        select(StartRequest.id)
        .where(StartRequest.state == State.PENDING.value, StartRequest.expires_at <= now)
        .order_by(StartRequest.id)
    ).all()
    expired: list[int] = []
    for request_id in due:
        if transition(session, request_id, from_states=OPEN_STATES, to=State.EXPIRED, now=now, finished_at=now):
            audit.record(session, "request_expired", actor=SYSTEM_ACTOR, request_id=request_id)
            expired.append(request_id)
    return expired


def get_request(session: Session, request_id: int) -> StartRequest | None:
    """Load a request with its instances, fresh from the database."""
    return session.scalars(
        select(StartRequest)
        .where(StartRequest.id == request_id)
        .options(selectinload(StartRequest.instances))
        .execution_options(populate_existing=True)
    ).one_or_none()


def _needs_work() -> ColumnElement[bool]:
    """SQL condition: the request is active, or ended and its outcome is not yet told in its thread."""
    return or_(
        StartRequest.state.in_([s.value for s in ACTIVE_STATES]),
        and_(
            StartRequest.state.in_([s.value for s in REPORTED_FINAL_STATES]),
            StartRequest.outcome_posted_at.is_(None),
        ),
    )


def _claimable(owner: str, now: datetime) -> ColumnElement[bool]:
    """SQL condition: the request needs work and nobody else holds a live lease on it."""
    return and_(
        _needs_work(),
        or_(StartRequest.lease_until.is_(None), StartRequest.lease_until < now, StartRequest.lease_owner == owner),
    )


def count_lapsed_foreign_leases(session: Session, *, owner: str, now: datetime) -> int:
    """Count requests needing work whose lease another owner let lapse: what a claim now would take over."""
    lapsed = and_(
        _needs_work(),
        StartRequest.lease_owner.is_not(None),
        StartRequest.lease_owner != owner,
        StartRequest.lease_until < now,
    )
    return int(session.scalar(select(func.count(StartRequest.id)).where(lapsed)) or 0)


def claim_work(session: Session, *, owner: str, now: datetime, lease_seconds: float, limit: int = 500) -> list[int]:
    """Take or renew the lease on requests that need work and no other live owner holds; return their ids.

    The one claim used in production. On PostgreSQL the rows are locked with FOR UPDATE SKIP LOCKED, so replicas
    claiming at once split the work instead of queueing; on SQLite the session's BEGIN IMMEDIATE serialises them.
    """
    candidates = list(
        session.scalars(
            select(StartRequest.id)
            .where(_claimable(owner, now))
            .order_by(StartRequest.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # rendered as nothing on SQLite
        )
    )
    if not candidates:
        return []
    session.execute(
        update(StartRequest)
        .where(StartRequest.id.in_(candidates))
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    _forget(session, candidates)
    return candidates


def renew_leases(session: Session, *, owner: str, now: datetime, lease_seconds: float) -> int:
    """Heartbeat: extend every lease owner still holds (a lapsed one another replica took is left alone)."""
    result = session.execute(
        update(StartRequest)
        .where(StartRequest.lease_owner == owner)
        .values(lease_until=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def take_over_predecessor(session: Session, *, replica: str, owner: str, now: datetime, lease_seconds: float) -> int:
    """At start-up, take every lease held by an earlier process of this replica (same identity, other nonce).

    That process is gone (this one replaced it), so its work resumes at once instead of after its lease.
    """
    result = session.execute(
        update(StartRequest)
        .where(
            StartRequest.lease_owner.startswith(f"{replica}/", autoescape=True),
            StartRequest.lease_owner != owner,
            _needs_work(),
        )
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def release_leases(session: Session, *, owner: str, request_ids: Iterable[int] | None = None) -> int:
    """Give up owner's leases (all of them, or on request_ids) so another replica may take over at once."""
    statement = update(StartRequest).where(StartRequest.lease_owner == owner)
    ids = None if request_ids is None else list(request_ids)
    if ids is not None:
        statement = statement.where(StartRequest.id.in_(ids))
    result = session.execute(
        statement.values(lease_owner=None, lease_until=None).execution_options(synchronize_session=False)
    )
    if ids is not None:
        _forget(session, ids)
    else:
        for cached in list(session.identity_map.values()):
            if isinstance(cached, StartRequest):
                session.expire(cached)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
