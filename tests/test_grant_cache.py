"""The grant cache before an ack: it may say "allowed" from memory, never "refused", and nothing acts on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


class HeldReads:
    """A read of the grants table the test can hold open; each read returns the table as it is when it starts."""

    def __init__(self) -> None:
        self.table: dict[str, list[str]] = {}
        self.reads = 0
        self.first_started = threading.Event()
        self.release_first = threading.Event()

    def __call__(self) -> dict[str, list[grants.GrantRule]]:
        snapshot = {user: [Rule(p) for p in patterns] for user, patterns in self.table.items()}
        self.reads += 1
        if self.reads == 1:
            self.first_started.set()
            assert self.release_first.wait(10)
        return snapshot  # type: ignore[return-value]


class Rule:
    """A grant rule as the coverage check reads it."""

    def __init__(self, pattern: str):
        self.action, self.kind, self.pattern = "start", "id", pattern
        self.channel_id, self.needs_approval = "*", False


def test_a_refusal_never_uses_a_read_that_began_before_it_was_asked(tmp_path: Path) -> None:
    reads = HeldReads()
    cache = GrantCache(Database(f"sqlite:///{tmp_path / 'unused.db'}"), read=reads)
    with ThreadPoolExecutor(max_workers=4) as pool:
        early = pool.submit(cache.fresh_rules_for, "U0BOB")
        assert reads.first_started.wait(10)
        reads.table["U0BOB"] = ["web-*"]  # granted (on another replica) while that read is under way
        late = [pool.submit(cache.fresh_rules_for, "U0BOB") for _ in range(3)]
        reads.release_first.set()
        assert early.result(10) == []
        assert [[r.pattern for r in f.result(10)] for f in late] == [["web-*"]] * 3
    assert reads.reads == 2  # the three that arrived during the first read shared the second


def test_a_refused_user_granted_on_another_replica_is_allowed_at_once(db: Database) -> None:
    cache = GrantCache(db, max_age_seconds=3600)
    starts = service(db, cache)
    checked = starts.check_before_ack("U0BOB", "C0OPS", ["web-1"])
    assert not checked.coverage.ok and not checked.usable_here
    other = Database(db.url)  # another replica: this process's cache is not told
    try:
        with other.session() as session:
            grants.add_grants(session, "U0BOB", ["db-*"], granted_by="test")
    finally:
        other.close()
    checked = starts.check_before_ack("U0BOB", "C0OPS", ["web-1"])
    assert not checked.coverage.ok and checked.usable_here  # holds a grant here now: names get looked up
    assert starts.may_use_here("U0BOB", "C0OPS")


def test_a_refusal_that_finds_the_copy_old_reads_the_grants_once(tmp_path: Path) -> None:
    reads = HeldReads()
    reads.release_first.set()
    reads.table["U0ALICE"] = ["web-*"]
    cache = GrantCache(Database(f"sqlite:///{tmp_path / 'unused.db'}"), max_age_seconds=3600, read=reads)
    starts = service(cache.db, cache)
    checked = starts.check_before_ack("U0BOB", "C0OPS", ["web-1"])  # no copy yet: one read refreshes it and refuses
    assert not checked.coverage.ok and not checked.usable_here
    assert reads.reads == 1
    assert starts.check_before_ack("U0ALICE", "C0OPS", ["web-1"]).coverage.ok  # from the copy
    assert reads.reads == 1
