"""The grant cache before an ack: it may say "allowed" from memory, never "refused", and nothing acts on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot.db.session import Database
from bot.domain.actions import START
from bot.grants import rules as grants
from bot.grants.authority import Authority, NotCovered, Question
from bot.grants.cache import GrantCache
from bot.grants.rules import Coverage
from bot.operations.opening import Opening
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


def before_ack(authority: Authority, user: str, ids: list[str]) -> Coverage:
    """Ask what the check before an acknowledgement asks (a "yes" may come from memory)."""
    return authority.check(Question(user, START.grant, ids, "C0OPS"), quick=True)


def test_the_copy_is_reloaded_once_older_than_its_max_age(db: Database) -> None:
    clock = Clock()
    cache = GrantCache(db, max_age_seconds=1.0, clock=clock)
    add(db, "U0ALICE", "web-*")
    assert [r.pattern for r in cache.lookup("U0ALICE").rules or []] == ["web-*"]

    revoke_elsewhere(db, "U0ALICE")
    clock.now += 0.5
    assert [r.pattern for r in cache.lookup("U0ALICE").rules or []] == ["web-*"]  # the copy, not the database
    clock.now += 0.6
    assert cache.lookup("U0ALICE").rules == []


def test_invalidate_reloads_at_once(db: Database) -> None:
    cache = GrantCache(db, max_age_seconds=3600)
    add(db, "U0ALICE", "web-*")
    assert cache.lookup("U0ALICE").rules
    revoke_elsewhere(db, "U0ALICE")
    cache.invalidate()
    assert cache.lookup("U0ALICE").rules == []


def test_a_grant_added_after_the_copy_counts_at_once(db: Database) -> None:
    authority = Authority(db, GrantCache(db, max_age_seconds=3600))
    assert not before_ack(authority, "U0BOB", ["web-1"]).ok  # loads the copy, without Bob's grant
    add(db, "U0BOB", "web-*")
    assert before_ack(authority, "U0BOB", ["web-1"]).ok  # a refusal is always read afresh


def test_a_stale_allowed_never_gets_past_the_check_that_acts(db: Database) -> None:
    authority = Authority(db, GrantCache(db, max_age_seconds=3600))
    opening = Opening(db, None, authority, confirm_ttl_seconds=600, approval_ttl_seconds=3600)  # type: ignore[arg-type]
    add(db, "U0ALICE", "web-*")
    assert before_ack(authority, "U0ALICE", ["web-1"]).ok
    revoke_elsewhere(db, "U0ALICE")

    assert before_ack(authority, "U0ALICE", ["web-1"]).ok  # the ack may still say "Checking…"
    with pytest.raises(NotCovered):
        opening.look_up("U0ALICE", "C0OPS", START, ["web-1"])  # but preparing the confirmation reads the database


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
        self.max_run_seconds: float | None = None


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
    authority = Authority(db, GrantCache(db, max_age_seconds=3600))
    checked = before_ack(authority, "U0BOB", ["web-1"])
    assert not checked.ok and not checked.usable_here
    other = Database(db.url)  # another replica: this process's cache is not told
    try:
        with other.session() as session:
            grants.add_grants(session, "U0BOB", ["db-*"], granted_by="test")
    finally:
        other.close()
    checked = before_ack(authority, "U0BOB", ["web-1"])
    assert not checked.ok and checked.usable_here  # holds a grant here now: names get looked up
    assert before_ack(authority, "U0BOB", []).usable_here


def test_a_refusal_that_finds_the_copy_old_reads_the_grants_once(tmp_path: Path) -> None:
    reads = HeldReads()
    reads.release_first.set()
    reads.table["U0ALICE"] = ["web-*"]
    cache = GrantCache(Database(f"sqlite:///{tmp_path / 'unused.db'}"), max_age_seconds=3600, read=reads)
    authority = Authority(cache.db, cache)
    checked = before_ack(authority, "U0BOB", ["web-1"])  # no copy yet: one read refreshes it and refuses
    assert not checked.ok and not checked.usable_here
    assert reads.reads == 1
    assert before_ack(authority, "U0ALICE", ["web-1"]).ok  # from the copy
    assert reads.reads == 1
