"""Test helpers: real databases built by running the migrations, on SQLite files and optionally on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.db import migrate
from bot.db.session import Database
from tests.time_travel import travel as travel  # re-exported: the tests import it from here

# e.g. postgresql+psycopg://postgres@127.0.0.1:5432/vmbot_test — each test gets its own schema in that database.
POSTGRES_ENV = "VM_BOT_TEST_POSTGRES_URL"
POSTGRES_URL = os.environ.get(POSTGRES_ENV, "").strip()

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=pytest.mark.skipif(not POSTGRES_URL, reason=f"set {POSTGRES_ENV} to run against PostgreSQL"),
    ),
]

T = TypeVar("T")


def _postgres_base_url() -> Any:
    """Return the configured PostgreSQL URL, defaulting the driver to psycopg 3."""
    url = make_url(POSTGRES_URL)
    return url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url


@contextmanager
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of an empty database: a fresh SQLite file, or a fresh schema on the PostgreSQL server."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'vm-bot.db'}"
        return
    base = _postgres_base_url()
    schema = f"vmbot_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        # search_path puts every table, the alembic_version one included, in the test's own schema.
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def migrated_database(backend: str, tmp_path: Path) -> Iterator[Database]:
    """Yield a Database at the newest migration, closed afterwards."""
    with empty_database_url(backend, tmp_path) as url:
        migrate.upgrade(url)
        database = Database(url)
        try:
            yield database
        finally:
            database.close()


def run_together(count: int, work: Callable[[int], T], *, timeout: float = 60) -> list[T]:
    """Run work(0..count-1) on count threads released at the same moment; return results in index order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def runner(index: int) -> None:
        try:
            barrier.wait(timeout)
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "worker threads did not finish in time"
    if errors:
        raise errors[0]
    return results


def chattr_problem(directory: Path) -> str | None:
    """Return why `chattr +i` cannot make a file in directory immutable (None when it can): it needs a filesystem
    that keeps the flag (ext4, xfs, btrfs; not every tmpfs or overlay) and root (CAP_LINUX_IMMUTABLE)."""
    probe = directory / "chattr-probe"
    probe.write_text("x")
    try:
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return "chattr is not installed"
    if done.returncode != 0:
        return f"chattr +i does not work on {directory}'s filesystem: {done.stderr.strip()}"
    try:
        with probe.open("a") as out:
            out.write("y")
        return f"an immutable file in {directory} still takes writes"
    except OSError:
        return None
    finally:
        subprocess.run(["chattr", "-i", str(probe)], check=False)
        probe.unlink()
