"""What Slack was told about an operation, recorded with the outbox row that told it (one transaction)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from bot.db import audit
from bot.db.clock import db_time
from bot.db.lease import Owner
from bot.db.models import Operation, OperationInstance
from bot.db.session import Database
from bot.db.sql import rowcount, table_of
from bot.delivery import outbox, surfaces
from bot.domain.vocabulary import SYSTEM_ACTOR
from bot.operations import repository
from bot.operations.records import OperationRecord

# Built once (the sender runs it for every outcome it tells): the outcome counts as told once, on the database's clock.
_OPERATIONS = table_of(Operation)
_TOLD = (
    update(_OPERATIONS)
    .where(_OPERATIONS.c.id == bindparam("operation_id"), _OPERATIONS.c.outcome_posted_at.is_(None))
    .values(outcome_posted_at=db_time())
)


def finish(
    db: Database,
    row: outbox.Claimed,
    operation: OperationRecord | None,
    *,
    owner: Owner,
    sent: bool,
    error: str | None = None,
    shown: Mapping[int, str | None] | None = None,
    tells_outcome: bool = False,
    message_ts: str | None = None,
) -> bool:
    """Complete an outbox row and record what it told, atomically; True iff the operation's outcome counts as told
    now (its `finished` audit event written by this call)."""
    with db.session(urgent=tells_outcome) as session:
        outbox.complete(session, row, owner=owner, error=error, sent=sent)
        if operation is None:
            return False
        if message_ts is not None:
            repository.attach_message(session, operation.id, message_ts)
            surfaces.enqueue_homes(session, surfaces.people_of(session, [operation.id]))  # a thread to link to now
        if sent and shown:  # shown, or refused for good: either way not to be told again
            session.execute(
                update(OperationInstance).execution_options(synchronize_session=False),
                [{"id": row_id, "reported_status": status} for row_id, status in shown.items()],
            )
        return tells_outcome and _mark_told(session, operation, error)


def _mark_told(session: Session, operation: OperationRecord, delivery_error: str | None) -> bool:
    """Record that an operation's outcome was told (or can never be), with its `finished` audit event."""
    result = session.execute(_TOLD, {"operation_id": operation.id})
    if rowcount(result) != 1:
        return False
    audit.record(
        session,
        "finished",
        actor=SYSTEM_ACTOR,
        request_id=operation.id,
        outcome=operation.state.value,
        instances={i.instance_id: (i.outcome.value if i.outcome else i.skip_reason) for i in operation.instances},
        **({"delivery_error": delivery_error} if delivery_error else {}),
    )
    return True


def forget_notify(db: Database, row_id: int) -> None:
    """The person to tell was told (a decision's edit failed once): do not tell them again."""
    with db.session() as session:
        outbox.forget_notify(session, row_id)
