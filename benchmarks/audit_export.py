"""Measure `vm-bot audit --since … --format json|csv`: rows per second and the exporting process's peak RSS.

Run: ``python benchmarks/audit_export.py [--sizes 10000,100000,1000000] [--formats json,csv] [--postgres]``.
One database holds max(sizes) audit events, one second apart; each export picks the newest N with --since, runs
`vm-bot audit` as a process of its own with stdout to /dev/null, which reports its peak RSS (VmHWM). The
first line is the floor: the same command exporting nothing (the interpreter and vm-bot's imports). Constant
memory means the peak stays near that floor whatever N is. --postgres runs the same against a throwaway
PostgreSQL (.ci/postgres.sh), filled with COPY.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from run_all import throwaway_postgres

from bot.db import migrate

ROOT = Path(__file__).resolve().parent.parent
BASE = datetime(2026, 1, 1, tzinfo=UTC)
DETAIL = json.dumps(
    {
        "action": "start",
        "channel": "C0OPS0001",
        "expires_at": "2026-01-01T00:10:00+00:00",
        "needs_approval": False,
        "skipped": {},
        "to_start": ["1353419258896619812", "2967475717713668498"],
    },
    sort_keys=True,
)


def _rows(count: int) -> Iterator[tuple[object, ...]]:
    """Yield count audit rows, one second apart, as the columns the table has."""
    for i in range(count):
        moment = (BASE + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f")
        yield (moment, f"U0{i % 977:07d}", "request_created", None, None, None, DETAIL)


def fill_sqlite(path: Path, count: int) -> str:
    """Create and migrate an SQLite file holding count events; return its URL."""
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO audit_events (created_at, actor, event, request_id, subject, zenlayer_request_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            _rows(count),
        )
    return url


def fill_postgres(url: str, count: int) -> None:
    """Migrate the PostgreSQL database at url and COPY count events into it."""
    import psycopg

    migrate.upgrade(url)
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as connection, connection.cursor() as cursor:
        columns = "created_at, actor, event, request_id, subject, zenlayer_request_id, detail"
        with cursor.copy(f"COPY audit_events ({columns}) FROM STDIN") as copy:
            for row in _rows(count):
                copy.write_row((row[0] + "+00", *row[1:]))


# The export runs through this: vm-bot's own main, then the process's peak RSS (VmHWM: its memory's high-water
# mark since exec; wait4's ru_maxrss would also count the pages of this benchmark's process it was forked from).
CHILD = (
    "import sys\n"
    "from bot.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
    "print('peak-kib', peak.split()[1], file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def export(url: str, newest: int, total: int, fmt: str) -> tuple[float, float]:
    """Run one export of the newest `newest` events; return (seconds, peak RSS in MiB)."""
    since = (BASE + timedelta(seconds=total - newest)).isoformat()
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", CHILD, "--log-level", "WARNING", "audit", "--since", since, "--format", fmt]
    with open(os.devnull, "w") as sink:
        started = time.perf_counter()
        done = subprocess.run(  # noqa: S603 — our own interpreter and arguments
            command, stdout=sink, stderr=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir(), check=False
        )
        elapsed = time.perf_counter() - started
    peaks = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("peak-kib ")]
    if done.returncode != 0 or not peaks:
        raise SystemExit(f"export failed: {done.stderr}")
    return elapsed, int(peaks[0]) / 1024


def measure(url: str, label: str, sizes: Sequence[int], formats: Sequence[str]) -> None:
    """Print the floor and one line per size and format."""
    total = max(sizes)
    print(f"{label}: {total:,} audit events")
    print(f"{'format':<6} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'peak RSS MiB':>13}")
    for fmt in formats:
        seconds, rss = export(url, 0, total, fmt)
        print(f"{fmt:<6} {0:>10,} {seconds:>8.2f} {'':>10} {rss:>13.1f}   (the floor: imports, no rows)")
        for size in sizes:
            seconds, rss = export(url, size, total, fmt)
            print(f"{fmt:<6} {size:>10,} {seconds:>8.2f} {size / seconds:>10,.0f} {rss:>13.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated export sizes")
    parser.add_argument("--formats", default="json,csv", help="comma-separated: json, csv")
    parser.add_argument("--postgres", action="store_true", help="also measure on a throwaway PostgreSQL")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    formats = [f.strip() for f in args.formats.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        url = fill_sqlite(Path(tmp) / "audit.db", max(sizes))
        print(f"filled SQLite in {time.perf_counter() - started:.1f} s")
        measure(url, "SQLite", sizes, formats)
    if args.postgres:
        with throwaway_postgres() as pg_url:
            if pg_url is None:
                print("PostgreSQL: skipped (no server binaries)")
                return 0
            started = time.perf_counter()
            fill_postgres(pg_url, max(sizes))
            print(f"filled PostgreSQL in {time.perf_counter() - started:.1f} s")
            measure(pg_url, "PostgreSQL", sizes, formats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
