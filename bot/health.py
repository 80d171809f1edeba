"""Liveness and readiness: what /healthz and /readyz answer, and the gauges read from the database."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from bot.db.models import Operation, OperationInstance
from bot.db.session import Database
from bot.delivery import outbox
from bot.operations import run_numbers
from bot.operations.states import ACTIVE_STATES

MIN_TICK_AGE_SECONDS = 60.0


@dataclass(frozen=True)
class Readiness:
    """Whether this process can serve, and if not, why."""

    ready: bool
    reason: str


class Health:
    """Tracks the watcher's ticks (the engine's loop) and probes the database for /readyz."""

    def __init__(self, db: Database, head_revision: str | None, poll_interval_seconds: float):
        self.db = db
        self.head = head_revision
        # A tick polls Zenlayer and posts to Slack; allow a few slow ones before calling the watcher stuck.
        self.max_tick_age = max(MIN_TICK_AGE_SECONDS, 5 * poll_interval_seconds)
        self._last_tick: float | None = None
        self._lock = threading.Lock()

    def ticked(self, seconds: float) -> None:
        """Note that the watcher finished a tick just now."""
        with self._lock:
            self._last_tick = time.monotonic()

    def readiness(self) -> Readiness:
        """Check the database is reachable and writable at the head revision, and the watcher ticked lately."""
        problem = database_problem(self.db, self.head)
        if problem:
            return Readiness(False, problem)
        with self._lock:
            last = self._last_tick
        if last is None:
            return Readiness(False, "the watcher has not finished a tick yet")
        age = time.monotonic() - last
        if age > self.max_tick_age:
            return Readiness(False, f"the watcher last ticked {age:.0f} s ago (limit {self.max_tick_age:.0f} s)")
        return Readiness(True, "ready")


def database_problem(db: Database, head: str | None) -> str | None:
    """Return why the database cannot serve (unreachable, not at head, not writable), or None when it can."""
    try:
        # The bot's own write path (its writer pool, its write turn, a commit), not a side door that could differ.
        with db.session() as session:
            current = session.scalar(text("SELECT version_num FROM alembic_version"))
            if current != head:
                return f"the database is at migration {current or 'none'}, not {head}: run `vm-bot db upgrade`"
            # A write that changes nothing, committed: SQLite touches the disk only at commit, so a write rolled back
            # proves nothing (an immutable file, a full disk still "take" it); PostgreSQL refuses it in a read-only
            # transaction mode (a failover replica) at once.
            session.execute(text("UPDATE alembic_version SET version_num = version_num"))
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        return f"the database is not usable: {first_line}"
    return None


def database_gauges(db: Database) -> dict[str, float | dict[str, float]]:
    """Return the gauges that live in the database: instances being watched, messages not yet delivered to Slack,
    and the time-boxed runs' numbers."""
    with db.session(readonly=True) as session:
        watched = session.scalar(
            select(func.count(OperationInstance.id))
            .join(Operation, OperationInstance.request_id == Operation.id)
            .where(
                Operation.state.in_([s.value for s in ACTIVE_STATES]),
                OperationInstance.included.is_(True),
                OperationInstance.outcome.is_(None),
            )
        )
        pending = outbox.pending_count(session)
        numbers = run_numbers.numbers(session)
    return {"vmbot_watched_instances": float(watched or 0), "vmbot_messages_pending": float(pending or 0), **numbers}
