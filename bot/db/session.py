"""Engine and session factory: SQLite tuned for several concurrent writers, anything else left as SQLAlchemy has it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 15_000

# Execution option carried by read-only sessions: their BEGIN stays DEFERRED so readers never queue behind writers.
_READONLY_OPTION = "vm_bot_readonly"


def is_sqlite(url: str) -> bool:
    """Return True when url points at an SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, foreign_keys: bool = True, **engine_kwargs: Any) -> Engine:
    """Create an engine for url; on SQLite enable WAL, foreign keys, a busy timeout and BEGIN IMMEDIATE."""
    if not is_sqlite(url):
        engine_kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **engine_kwargs)

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
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with "database is locked" when another
        # writer got in first (the busy handler cannot help a stale WAL snapshot). Taking the write lock at BEGIN
        # makes concurrent writers queue on busy_timeout instead.
        if connection.get_execution_options().get(_READONLY_OPTION):
            connection.exec_driver_sql("BEGIN DEFERRED")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


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
    def __call__(self, *, urgent: bool) -> Iterator[None]:
        nested = self._holder == threading.get_ident()
        if urgent:
            with self._changed:
                self._urgent_waiting += 1
            try:
                self._lock.acquire()
            finally:
                with self._changed:
                    self._urgent_waiting -= 1
                    self._changed.notify_all()
        else:
            if not nested:  # a thread already holding the turn must not wait for those waiting on it
                with self._changed:
                    self._changed.wait_for(lambda: self._urgent_waiting == 0)
            self._lock.acquire()
        self._holder = threading.get_ident()
        try:
            yield
        finally:
            if not nested:
                self._holder = None
            self._lock.release()


class Database:
    """An engine plus a session factory; `session()` is one unit of work."""

    def __init__(self, url: str, **engine_kwargs: Any):
        self.url = url
        self.engine: Engine = make_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._readonly_sessions = sessionmaker(
            bind=self.engine.execution_options(**{_READONLY_OPTION: True}), expire_on_commit=False
        )
        # Other processes on the same SQLite file still queue on busy_timeout.
        self._write_turn = _WriteTurn() if is_sqlite(url) else None

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string(hide_password=True)!r})"

    @contextmanager
    def session(self, *, readonly: bool = False, urgent: bool = False) -> Iterator[Session]:
        """Yield a session that commits on success and rolls back on an exception.

        `readonly=True` is for sessions that never write: on SQLite they do not take the write lock (and a
        write in them may fail with "database is locked" under contention); elsewhere it changes nothing.
        `urgent=True` lets a write someone is waiting for (a click) go before background writes, on SQLite.
        """
        factory = self._readonly_sessions if readonly else self._sessions
        turn: AbstractContextManager[None] = (
            nullcontext() if readonly or self._write_turn is None else self._write_turn(urgent=urgent)
        )
        with turn, factory() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
