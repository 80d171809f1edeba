"""/readyz tells the truth: a database that cannot take writes turns a replica unready within a probe period, and
ready again once it is repaired — SQLite made immutable, PostgreSQL in a read-only transaction mode (a failover)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.devtools.slack_driver import SlackDriver
from bot.devtools.support import wait_until
from bot.server import RunningBot
from tests.db_support import POSTGRES_ENV, POSTGRES_URL, chattr_problem

# deploy/kubernetes/base/deployment.yaml: the readiness probe's periodSeconds and timeoutSeconds.
PROBE_PERIOD_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 3.0

StartBot = Callable[..., tuple[RunningBot, SlackDriver]]


def _readyz(running: RunningBot) -> httpx.Response:
    """Probe /readyz as the kubelet does: one GET that must answer within the probe's timeout."""
    assert running.http is not None
    return httpx.get(f"{running.http.url}/readyz", timeout=PROBE_TIMEOUT_SECONDS)


def _within_a_probe_period(running: RunningBot, status: int) -> tuple[float, httpx.Response]:
    """Probe until /readyz answers status; return how long that took and the answer."""
    started = time.monotonic()
    answer = wait_until(
        lambda: (r := _readyz(running)).status_code == status and r,
        timeout=PROBE_PERIOD_SECONDS,
        what=f"/readyz to answer {status}",
        interval=0.1,
    )
    return time.monotonic() - started, answer


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Callable[[bool], None]]:
    """Make the bot's SQLite file and its -wal immutable (True) or writable again (False); always undone."""
    reason = chattr_problem(tmp_path)
    if reason is not None:
        pytest.skip(reason)
    files = [str(tmp_path / "vm-bot.db"), str(tmp_path / "vm-bot.db-wal")]

    def make(on: bool) -> None:
        subprocess.run(["chattr", "+i" if on else "-i", *files], check=True)

    try:
        yield make
    finally:
        make(False)  # or pytest could not delete tmp_path


def test_an_immutable_sqlite_file_makes_the_replica_unready_until_it_is_repaired(
    start_bot: StartBot, immutable: Callable[[bool], None], database_url: str
) -> None:
    running, slack = start_bot()
    wait_until(lambda: _readyz(running).status_code == 200, timeout=10, what="the bot to be ready")
    slack.command("help")  # the bot writes to the file it serves from: the -wal exists

    immutable(True)  # as root, chmod would stop nothing
    took, answer = _within_a_probe_period(running, 503)
    assert "not ready: the database is not usable" in answer.text, answer.text
    print(f"SQLite immutable: /readyz said 503 after {took:.2f} s: {answer.text.strip()}")
    assert _readyz(running).status_code == 503  # and keeps saying it

    immutable(False)
    took, answer = _within_a_probe_period(running, 200)
    print(f"SQLite repaired: /readyz said 200 after {took:.2f} s")


@pytest.fixture
def postgres_database() -> Iterator[tuple[str, Callable[[bool], None]]]:
    """A database of its own on the test server (ALTER DATABASE must not touch other tests), and a switch that
    fails it over to read-only and back as a failover does: the setting changes and every session is cut."""
    if not POSTGRES_URL:
        pytest.skip(f"set {POSTGRES_ENV} to run against PostgreSQL")
    base = make_url(POSTGRES_URL)
    base = base.set(drivername="postgresql+psycopg") if base.drivername == "postgresql" else base
    name = f"vmbot_ro_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def read_only(on: bool) -> None:
        with admin.connect() as connection:
            setting = "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
            connection.execute(text(f'ALTER DATABASE "{name}" {setting}'))
            if on:  # a new primary elsewhere: the sessions to this one are cut; reconnecting finds it read-only
                connection.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                    {"name": name},
                )

    try:
        yield base.set(database=name).render_as_string(hide_password=False), read_only
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_read_only_postgresql_makes_the_replica_unready_until_it_is_repaired(
    postgres_database: tuple[str, Callable[[bool], None]], start_bot: StartBot
) -> None:  # the database first: it is dropped only after the bot stopped
    url, read_only = postgres_database
    running, slack = start_bot(DATABASE_URL=url)
    wait_until(lambda: _readyz(running).status_code == 200, timeout=10, what="the bot to be ready")

    read_only(True)
    took, answer = _within_a_probe_period(running, 503)
    assert "read-only transaction" in answer.text, answer.text
    print(f"PostgreSQL read-only: /readyz said 503 after {took:.2f} s: {answer.text.strip()}")

    # Repaired: only the setting changes back; the sessions opened meanwhile are not cut, yet must not stay
    # read-only for good (PostgreSQL fixed their default when they connected).
    read_only(False)
    took, _ = _within_a_probe_period(running, 200)
    print(f"PostgreSQL repaired: /readyz said 200 after {took:.2f} s")
    slack.command("help")
    assert _readyz(running).status_code == 200
