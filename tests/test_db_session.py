"""The engine and session factory: SQLite settings, commit/rollback, and writers that wait instead of failing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from bot.db.models import Grant
from bot.db.session import Database, make_engine
from tests.db_support import run_together


def _grant(user: str = "U0001", pattern: str = "web-*") -> Grant:
    return Grant(user_id=user, action="start", pattern=pattern, channel_id="*", granted_by="test")


def _count(db: Database) -> int:
    with db.session(readonly=True) as session:
        return session.scalar(select(func.count()).select_from(Grant)) or 0


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 15000
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: commits survive power loss
    finally:
        engine.dispose()


def test_session_commits_on_success_and_rolls_back_on_error(db: Database) -> None:
    with db.session() as session:
        session.add(_grant())
    assert _count(db) == 1

    with pytest.raises(RuntimeError), db.session() as session:
        session.add(_grant(pattern="db-*"))
        session.flush()
        raise RuntimeError("boom")
    assert _count(db) == 1


def test_objects_stay_readable_after_commit(db: Database) -> None:
    with db.session() as session:
        grant = _grant()
        session.add(grant)
    assert grant.pattern == "web-*"  # expire_on_commit=False: no lazy load on a closed session
    assert grant.id is not None


def test_savepoints_roll_back_alone(db: Database) -> None:
    with db.session() as session:
        session.add(_grant(pattern="a"))
        with pytest.raises(RuntimeError), session.begin_nested():
            session.add(_grant(pattern="b"))
            session.flush()
            raise RuntimeError("undo b only")
        session.add(_grant(pattern="c"))
    with db.session(readonly=True) as session:
        assert sorted(session.scalars(select(Grant.pattern))) == ["a", "c"]


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(Exception, match=r"(?i)foreign key"), db.session() as session:
        session.execute(
            text("INSERT INTO operation_instances (request_id, instance_id, included) VALUES (999, 'x', :t)"),
            {"t": True},
        )


def test_read_then_write_transactions_wait_for_each_other(db: Database) -> None:
    # The classic SQLite failure: two transactions read, then both try to write; with a deferred BEGIN the
    # second fails at once with "database is locked". Every writer here must get through.
    with db.session() as session:
        session.add(_grant(user="U0000"))

    def read_then_write(index: int) -> int:
        with db.session() as session:
            seen = session.scalar(select(func.count()).select_from(Grant)) or 0
            session.add(_grant(user=f"U{index + 1:04d}"))
            session.flush()
            return seen

    seen = run_together(12, read_then_write)
    assert _count(db) == 13
    if db.engine.dialect.name == "sqlite":
        assert sorted(seen) == list(range(1, 13))  # BEGIN IMMEDIATE: each writer saw every earlier commit


def test_readonly_sessions_do_not_block_on_a_writer(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        with db.engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with db.session() as writer:
            writer.execute(text("INSERT INTO t VALUES (1)"))  # holds the write lock until the block ends
            started = datetime.now(UTC)
            with db.session(readonly=True) as reader:
                assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0
            assert (datetime.now(UTC) - started).total_seconds() < 5
    finally:
        db.close()


def test_reads_do_not_queue_for_connections_held_by_writers(db: Database) -> None:
    # The grant check before an acknowledgement is a read; writers waiting for SQLite's write lock may hold every
    # connection of their pool, and a read queued behind them would miss Slack's 3 s.
    narrow = Database(db.url, pool_size=1, max_overflow=0, pool_timeout=1)
    try:
        with narrow.session() as writer:
            writer.add(_grant())
            writer.flush()  # the writers' only connection is in use until the block ends
            with narrow.session(readonly=True) as reader:
                assert reader.scalar(select(func.count()).select_from(Grant)) == 0
    finally:
        narrow.close()


def test_readonly_sessions_cannot_write(db: Database) -> None:
    with pytest.raises(Exception, match=r"(?i)read.?only"), db.session(readonly=True) as session:
        session.add(_grant())
        session.flush()
    assert _count(db) == 0


def test_a_read_survives_a_dropped_connection(db: Database) -> None:
    with db.session() as session:
        session.add(_grant())
    assert [r.user_id for r in db.read(select(Grant.user_id))] == ["U0001"]
    if db.engine.dialect.name == "postgresql":
        # A database restart, as the one pooled connection read() uses sees it: its server process is gone.
        pid = db.read(select(func.pg_backend_pid()))[0][0]
        with db.engine.connect() as connection:
            assert connection.execute(select(func.pg_terminate_backend(pid, 5000))).scalar()  # waits until it is gone
    assert [r.user_id for r in db.read(select(Grant.user_id))] == ["U0001"]  # retried once on a new connection
