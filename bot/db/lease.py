"""The one lease rule: who holds work (a replica's owner name) and until when (the database's clock).

One setting, LEASE_SECONDS, decides every liveness question: a request's lease, a claim on an outbox row and its
channel, and how long an acknowledged click may stay undecided before another replica decides it. Holders renew
every third of it (a heartbeat), so a holder that is alive never loses its hold, and a dead one's lapses in
LEASE_SECONDS at most.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import QueryableAttribute

from bot.db.clock import db_time


@dataclass(frozen=True)
class Owner:
    """A process's name in leases: its stable replica id plus a nonce, so a restarted replica can tell its
    predecessor's holds (same replica, other nonce) from its own and take them over at once."""

    replica: str
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def name(self) -> str:
        """Return the owner as stored in lease columns: `replica/nonce`."""
        return f"{self.replica}/{self.nonce}"

    def predecessor(self, column: QueryableAttribute[Any]) -> ColumnElement[bool]:
        """SQL: column names an earlier process of this replica (which this one replaced)."""
        return and_(column.startswith(f"{self.replica}/", autoescape=True), column != self.name)


@dataclass(frozen=True)
class Lease:
    """How long a hold outlives its holder's last heartbeat; every deadline in the database's time."""

    seconds: float

    @property
    def heartbeat_seconds(self) -> float:
        """How often a holder renews: three renewals fit in one lease."""
        return self.seconds / 3

    def until(self) -> ColumnElement[Any]:
        """SQL: the end of a hold taken or renewed now."""
        return db_time(self.seconds)

    def lapsed(self, until: QueryableAttribute[Any]) -> ColumnElement[bool]:
        """SQL: a hold whose end (column `until`) is not set or has passed."""
        return or_(until.is_(None), until <= db_time())

    def live(self, until: QueryableAttribute[Any]) -> ColumnElement[bool]:
        """SQL: a hold whose end has not passed."""
        return until > db_time()

    def older_than_a_beat(self, moment: QueryableAttribute[Any]) -> ColumnElement[bool]:
        """SQL: moment (a column) is more than one heartbeat ago — how long a replica leaves its own undecided click
        to the request that recorded it before it decides the click itself."""
        return moment < db_time(-self.heartbeat_seconds)

    def older_than_one(self, moment: QueryableAttribute[Any]) -> ColumnElement[bool]:
        """SQL: moment (a column) is more than one lease ago — what an undecided click's age must exceed before
        another replica decides it (its own process decides it within milliseconds, or died)."""
        return moment < db_time(-self.seconds)
