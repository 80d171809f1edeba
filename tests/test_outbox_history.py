"""The outbox keeps delivered rows for a week: looking for what to send must not grow with that history.

The sender looks after every send and every second while idle, so on SQLite a lookup that reads every delivered row
costs a busy bot a share of a core for nothing. What SQLite does is counted in virtual-machine steps (its progress
handler), which does not depend on the machine's speed or load.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert

from bot.db.models import OutboxMessage
from bot.db.session import Database
from bot.delivery import outbox
from bot.domain.actions import START
from bot.operations.creation import NewInstance, create
from tests.db_support import migrated_database

DELIVERED = 20_000  # a busy week: ~600 requests a day, five messages each
STEP = 100  # SQLite virtual-machine instructions per count


def new_request(db: Database, channel: str) -> int:
    """Record a request in a channel; return its id."""
    with db.session() as session:
        return create(
            session,
            action=START,
            requester_id="U0REQUEST",
            channel_id=channel,
            instances=[NewInstance("web-1", name="web-1", status="STOPPED")],
            needs_approval=False,
            ttl_seconds=600,
        )


def lookup_work(db: Database) -> tuple[int, list[str]]:
    """Look for the channels with messages ready to send, as the sender does; return SQLite's work and them."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    with db.session(readonly=True) as session:
        sqlite = session.connection().connection.dbapi_connection
        assert sqlite is not None
        sqlite.set_progress_handler(count, STEP)
        try:
            found = outbox.ready(session)
        finally:
            sqlite.set_progress_handler(None, 0)
    return steps, sorted(found.channels)


def test_looking_for_messages_to_send_reads_the_pending_ones_not_a_week_of_delivered_ones(tmp_path: Path) -> None:
    with migrated_database("sqlite", tmp_path) as db:
        owed = [new_request(db, channel) for channel in ("C0ONE", "C0TWO", "C0THREE")]
        with db.session() as session:
            outbox.enqueue(session, owed, outbox.Kind.FINAL)
        before, channels = lookup_work(db)
        assert channels == ["C0ONE", "C0THREE", "C0TWO"]

        rows = [
            {"request_id": owed[i % 3], "channel_id": f"C{i % 100:04d}", "kind": "final", "pending_key": None}
            for i in range(DELIVERED)
        ]
        with db.session() as session:
            session.execute(insert(OutboxMessage), rows)
        after, channels = lookup_work(db)

    assert channels == ["C0ONE", "C0THREE", "C0TWO"]
    assert after < 2 * before + 10, (
        f"{after * STEP} SQLite steps with {DELIVERED} delivered rows, {before * STEP} without"
    )
