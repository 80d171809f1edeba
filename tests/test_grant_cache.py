"""The grant cache before an ack: it may say "allowed" from memory, never "refused", and nothing acts on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.db.session import Database
from bot.domain import grants
from bot.domain.grant_cache import GrantCache
from bot.domain.starts import NotCovered, StartService
from tests.db_support import BACKENDS, migrated_database


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with migrated_database(request.param, tmp_path) as database:
        yield database


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def add(db: Database, user: str, pattern: str) -> None:
    with db.session() as session:
        grants.add_grants(session, user, [pattern], granted_by="test")


def revoke_elsewhere(db: Database, user: str) -> None:
    """Revoke as another replica would: through its own engine, without telling this process's cache."""
    other = Database(db.url)
    try:
        with other.session() as session:
            grants.revoke_grants(session, user)
    finally:
        other.close()


def service(db: Database, cache: GrantCache) -> StartService:
    return StartService(db, vm=None, confirm_ttl_seconds=600, approval_ttl_seconds=3600, grant_cache=cache)  # type: ignore[arg-type]


def test_the_copy_is_reloaded_once_older_than_its_max_age(db: Database) -> None:
    clock = Clock()
    cache = GrantCache(db, max_age_seconds=1.0, clock=clock)
    add(db, "U0ALICE", "web-*")
    assert [r.pattern for r in cache.rules_for("U0ALICE") or []] == ["web-*"]

    revoke_elsewhere(db, "U0ALICE")
    clock.now += 0.5
    assert [r.pattern for r in cache.rules_for("U0ALICE") or []] == ["web-*"]  # the copy, not the database
    clock.now += 0.6
    assert cache.rules_for("U0ALICE") == []


def test_invalidate_reloads_at_once(db: Database) -> None:
    cache = GrantCache(db, max_age_seconds=3600)
    add(db, "U0ALICE", "web-*")
    assert cache.rules_for("U0ALICE")
    revoke_elsewhere(db, "U0ALICE")
    cache.invalidate()
    assert cache.rules_for("U0ALICE") == []


def test_a_grant_added_after_the_copy_counts_at_once(db: Database) -> None:
    cache = GrantCache(db, max_age_seconds=3600)
    starts = service(db, cache)
    assert not starts.coverage_before_ack("U0BOB", "C0OPS", ["web-1"]).ok  # loads the copy, without Bob's grant
    add(db, "U0BOB", "web-*")
    assert starts.coverage_before_ack("U0BOB", "C0OPS", ["web-1"]).ok  # a refusal is always read afresh


def test_a_stale_allowed_never_gets_past_the_check_that_acts(db: Database) -> None:
    cache = GrantCache(db, max_age_seconds=3600)
    starts = service(db, cache)
    add(db, "U0ALICE", "web-*")
    assert starts.coverage_before_ack("U0ALICE", "C0OPS", ["web-1"]).ok
    revoke_elsewhere(db, "U0ALICE")

    assert starts.coverage_before_ack("U0ALICE", "C0OPS", ["web-1"]).ok  # the ack may still say "Checking…"
    with pytest.raises(NotCovered):
        starts.prepare("U0ALICE", "C0OPS", ["web-1"])  # but preparing the confirmation reads the database
