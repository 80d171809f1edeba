"""Workflow Builder steps in SQL: which operation a step opened, and whether the step has been completed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from bot.db.clock import db_time
from bot.db.models import FunctionRun
from bot.db.sql import rowcount


@dataclass(frozen=True)
class StepRecord:
    """The step that opened an operation, as read."""

    request_id: int
    function_execution_id: str
    completed: bool
    outcome: str | None
    error: str | None


@dataclass(frozen=True)
class StepRecorder:
    """Records a step against the operation it opens, in that operation's transaction (an execution id is unique:
    a step opens one operation, once)."""

    function_execution_id: str

    def __call__(self, session: Session, request_id: int) -> None:
        session.execute(
            insert(FunctionRun).values(
                request_id=request_id, function_execution_id=self.function_execution_id, created_at=db_time()
            )
        )


def known(session: Session, function_execution_id: str) -> bool:
    """True when this step execution already opened an operation (Slack delivers an event again if unsure)."""
    return (
        session.scalar(select(FunctionRun.request_id).where(FunctionRun.function_execution_id == function_execution_id))
        is not None
    )


def of(session: Session, request_id: int) -> StepRecord | None:
    """Return the step that opened an operation (None when no step did)."""
    row = session.get(FunctionRun, request_id)
    if row is None:
        return None
    return StepRecord(row.request_id, row.function_execution_id, row.completed_at is not None, row.outcome, row.error)


def complete(session: Session, request_id: int, *, outcome: str, error: str | None = None) -> bool:
    """Record the step completed (success or error, with its sentence); True iff this call did (once only)."""
    done = session.execute(
        update(FunctionRun)
        .where(FunctionRun.request_id == request_id, FunctionRun.completed_at.is_(None))
        .values(completed_at=db_time(), outcome=outcome, error=error)
        .execution_options(synchronize_session=False)
    )
    return rowcount(done) == 1
