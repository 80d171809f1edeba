"""`vm-bot audit --since DATE --format json|csv`: compliance exports, streamed oldest first, filtered by a window."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.db import audit, migrate
from bot.db.models import AuditEvent
from bot.db.session import Database
from tests.test_perms_cli import vm_bot

START = datetime(2026, 9, 30, 23, 0, tzinfo=UTC)
# Every hour from 2026-09-30 23:00 for 60 hours: two users, detail with what CSV and JSON must escape.
EVENTS = [
    {
        "event": f"e{i}",
        "actor": "U0001" if i % 2 else "system",
        "subject": "U0002" if i % 3 == 0 else None,
        "created_at": START + timedelta(hours=i),
        "detail": json.dumps({"n": i, "text": 'a, "quoted"\nline — ü'}, sort_keys=True),
    }
    for i in range(60)
]


def _seed(db: Database) -> None:
    with db.session() as session:
        session.add_all(AuditEvent(**event) for event in EVENTS)


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrate.upgrade(url)
    db = Database(url)
    try:
        _seed(db)
    finally:
        db.close()
    return url


def test_csv_export_since_a_date_is_every_event_from_then_oldest_first(tmp_path: Path, url: str) -> None:
    done = vm_bot(tmp_path, url, "audit", "--since", "2026-10-01", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["event"] for r in rows] == [f"e{i}" for i in range(1, 60)]  # e0 is the hour before; no limit
    first = rows[0]
    columns = ["id", "created_at", "actor", "event", "request_id", "subject", "zenlayer_request_id", "detail"]
    assert list(first) == columns
    assert first["created_at"] == "2026-10-01T00:00:00.000000+00:00"
    assert json.loads(first["detail"]) == {"n": 1, "text": 'a, "quoted"\nline — ü'}
    assert "exported 59 audit events" in done.stderr


def test_json_export_is_one_object_per_line_in_the_window_and_for_the_user(tmp_path: Path, url: str) -> None:
    done = vm_bot(
        tmp_path,
        url,
        "audit",
        "--since",
        "2026-10-01T12:00:00+02:00",  # 10:00 UTC
        "--until",
        "2026-10-02",
        "--user",
        "U0002",
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    expected = [i for i in range(11, 25) if i % 3 == 0]  # subject U0002, 10:00 ≤ t < midnight (e25 = 00:00)
    assert [r["event"] for r in records] == [f"e{i}" for i in expected]
    assert records[0]["detail"] == {"n": expected[0], "text": 'a, "quoted"\nline — ü'}
    assert records[0]["subject"] == "U0002" and records[0]["request_id"] is None


def test_an_export_with_a_limit_and_without_a_window(tmp_path: Path, url: str) -> None:
    done = vm_bot(tmp_path, url, "audit", "--format", "json", "--limit", "3")
    assert [json.loads(line)["event"] for line in done.stdout.splitlines()] == ["e0", "e1", "e2"]
    everything = vm_bot(tmp_path, url, "audit", "--format", "csv")
    assert len(everything.stdout.splitlines()) == 1 + len(EVENTS)


def test_the_table_keeps_its_limit_and_takes_the_window_too(tmp_path: Path, url: str) -> None:
    done = vm_bot(tmp_path, url, "audit", "--limit", "2", "--user", "U0001")
    assert done.returncode == 0, done.stderr
    assert [line.split()[3] for line in done.stdout.splitlines()[2:]] == ["e59", "e57"]  # newest first
    windowed = vm_bot(tmp_path, url, "audit", "--until", "2026-10-01")
    assert [line.split()[3] for line in windowed.stdout.splitlines()[2:]] == ["e0"]
    assert len(vm_bot(tmp_path, url, "audit").stdout.splitlines()) == 2 + 50  # the default limit


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--since", "October"], "must be a date like 2026-10-01"),
        (["--since", "2026-10-02", "--until", "2026-10-01"], "--until must be later than --since"),
        (["--format", "xml"], "invalid choice"),
        (["--format", "csv", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_bad_export_arguments_are_usage_errors(tmp_path: Path, url: str, args: list[str], says: str) -> None:
    done = vm_bot(tmp_path, url, "audit", *args)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert done.stdout == ""


def test_a_csv_cell_that_would_run_as_a_formula_is_written_inert(tmp_path: Path, url: str) -> None:
    db = Database(url)
    try:
        with db.session() as session:
            formula = '=HYPERLINK("https://x.example")'
            session.add(AuditEvent(event="denied", actor="-2+3", subject=formula, detail="{}"))
    finally:
        db.close()

    done = vm_bot(tmp_path, url, "audit", "--format", "csv", "--since", "2026-11-01")

    [row] = list(csv.DictReader(io.StringIO(done.stdout)))
    assert (row["actor"], row["subject"]) == ("'-2+3", '\'=HYPERLINK("https://x.example")')
    assert row["detail"] == "{}" and row["event"] == "denied"
    json_done = vm_bot(tmp_path, url, "audit", "--format", "json", "--since", "2026-11-01")
    assert json.loads(json_done.stdout)["actor"] == "-2+3"  # JSON is data, not a sheet: kept as it is


def test_stream_reads_in_chunks_on_both_backends(db: Database) -> None:
    _seed(db)
    window = audit.Window(since=datetime(2026, 10, 1, tzinfo=UTC), user="U0001")
    rows = list(audit.stream(db, window, chunk=4))  # fewer than the events: several fetches, one cursor
    assert [row[3] for row in rows] == [f"e{i}" for i in range(1, 60, 2)]
    assert all(row[1].tzinfo is not None for row in rows)
