"""Engine and session factory: SQLite tuned for several concurrent writers, anything else left as SQLAlchemy has it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, Executable, Row, create_engine, event
from sqlalchemy.engine import Connection, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 15_000
# A PostgreSQL that takes the connection and never answers (a dead host behind a live proxy) fails a connect after
# this long, unless DATABASE_URL says otherwise (?connect_timeout=N): libpq's default is to wait for ever.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10
# Connections for read-only sessions, apart from the writers' pool: at least one per thread that acknowledges Slack
# (waitress's 16), so an acknowledgement never queues for a connection.
READ_POOL_SIZE = 16
READ_POOL_OVERFLOW = 16
# Connections for read(): its callers (the grant cache's shared reads) run one or two statements at a time.
STATEMENT_POOL = {"pool_size": 2, "max_overflow": 8}
# Execution option of reading(): a single read statement, which SQLite runs in its own implicit transaction.
_SINGLE_STATEMENT = "vm_bot_single_statement"


def is_sqlite(url: str) -> bool:
    """Return True when url points at an SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


# Long on purpose: the engine and the connection hooks it needs, which must be registered where it is made.
def make_engine(url: str, *, foreign_keys: bool = True, readonly: bool = False, **engine_kwargs: Any) -> Engine:
    """Create an engine for url; on SQLite enable WAL, foreign keys, a busy timeout and BEGIN IMMEDIATE.

    `readonly=True` makes every connection read-only (a write fails at once) and, on SQLite, begins with a plain
    BEGIN, which never waits for the write lock: in WAL mode readers do not block on writers.
    """
    # A database error must never write bound values (a clicker's response_url, say) into the log.
    engine_kwargs.setdefault("hide_parameters", True)
    if not is_sqlite(url):
        engine_kwargs.setdefault("pool_pre_ping", True)
        if "connect_timeout" not in make_url(url).query:
            engine_kwargs["connect_args"] = {
                "connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS,
                **engine_kwargs.get("connect_args", {}),
            }
        engine = create_engine(url, **engine_kwargs)
        if not readonly:
            event.listen(engine, "handle_error", _drop_read_only_connection)
            event.listen(engine, "connect", _durable_commits)
        if readonly:

            @event.listens_for(engine, "connect")
            def _read_only(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                finally:
                    cursor.close()
                dbapi_connection.commit()

        return engine

    connect_args = dict(engine_kwargs.pop("connect_args", {}))
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    engine = create_engine(url, connect_args=connect_args, **engine_kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from pysqlite (it defers it to the first write), so that SQLAlchemy's "begin" below
        # decides when and how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            # Switching the journal mode needs an exclusive lock; only ask when it is not WAL already.
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() not in ("wal", "memory"):
                cursor.execute("PRAGMA journal_mode = WAL")
            # A commit is on disk when it returns, even through a power cut: an acknowledged click must survive
            # any crash. NORMAL would survive only a process crash; with clicks committed in batches (group
            # commit) the fsync is one per batch, too little to trade that for. Set, not left to the build.
            cursor.execute("PRAGMA synchronous = FULL")
            if readonly:
                cursor.execute("PRAGMA query_only = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with "database is locked" when another
        # writer got in first (the busy handler cannot help a stale WAL snapshot). Taking the write lock at BEGIN
        # makes concurrent writers queue on busy_timeout instead.
        if connection.get_execution_options().get(_SINGLE_STATEMENT):
            return  # one read statement is its own consistent snapshot: an explicit BEGIN would only cost time
        connection.exec_driver_sql("BEGIN DEFERRED" if readonly else "BEGIN IMMEDIATE")

    return engine


def _durable_commits(dbapi_connection: Any, _record: Any) -> None:
    """On a PostgreSQL writer connection: make every commit durable, whatever the server's default says."""
    # Intent before effect holds only if a commit that returned survives a crash of the server: with
    # synchronous_commit=off, PostgreSQL acknowledges a commit before its WAL is written, and a crash (an OOM kill,
    # an immediate shutdown) loses the last few hundred milliseconds of them: an attempt row gone while its call was
    # made. Only "off" loses acknowledged commits; a stronger setting (remote_apply, ...) is left as it is.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SHOW synchronous_commit")
        if cursor.fetchone()[0] == "off":
            cursor.execute("SET SESSION synchronous_commit = on")
    finally:
        cursor.close()
    dbapi_connection.commit()


def _left(deadline: float | None) -> float:
    """Return the seconds left until deadline for a lock's acquire() (-1: no deadline, wait for ever)."""
    return -1 if deadline is None else max(0.0, deadline - time.monotonic())


@contextmanager
def _busy_timeout(connection: Connection, seconds: float | None) -> Iterator[None]:
    """On an SQLite connection outside a transaction: wait at most `seconds` for the write lock inside the block."""
    if seconds is None:
        yield
        return
    # The driver's own connection: a statement through SQLAlchemy here would begin a transaction first.
    raw = connection.connection.dbapi_connection
    assert raw is not None
    raw.execute(f"PRAGMA busy_timeout = {max(0, round(seconds * 1000))}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


class _WriteTurn:
    """One writer at a time in this process, urgent writers first (SQLite: the database has one write lock).

    A writer kept waiting by SQLite sleeps in growing steps (up to 100 ms) before it retries; queueing here hands
    the lock over at once. Urgent writers (a click decided before Slack's 3 s acknowledgement) go before
    background ones (the watcher), which wait while any urgent writer does.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._urgent_waiting = 0
        self._changed = threading.Condition()
        self._holder: int | None = None

    @contextmanager
    def __call__(self, *, urgent: bool, timeout: float | None = None) -> Iterator[None]:
        """Hold the turn for the block; TimeoutError when it is not this thread's within timeout seconds."""
        nested = self._holder == threading.get_ident()
        deadline = None if timeout is None else time.monotonic() + timeout
        if urgent:
            with self._changed:
                self._urgent_waiting += 1
            try:
                acquired = self._lock.acquire(timeout=_left(deadline))
            finally:
                with self._changed:
                    self._urgent_waiting -= 1
                    self._changed.notify_all()
        else:
            if not nested:  # a thread already holding the turn must not wait for those waiting on it
                with self._changed:
                    self._changed.wait_for(lambda: self._urgent_waiting == 0, timeout=timeout)
            acquired = self._lock.acquire(timeout=_left(deadline))
        if not acquired:
            raise TimeoutError(f"another writer in this process held the write turn for over {timeout} s")
        self._holder = threading.get_ident()
        try:
            yield
        finally:
            if not nested:
                self._holder = None
            self._lock.release()


class Database:
    """Two engines and a session factory: `session()` is one unit of work, `session(readonly=True)` one read."""

    def __init__(
        self,
        url: str,
        *,
        read_pool_size: int = READ_POOL_SIZE,
        before_write: Callable[[], None] | None = None,
        **engine_kwargs: Any,
    ):
        self.url = url
        # Called before every unit of work that may write, outside any transaction (app.py: wait while acking).
        self.before_write = before_write
        self.engine: Engine = make_engine(url, **engine_kwargs)
        # Reads get their own connections: otherwise a read (the grant check before an acknowledgement) queues in
        # the pool behind writers that hold every connection while they wait for SQLite's write lock.
        read_kwargs = {**engine_kwargs, "pool_size": read_pool_size, "max_overflow": READ_POOL_OVERFLOW}
        in_memory = is_sqlite(url) and make_url(url).database in (None, "", ":memory:")
        # An in-memory SQLite database exists only inside its own connections: it cannot have a second engine.
        self.read_engine: Engine = self.engine if in_memory else make_engine(url, readonly=True, **read_kwargs)
        # read() runs one idempotent statement and retries it once on a dropped connection, so its connections
        # need no ping before each use (a round trip, on the path of a refusal in an ack). SQLite pings nothing.
        self._statement_engine = (
            self.read_engine
            if is_sqlite(url)
            else make_engine(url, readonly=True, **{**engine_kwargs, "pool_pre_ping": False, **STATEMENT_POOL})
        )
        self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._readonly_sessions = sessionmaker(bind=self.read_engine, expire_on_commit=False)
        # Other processes on the same SQLite file still queue on busy_timeout.
        self._write_turn = _WriteTurn() if is_sqlite(url) else None
        # Called after a transaction that named their topic in Session.info["topics"] commits (e.g. "outbox").
        self._listeners: dict[str, list[Callable[[], None]]] = {}

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string(hide_password=True)!r})"

    @contextmanager
    def session(self, *, readonly: bool = False, urgent: bool = False) -> Iterator[Session]:
        """Yield a session that commits on success and rolls back on an exception.

        `readonly=True` is for sessions that never write (a write in them fails): they use their own pool of
        read-only connections and never wait for a writer, neither for the write lock nor for a connection.
        `urgent=True` lets a write someone is waiting for (a click) go before background writes, on SQLite, and
        past `before_write` (an urgent write is part of an acknowledgement).
        """
        factory = self._readonly_sessions if readonly else self._sessions
        if not readonly and not urgent and self.before_write is not None:
            self.before_write()
        turn: AbstractContextManager[None] = (
            nullcontext() if readonly or self._write_turn is None else self._write_turn(urgent=urgent)
        )
        with turn, factory() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.info.pop("topics", None)
                session.rollback()
                raise
        for topic in session.info.pop("topics", ()):
            for callback in list(self._listeners.get(topic, ())):
                callback()

    def listen(self, topic: str, callback: Callable[[], None]) -> None:
        """Call callback after every committed transaction that names topic (domain code marks it in the session)."""
        self._listeners.setdefault(topic, []).append(callback)

    def unlisten(self, topic: str, callback: Callable[[], None]) -> None:
        """Stop calling callback for topic."""
        callbacks = self._listeners.get(topic, [])
        if callback in callbacks:
            callbacks.remove(callback)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """Yield a read-only connection for one statement: session(readonly=True) without the ORM's overhead."""
        with self.read_engine.connect() as connection:
            # No transaction around one statement: on PostgreSQL that saves the BEGIN and ROLLBACK round trips.
            connection.execution_options(isolation_level="AUTOCOMMIT", **{_SINGLE_STATEMENT: True})
            yield connection

    @contextmanager
    def writing(self, *, urgent: bool = False, lock_wait_seconds: float | None = None) -> Iterator[Connection]:
        """Yield a connection for one writing statement, committed by the time the block ends.

        On PostgreSQL the statement is its own transaction (autocommit): no BEGIN and COMMIT round trips. On SQLite
        the block is one BEGIN IMMEDIATE transaction, taken in this process's write turn, because SQLAlchemy runs an
        executemany with ordered RETURNING there row by row, and one commit must cover every row; there
        `lock_wait_seconds` bounds the wait for the write lock, this process's turn and SQLite's lock together
        (TimeoutError, or the driver's "database is locked"), instead of SQLITE_BUSY_TIMEOUT_MS for SQLite's.
        """
        if not urgent and self.before_write is not None:
            self.before_write()
        if self._write_turn is None:
            with self.engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT", **{_SINGLE_STATEMENT: True})
                yield connection
            return
        deadline = None if lock_wait_seconds is None else time.monotonic() + lock_wait_seconds
        with (
            self._write_turn(urgent=urgent, timeout=lock_wait_seconds),
            self.engine.connect() as connection,
            _busy_timeout(connection, None if deadline is None else _left(deadline)),
            connection.begin(),
        ):
            yield connection

    def read(self, statement: Executable) -> Sequence[Row[Any]]:
        """Run one read statement in its own implicit transaction and return its rows; retried once if the
        connection turns out to be dead (a database restart), since a read can safely run twice."""
        for attempt in (1, 2):
            try:
                with self._statement_engine.connect() as connection:
                    connection.execution_options(isolation_level="AUTOCOMMIT", **{_SINGLE_STATEMENT: True})
                    return connection.execute(statement).all()
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
        if self._statement_engine is not self.read_engine:
            self._statement_engine.dispose()


# SQLSTATE read_only_sql_transaction: a write refused by a server in recovery or a database made read-only.
READ_ONLY_SQL_TRANSACTION = "25006"


def _drop_read_only_connection(context: ExceptionContext) -> None:
    """Treat a write refused as read-only like a lost connection: the pool replaces it (and its siblings).

    PostgreSQL fixes a session's default_transaction_read_only when it connects, so a connection opened while the
    database was read-only (a failover replica, `ALTER DATABASE … SET default_transaction_read_only`) would refuse
    every write forever, even once the database takes writes again.
    """
    if getattr(context.original_exception, "sqlstate", None) == READ_ONLY_SQL_TRANSACTION:
        context.is_disconnect = True
