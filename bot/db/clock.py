"""The database's clock, in SQL: every deadline is computed and compared by the database, never by a replica.

Replicas' own clocks drift and skew; the database server has one clock for all of them. On PostgreSQL that is
`statement_timestamp()`: the server's time when the statement began, the same for every use within it (so a row's
created_at and its deadline are exactly the TTL apart), and new for every statement. SQLite has no server: every
process reads the host's clock, which all processes sharing one SQLite file share (SQLite is one host by
construction), so the same SQL is right there too.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, cast, literal, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from bot.db.models import UtcDateTime

log = logging.getLogger(__name__)

# A replica whose clock is further than this from the database's is worth a warning: nothing it decides depends on
# its own clock, but its logs' times, and anything outside vm-bot on that host, are off by that much.
WARN_OFFSET_SECONDS = 2.0

# The text format SQLAlchemy stores datetimes in on SQLite (microseconds; SQLite's clock gives milliseconds).
_SQLITE_FORMAT = "'%Y-%m-%d %H:%M:%f000'"


Offset = float | ColumnElement[Any] | QueryableAttribute[Any]


def _seconds(offset: Offset) -> ColumnElement[float]:
    """An offset in seconds as an SQL float (a number becomes a bound parameter)."""
    amount = literal(float(offset), Float()) if isinstance(offset, int | float) else offset
    return cast(amount, Float())


class db_time(FunctionElement[datetime]):
    """The database's current time plus `offset` seconds (a number or an SQL expression), as a UTC datetime."""

    type = UtcDateTime()
    inherit_cache = True

    def __init__(self, offset: Offset = 0.0):
        super().__init__(_seconds(offset))


class db_shift(FunctionElement[datetime]):
    """A stored time (a column) `offset` seconds later (a number or an SQL expression), in the database's format."""

    type = UtcDateTime()
    inherit_cache = True

    def __init__(self, moment: QueryableAttribute[Any] | ColumnElement[Any], offset: Offset):
        super().__init__(moment, _seconds(offset))


class db_epoch(FunctionElement[float]):
    """The database's current time in Unix seconds (a float), for slots kept as numbers."""

    type = Float()
    inherit_cache = True


class db_seconds_between(FunctionElement[float]):
    """Seconds from one stored time (a column) to another, as a float, in SQL."""

    type = Float()
    inherit_cache = True

    def __init__(self, start: QueryableAttribute[Any], end: QueryableAttribute[Any]):
        super().__init__(start, end)


@compiles(db_seconds_between, "postgresql")
def _postgres_between(element: db_seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"extract(epoch from ({end} - {start}))::float8"


@compiles(db_seconds_between, "sqlite")
def _sqlite_between(element: db_seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


@compiles(db_time, "postgresql")
def _postgres_time(element: db_time, compiler: SQLCompiler, **kw: Any) -> str:
    offset = compiler.process(element.clauses, **kw)
    return f"(statement_timestamp() + make_interval(secs => {offset}))"


@compiles(db_time, "sqlite")
def _sqlite_time(element: db_time, compiler: SQLCompiler, **kw: Any) -> str:
    offset = compiler.process(element.clauses, **kw)
    return f"strftime({_SQLITE_FORMAT}, 'now', printf('%+.6f seconds', {offset}))"


@compiles(db_shift, "postgresql")
def _postgres_shift(element: db_shift, compiler: SQLCompiler, **kw: Any) -> str:
    moment, offset = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"({moment} + make_interval(secs => {offset}))"


@compiles(db_shift, "sqlite")
def _sqlite_shift(element: db_shift, compiler: SQLCompiler, **kw: Any) -> str:
    moment, offset = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"strftime({_SQLITE_FORMAT}, {moment}, printf('%+.6f seconds', {offset}))"


@compiles(db_epoch, "postgresql")
def _postgres_epoch(element: db_epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return "extract(epoch from statement_timestamp())::float8"


@compiles(db_epoch, "sqlite")
def _sqlite_epoch(element: db_epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


def as_utc(moment: datetime) -> datetime:
    """Return moment as an aware UTC datetime (what a database clock read gives back)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def replica_offset(session: Session) -> float:
    """Return this process's clock minus the database's, in seconds (positive: the replica is ahead), read once;
    the process's time is taken halfway through the round trip, so the query's latency does not count."""
    before = time.time()
    database = float(session.scalar(select(db_epoch())) or 0.0)
    return (before + time.time()) / 2 - database


class OffsetWatch:
    """Says once in the log when this replica's clock strays more than WARN_OFFSET_SECONDS from the database's, and
    once when it is back within (never once per reading)."""

    def __init__(self) -> None:
        self.astray = False

    def observe(self, offset: float) -> None:
        """Take one reading of replica_offset()."""
        astray = abs(offset) > WARN_OFFSET_SECONDS
        if astray and not self.astray:
            log.warning(
                "this replica's clock is %.1f s %s the database's (more than %.0f s): deadlines are kept by the "
                "database, but fix the host's time (NTP), or its logs and anything else on it keep the wrong time",
                abs(offset),
                "ahead of" if offset > 0 else "behind",
                WARN_OFFSET_SECONDS,
            )
        elif self.astray and not astray:
            log.info(
                "this replica's clock is back within %.0f s of the database's (%+.2f s)", WARN_OFFSET_SECONDS, offset
            )
        self.astray = astray
