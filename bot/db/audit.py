"""The audit trail: one append-only row per decision or external call."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bot.db.models import AuditEvent
from bot.db.session import Database


def record(
    session: Session,
    event: str,
    *,
    actor: str,
    request_id: int | None = None,
    subject: str | None = None,
    zenlayer_request_id: str | None = None,
    **detail: Any,
) -> None:
    """Add an audit event to the session; detail must be JSON-serialisable and must never hold secrets."""
    # No default= hook: anything json cannot encode (a Secret included) is refused rather than stringified.
    encoded = json.dumps(detail, sort_keys=True, ensure_ascii=False, allow_nan=False)
    session.add(
        AuditEvent(
            event=event,
            actor=actor,
            request_id=request_id,
            subject=subject,
            zenlayer_request_id=zenlayer_request_id,
            detail=encoded,
        )
    )


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


def latest(session: Session, *, limit: int = 50, user: str | None = None) -> list[AuditEvent]:
    """Return the newest events first; `user` keeps those where that user is the actor or the subject."""
    query = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(max(limit, 0))
    if user is not None:
        query = query.where(or_(AuditEvent.actor == user, AuditEvent.subject == user))
    return list(session.scalars(query))
