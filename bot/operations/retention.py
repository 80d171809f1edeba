"""Retention: deleting the rows of finished work once they are old (`vm-bot db prune`, and PRUNE_OLDER_THAN hourly).

What goes, for work older than the cutoff: decided clicks, the Zenlayer calls (completed) and instance rows of
settled operations, delivered messages (whatever their operation, as the sender's own weekly rule has it: nothing
reads a message once it is sent); audit events only when asked. Nothing that something still waits on is touched: an
operation is settled only when it is final, its outcome was told (or needs no telling), no message about it is still
owed and none of its time-boxed runs is still going — pending, approved, starting, watching or untold operations
keep their instances, calls and owed messages, as do undecided clicks, open Zenlayer calls and pending messages. An
operation's own row stays as long as an audit event names it (audit_events.request_id is ON DELETE SET NULL:
deleting the operation would cut the audit trail's link to it), so operations go only with --audit, after their
audit events. Every time here is the database's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from bot.db.clock import db_time
from bot.db.models import AuditEvent, Click, Operation, OperationInstance, OutboxMessage, Run, ZenlayerCall
from bot.db.session import Database
from bot.db.sql import rowcount
from bot.delivery import outbox
from bot.operations import run_numbers
from bot.operations.states import FINAL_STATES, REPORTED_FINAL_STATES

# Rows deleted per statement (and transaction): short enough that acknowledgements never wait long for the lock.
BATCH = 1000
# Less than this is refused: finished work is worth a day's look, and `90m` for `90d` is an easy slip.
MINIMUM_AGE_SECONDS = 86400.0


@dataclass(frozen=True)
class Pruned:
    """How many rows of each table went (or, on a dry run, would go)."""

    clicks: int = 0
    zenlayer_calls: int = 0
    outbox: int = 0
    operation_instances: int = 0
    audit_events: int = 0
    operations: int = 0

    @property
    def total(self) -> int:
        """Return the rows of every table together."""
        return sum(self.counts().values())

    def counts(self) -> dict[str, int]:
        """Return {table: rows}, in the order they are pruned."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _settled(cutoff: ColumnElement[Any]) -> ColumnElement[bool]:
    """Operations whose every row is history: final, told (or not to be told), nothing owed, no run still going
    (a finished start's runs live on; they go with it), finished before cutoff."""
    owed = exists().where(OutboxMessage.request_id == Operation.id, OutboxMessage.pending_key.is_not(None))
    running = exists().where(Run.request_id == Operation.id, Run.ended_at.is_(None))
    return and_(
        Operation.state.in_([s.value for s in FINAL_STATES]),
        or_(
            Operation.outcome_posted_at.is_not(None),
            Operation.state.not_in([s.value for s in REPORTED_FINAL_STATES]),
        ),
        func.coalesce(Operation.finished_at, Operation.updated_at) < cutoff,
        ~owed,
        ~running,
    )


def _doomed(older_than_seconds: float, *, audit: bool) -> list[tuple[str, Any, Select[Any]]]:
    """Return (table, model, ids to delete) in the order they are deleted (outbox apart: see prune)."""
    cutoff = db_time(-older_than_seconds)
    settled = select(Operation.id).where(_settled(cutoff))
    doomed: list[tuple[str, Any, Select[Any]]] = [
        ("clicks", Click, select(Click.id).where(Click.decided_at.is_not(None), Click.created_at < cutoff)),
        (
            "zenlayer_calls",
            ZenlayerCall,
            select(ZenlayerCall.id).where(ZenlayerCall.completed_at.is_not(None), ZenlayerCall.request_id.in_(settled)),
        ),
        (
            "operation_instances",
            OperationInstance,
            select(OperationInstance.id).where(OperationInstance.request_id.in_(settled)),
        ),
    ]
    if audit:
        named = exists().where(AuditEvent.request_id == Operation.id)
        doomed += [
            ("audit_events", AuditEvent, select(AuditEvent.id).where(AuditEvent.created_at < cutoff)),
            # Their instances, calls and messages go with them (ON DELETE CASCADE).
            ("operations", Operation, select(Operation.id).where(_settled(cutoff), ~named)),
        ]
    return doomed


def _outbox_rows(older_than_seconds: float) -> Select[Any]:
    """The delivered (or given up) messages older than that; what outbox.prune deletes."""
    return select(OutboxMessage.id).where(
        OutboxMessage.pending_key.is_(None), OutboxMessage.created_at < db_time(-older_than_seconds)
    )


def prune(
    db: Database,
    older_than_seconds: float,
    *,
    audit: bool = False,
    dry_run: bool = False,
    max_batches: int | None = None,
) -> Pruned:
    """Delete finished work's rows older than that, BATCH rows per transaction (at most max_batches per table);
    with dry_run, only count them. Audit events (and operations' own rows) only with audit=True."""
    if older_than_seconds < MINIMUM_AGE_SECONDS:
        raise ValueError(f"keep at least a day of history, not {older_than_seconds:g} s")
    counts: dict[str, int] = {}
    if dry_run:
        with db.session(readonly=True) as session:
            for name, _model, ids in [
                ("outbox", OutboxMessage, _outbox_rows(older_than_seconds)),
                *_doomed(older_than_seconds, audit=audit),
            ]:
                counts[name] = int(session.scalar(select(func.count()).select_from(ids.subquery())) or 0)
        return Pruned(**counts)
    with db.session() as session:  # kept for a week anyway, so few: one statement, the sender's own
        counts["outbox"] = outbox.prune(session, older_than_seconds=older_than_seconds)
    for name, model, ids in _doomed(older_than_seconds, audit=audit):
        # An operation's runs would go with it (ON DELETE CASCADE): they go first, keeping their metrics' share.
        first = run_numbers.delete_keeping_totals if model is Operation else None
        counts[name] = _delete_in_batches(db, model, ids, max_batches, first)
    return Pruned(**counts)


def _delete_in_batches(
    db: Database,
    model: Any,
    ids: Select[Any],
    max_batches: int | None,
    first: Callable[[Session, Sequence[int]], object] | None = None,
) -> int:
    """Delete the rows ids selects, BATCH at a time, each batch its own transaction (first(session, batch) before
    the batch's delete, in it); return how many went."""
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        with db.session() as session:
            batch = list(session.scalars(ids.order_by(model.id).limit(BATCH)))
            if not batch:
                break
            if first is not None:
                first(session, batch)
            deleted = rowcount(
                session.execute(delete(model).where(model.id.in_(batch)).execution_options(synchronize_session=False))
            )
        total += deleted
        batches += 1
        if len(batch) < BATCH:
            break
    return total
