"""The start-request lifecycle: every state change is one compare-and-set UPDATE, safe across threads and replicas."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session, selectinload

from bot.db.models import RequestInstance, StartRequest
from bot.domain import audit
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
    return result.rowcount == 1  # type: ignore[attr-defined]


def approve(session: Session, request_id: int, *, by: str, now: datetime) -> bool:
    """Approve a pending, unexpired request; True iff this call approved it."""
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
        audit.record(session, "request_approved", actor=by, request_id=request_id)
    return ok


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


def _lease_free(owner: str, now: datetime) -> ColumnElement[bool]:
    """SQL condition: nobody else holds a live lease on the request."""
    return or_(StartRequest.lease_until.is_(None), StartRequest.lease_until < now, StartRequest.lease_owner == owner)


def claim_active(
    session: Session,
    *,
    owner: str,
    now: datetime,
    lease_seconds: float,
    states: Iterable[State | str] = ACTIVE_STATES,
    limit: int = 500,
) -> list[int]:
    """Take or renew the lease on requests in `states` that no other live owner holds; return their ids."""
    wanted = [s.value for s in _states(states)]
    candidates = list(
        session.scalars(
            select(StartRequest.id)
            .where(StartRequest.state.in_(wanted), _lease_free(owner, now))
            .order_by(StartRequest.id)
            .limit(limit)
        )
    )
    if not candidates:
        return []
    # The conditions are repeated in the UPDATE: that is the compare-and-set. A row another owner took since the
    # SELECT no longer matches (PostgreSQL re-checks it after the row lock; SQLite writers are serialised).
    statement = (
        update(StartRequest)
        .where(StartRequest.id.in_(candidates), StartRequest.state.in_(wanted), _lease_free(owner, now))
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    if session.get_bind().dialect.update_returning:
        claimed = sorted(session.execute(statement.returning(StartRequest.id)).scalars())
    else:
        claimed = [
            request_id
            for request_id in candidates
            if session.execute(statement.where(StartRequest.id == request_id)).rowcount == 1  # type: ignore[attr-defined]
        ]
    _forget(session, candidates)
    return claimed


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
