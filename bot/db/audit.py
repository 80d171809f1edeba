"""The audit trail: one append-only row per decision or external call."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, insert, or_, select
from sqlalchemy.orm import Session

from bot.db.models import AuditEvent
from bot.db.session import Database
from bot.db.sql import table_of


def record(session: Session, event: str, *, actor: str, **fields: Any) -> None:
    """Add an audit event to the session (columns and detail as entry() takes them); detail must be
    JSON-serialisable and must never hold secrets."""
    session.add(AuditEvent(**entry(event, actor=actor, **fields)))


def entry(
    event: str,
    *,
    actor: str,
    request_id: int | None = None,
    subject: str | None = None,
    zenlayer_request_id: str | None = None,
    **detail: Any,
) -> dict[str, Any]:
    """Return one audit event's columns (as record() takes them), for record_many()."""
    # No default= hook: anything json cannot encode (a Secret included) is refused rather than stringified.
    encoded = json.dumps(detail, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return {
        "event": event,
        "actor": actor,
        "request_id": request_id,
        "subject": subject,
        "zenlayer_request_id": zenlayer_request_id,
        "detail": encoded,
    }


def record_many(session: Session, entries: Sequence[dict[str, Any]]) -> None:
    """Write several audit events (entry()) in one statement, in the session's transaction."""
    if entries:
        table = table_of(AuditEvent)
        session.execute(insert(table), list(entries))


def write(db: Database, event: str, *, actor: str, **detail: Any) -> None:
    """Write one audit event in a transaction of its own (a refusal stays on record whatever happens next)."""
    with db.session() as session:
        record(session, event, actor=actor, **detail)


def detail_of(event: AuditEvent) -> dict[str, Any]:
    """Return an event's detail as a dict."""
    try:
        value = json.loads(event.detail or "{}")
    except ValueError:
        return {"raw": event.detail}
    return value if isinstance(value, dict) else {"value": value}


@dataclass(frozen=True)
class Window:
    """Which events a reader wants: by or about one user, from `since` (inclusive) to `until` (exclusive)."""

    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[ColumnElement[bool]]:
        """Return the conditions that pick these events."""
        conditions: list[ColumnElement[bool]] = []
        if self.user is not None:
            conditions.append(or_(AuditEvent.actor == self.user, AuditEvent.subject == self.user))
        if self.since is not None:
            conditions.append(AuditEvent.created_at >= self.since)
        if self.until is not None:
            conditions.append(AuditEvent.created_at < self.until)
        return conditions


def latest(
    session: Session, *, limit: int = 50, user: str | None = None, window: Window | None = None
) -> list[AuditEvent]:
    """Return the newest events first; `user` keeps those where that user is the actor or the subject."""
    window = window or Window(user=user)
    query = select(AuditEvent).where(*window.where()).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
    return list(session.scalars(query.limit(max(limit, 0))))


EXPORTED = (
    AuditEvent.id,
    AuditEvent.created_at,
    AuditEvent.actor,
    AuditEvent.event,
    AuditEvent.request_id,
    AuditEvent.subject,
    AuditEvent.zenlayer_request_id,
    AuditEvent.detail,
)
EXPORTED_NAMES = tuple(column.key for column in EXPORTED)


def stream(db: Database, window: Window, *, limit: int | None = None, chunk: int = 1000) -> Iterator[Sequence[Any]]:
    """Yield the window's events oldest first, `chunk` rows in memory at a time (a server-side cursor on PostgreSQL),
    as rows of EXPORTED: constant memory for any number of events."""
    query = select(*EXPORTED).where(*window.where()).order_by(AuditEvent.created_at, AuditEvent.id)
    if limit is not None:
        query = query.limit(limit)
    with db.session(readonly=True) as session:
        yield from session.execute(query.execution_options(yield_per=chunk))
