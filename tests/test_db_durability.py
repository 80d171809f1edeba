"""A commit vm-bot saw return survives a crash of PostgreSQL, even on a server that defaults to asynchronous commits.

Intent before effect rests on it: the attempt row is committed, then the call is made. The chaos check once counted
22 StartInstances calls and 21 attempt rows after a PostgreSQL restart: its test cluster ran with
synchronous_commit=off, which acknowledges a commit before writing it, and the crash took the row with it.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bot.db.session import Database

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "postgres.sh"
DEADLINE_SECONDS = 30.0


@pytest.fixture
def cluster() -> Iterator[tuple[str, str]]:
    """A throwaway PostgreSQL of our own (it gets restarted): its URL and directory."""
    out = subprocess.run([str(SCRIPT)], capture_output=True, text=True, check=True, timeout=120).stdout
    values = {}
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0] if value else ""
    url, directory = values.get("VM_BOT_TEST_POSTGRES_URL"), values.get("VM_BOT_TEST_POSTGRES_DIR")
    if not url or not directory:
        pytest.skip("no PostgreSQL server binaries (.ci/postgres.sh)")
    try:
        yield url, directory
    finally:
        subprocess.run([str(SCRIPT), "stop", directory], check=False, timeout=60)


def _until_reachable(db: Database) -> None:
    """Wait (with a deadline) until the restarted server takes a query again."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        try:
            with db.session(readonly=True) as session:
                session.execute(text("SELECT 1"))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_commits_that_returned_survive_a_crash_of_a_server_set_to_asynchronous_commits(
    cluster: tuple[str, str],
) -> None:
    url, directory = cluster
    db = Database(url)
    try:
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("ALTER SYSTEM SET synchronous_commit = off"))
            connection.execute(text("SELECT pg_reload_conf()"))
            connection.execute(text("CREATE TABLE intents (id integer PRIMARY KEY)"))
            assert connection.scalar(text("SELECT current_setting('synchronous_commit')")) == "off"
        admin.dispose()
        with db.session() as session:
            assert session.scalar(text("SELECT current_setting('synchronous_commit')")) == "on"

        for crash in range(2):
            committed: list[int] = []

            def write(start: int, into: list[int] = committed) -> None:
                """Commit one row at a time through the bot's write path until the server goes away."""
                try:
                    for n in range(start, start + 1_000_000):
                        with db.session() as session:
                            session.execute(text("INSERT INTO intents (id) VALUES (:n)"), {"n": n})
                        into.append(n)
                except Exception:
                    return

            writer = threading.Thread(target=write, args=(crash * 1_000_000,))
            writer.start()
            time.sleep(0.7)
            subprocess.run([str(SCRIPT), "restart", directory], check=True, timeout=60)
            writer.join(DEADLINE_SECONDS)
            assert not writer.is_alive()
            _until_reachable(db)
            with db.session(readonly=True) as session:
                present = set(session.scalars(text("SELECT id FROM intents")))
            lost = [n for n in committed if n not in present]
            assert committed and not lost, f"crash {crash + 1}: {len(lost)} of {len(committed)} commits lost"
    finally:
        db.close()
