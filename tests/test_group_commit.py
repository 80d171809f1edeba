"""Group commit: concurrent writes share a transaction, and nobody returns before their own row is committed."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.db.lease import Lease, Owner
from bot.db.models import Click
from bot.db.session import Database
from bot.operations.click_model import ClickRow, Decision
from bot.operations.clicks import Clicks
from bot.runtime.group_commit import GroupCommit
from tests.db_support import BACKENDS, migrated_database
from tests.slack_support import wait_until

DEADLINE = 10.0


class Writer:
    """A write function whose first call is held until the test lets it go; records every batch it was given."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.committed: set[str] = set()
        self.first_entered = threading.Event()
        self.release_first = threading.Event()

    def __call__(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.first_entered.set()
            assert self.release_first.wait(DEADLINE)
        if any(item.startswith("bad") for item in items):
            raise ValueError("bad item")
        self.committed.update(items)
        return [f"id-{item}" for item in items]


def test_writes_queued_while_a_batch_is_written_go_together_in_the_next_one() -> None:
    writer = Writer()
    group: GroupCommit[str, str] = GroupCommit(writer)
    with ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(group.submit, "a")
        assert writer.first_entered.wait(DEADLINE)
        rest = {item: pool.submit(group.submit, item) for item in ("b", "c", "d", "e")}
        wait_until(lambda: group.queued == 4, what="all four queued behind the batch being written")
        assert not any(f.done() for f in rest.values())  # nobody returns before their own write committed
        writer.release_first.set()
        assert first.result(DEADLINE) == "id-a"
        assert {item: f.result(DEADLINE) for item, f in rest.items()} == {i: f"id-{i}" for i in "bcde"}
    assert writer.batches[0] == ["a"]
    assert sorted(writer.batches[1]) == ["b", "c", "d", "e"]  # one transaction for the four, not four
    assert len(writer.batches) == 2


def test_a_failing_item_fails_only_its_own_caller() -> None:
    writer = Writer()
    group: GroupCommit[str, str] = GroupCommit(writer)
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(group.submit, "a")
        assert writer.first_entered.wait(DEADLINE)
        good = pool.submit(group.submit, "good")
        bad = pool.submit(group.submit, "bad")
        wait_until(lambda: group.queued == 2, what="both queued behind the batch being written")
        writer.release_first.set()
        assert first.result(DEADLINE) == "id-a"
        assert good.result(DEADLINE) == "id-good"
        with pytest.raises(ValueError, match="bad item"):
            bad.result(DEADLINE)
    assert writer.committed == {"a", "good"}
    # A lone caller writes at once, in its own batch.
    assert group.submit("z") == "id-z"


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with migrated_database(request.param, tmp_path) as database:
        yield database


def test_clicks_recorded_at_once_each_get_their_own_committed_row(db: Database) -> None:
    clicks = Clicks(db, vm=None, authority=None, owner=Owner("r1"), lease=Lease(15))  # type: ignore[arg-type]
    users = [f"U0USER{i:03d}" for i in range(40)]
    barrier = threading.Barrier(len(users))

    def click(user: str) -> tuple[str, int]:
        barrier.wait(DEADLINE)
        click_id = clicks.record(ClickRow(7, user, Decision.CONFIRM, "C0OPS", "1.1"))
        # The row is committed when record returns: another connection sees it.
        other = Database(db.url)
        try:
            with other.session(readonly=True) as session:
                row = session.get(Click, click_id)
                assert row is not None
                return row.user_id, click_id
        finally:
            other.close()

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        seen = list(pool.map(click, users))
    assert sorted(user for user, _ in seen) == users  # every caller got the id of its own row
    assert len({click_id for _, click_id in seen}) == len(users)
    with db.session(readonly=True) as session:
        assert session.scalar(select(Click.id).where(Click.user_id == users[0])) is not None
