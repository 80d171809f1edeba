"""Signed Slack requests already accepted, in the database every replica shares: the same bytes again are a replay."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from bot.db.clock import db_epoch
from bot.db.models import SeenRequest
from bot.db.session import Database
from bot.db.sql import rowcount
from bot.runtime.group_commit import GroupCommit

# Slack's window: a signature whose timestamp is further than this from the verifier's clock is refused anyway.
WINDOW_SECONDS = 300
# Rows outlive the window by as much again, so that a replica whose clock is behind the pruning replica's (by up to
# WINDOW_SECONDS) still finds every request it would accept.
KEEP_SECONDS = 2 * WINDOW_SECONDS
# Pruning is a watcher chore; once a minute is plenty for rows kept ten minutes.
PRUNE_EVERY_SECONDS = 60.0
# How long a request waits for the SQLite write lock before it is refused (Slack gives up at 3 s). Once a wait ran
# out, requests are refused at once for LOCK_PROBE_SECONDS, then one batch tries again waiting only that long: a
# stuck lock answers everyone within about LOCK_WAIT_SECONDS, rather than each batch after its own full wait.
LOCK_WAIT_SECONDS = 2.0
LOCK_PROBE_SECONDS = 0.25


class NotRecorded(Exception):
    """The database could not record a request, so it could not be checked against replays either."""


@dataclass(frozen=True)
class SignedRequest:
    """What identifies one signed request: its signature, its trigger_id (where it has one) and its timestamp."""

    signature: str
    trigger_id: str | None
    timestamp: int


class SeenRequests:
    """Accepts each signed request once: one quick insert before the request is handed to bolt."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time):
        self.db = db
        self.clock = clock
        self._next_prune = 0.0
        self._lock_wait = LOCK_WAIT_SECONDS  # LOCK_PROBE_SECONDS while the database is found locked
        self._locked_until = 0.0  # monotonic: until then, refuse without asking the database
        # Requests arriving together are recorded in one transaction (as clicks are): each waits for its own commit.
        self._inserts: GroupCommit[SignedRequest, bool | NotRecorded] = GroupCommit(self._insert)

    def first_time(self, request: SignedRequest) -> bool:
        """Record request; True the first time its signature and trigger_id are seen, False for a replay.

        Raises NotRecorded when the database did not take it (within LOCK_WAIT_SECONDS on SQLite).
        """
        recorded = self._inserts.submit(request)
        if isinstance(recorded, NotRecorded):
            raise recorded
        return recorded

    def _insert(self, batch: Sequence[SignedRequest]) -> list[bool | NotRecorded]:
        """Insert a batch in one committed statement; return, per request, whether it was new."""
        if time.monotonic() < self._locked_until:
            return [NotRecorded("the database was locked a moment ago")] * len(batch)
        rows = [{"signature": r.signature, "trigger_id": r.trigger_id, "slack_ts": r.timestamp} for r in batch]
        try:
            # Urgent: someone waits for the acknowledgement, as for a click.
            with self.db.writing(urgent=True, lock_wait_seconds=self._lock_wait) as connection:
                dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
                statement = dialect.insert(SeenRequest).on_conflict_do_nothing().returning(SeenRequest.signature)
                inserted = set(connection.execute(statement, rows).scalars())
        except (DBAPIError, TimeoutError) as exc:
            # One answer for the batch: a failure of one row is a failure of the database here (each row is checked
            # before), and GroupCommit would otherwise write them one by one, each waiting as long again.
            self._lock_wait = LOCK_PROBE_SECONDS
            self._locked_until = time.monotonic() + LOCK_PROBE_SECONDS
            return [NotRecorded(type(exc).__name__)] * len(batch)
        self._lock_wait = LOCK_WAIT_SECONDS
        fresh: list[bool | NotRecorded] = []
        for request in batch:
            fresh.append(request.signature in inserted)
            inserted.discard(request.signature)  # the same bytes twice in one batch: only the first is new
        return fresh

    def prune(self) -> int:
        """Forget requests no replica would accept any more (at most once a minute); return how many."""
        now = self.clock()
        if now < self._next_prune:
            return 0
        self._next_prune = now + PRUNE_EVERY_SECONDS
        with self.db.writing() as connection:  # the database's clock decides what is old, not this replica's
            deleted = connection.execute(delete(SeenRequest).where(SeenRequest.slack_ts < db_epoch() - KEEP_SECONDS))
        return rowcount(deleted)
