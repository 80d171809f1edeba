"""Helpers several benchmarks use: a throwaway PostgreSQL from .ci/postgres.sh, fresh databases on a server, how
much CPU a process has used, and percentiles."""

from __future__ import annotations

import math
import os
import shlex
import statistics
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def throwaway_postgres() -> Iterator[str | None]:
    """Start a throwaway PostgreSQL with .ci/postgres.sh; yield its URL (None without server binaries)."""
    script = ROOT / ".ci" / "postgres.sh"
    out = subprocess.run([str(script)], capture_output=True, text=True, check=True).stdout  # noqa: S603
    values = {}
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0] if value else ""
    url, directory = values.get("VM_BOT_TEST_POSTGRES_URL"), values.get("VM_BOT_TEST_POSTGRES_DIR")
    try:
        yield url
    finally:
        if directory:
            subprocess.run([str(script), "stop", directory], check=False)  # noqa: S603


@contextmanager
def fresh_database(server_url: str, prefix: str = "bench") -> Iterator[str]:
    """Create an empty database on the server at server_url; yield its URL (psycopg 3); drop it afterwards."""
    base = make_url(server_url)
    if base.drivername == "postgresql":
        base = base.set(drivername="postgresql+psycopg")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time a process (all its threads) has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(ordered: Sequence[float], q: float) -> float:
    """Return the nearest-rank q-th percentile (0 < q <= 100) of an ascending sequence."""
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ms(values: Sequence[float]) -> str:
    """Return the p50 and p99 of durations in seconds, in milliseconds."""
    ordered = sorted(values)
    return f"p50 {statistics.median(ordered) * 1000:6.1f} ms  p99 {percentile(ordered, 99) * 1000:6.1f} ms"
