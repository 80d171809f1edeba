"""The audit trail: what is recorded and how the latest events are read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import Secret
from bot.db import audit
from bot.db.models import AuditEvent
from bot.db.session import Database
from tests.db_support import migrated_database


@pytest.fixture
def db(tmp_path: Path):
    with migrated_database("sqlite", tmp_path) as database:
        yield database


def test_record_stores_fields_and_json_detail(db: Database) -> None:
    with db.session() as s:
        audit.record(
            s, "start_called", actor="system", subject="U0001", zenlayer_request_id="req-1", ids=["a", "b"], count=2
        )
    with db.session(readonly=True) as s:
        (event,) = audit.latest(s)
    assert (event.event, event.actor, event.subject, event.zenlayer_request_id, event.request_id) == (
        "start_called",
        "system",
        "U0001",
        "req-1",
        None,
    )
    assert json.loads(event.detail) == {"ids": ["a", "b"], "count": 2}
    assert audit.detail_of(event) == {"ids": ["a", "b"], "count": 2}
    assert event.created_at.tzinfo is not None


def test_record_without_detail_stores_an_empty_object(db: Database) -> None:
    with db.session() as s:
        audit.record(s, "ping", actor="cli")
    with db.session(readonly=True) as s:
        assert audit.latest(s)[0].detail == "{}"


@pytest.mark.parametrize("value", [Secret("hunter2"), object(), {1, 2}, float("nan")])
def test_record_refuses_values_json_cannot_hold(db: Database, value: object) -> None:
    with pytest.raises((TypeError, ValueError)), db.session() as s:
        audit.record(s, "oops", actor="cli", value=value)
    with db.session(readonly=True) as s:
        assert audit.latest(s) == []


def test_latest_is_newest_first_limited_and_filtered_by_user(db: Database) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with db.session() as s:
        for i, (actor, subject) in enumerate(
            [("U0001", None), ("cli", "U0001"), ("U0002", None), ("cli", "U0002"), ("system", None)]
        ):
            s.add(AuditEvent(event=f"e{i}", actor=actor, subject=subject, created_at=base + timedelta(seconds=i)))
    with db.session(readonly=True) as s:
        assert [e.event for e in audit.latest(s)] == ["e4", "e3", "e2", "e1", "e0"]
        assert [e.event for e in audit.latest(s, limit=2)] == ["e4", "e3"]
        assert [e.event for e in audit.latest(s, user="U0001")] == ["e1", "e0"]
        assert [e.event for e in audit.latest(s, user="U0002", limit=1)] == ["e3"]
        assert audit.latest(s, user="U0404") == []


def test_events_in_the_same_second_keep_insertion_order(db: Database) -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    with db.session() as s:
        for i in range(3):
            s.add(AuditEvent(event=f"e{i}", actor="system", created_at=moment))
    with db.session(readonly=True) as s:
        assert [e.event for e in audit.latest(s)] == ["e2", "e1", "e0"]
