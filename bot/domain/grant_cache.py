"""A copy of every grant rule in memory, so the check before an ack need not touch the database to say "yes"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import select

from bot.db.models import Grant
from bot.db.session import Database
from bot.domain.grants import GrantRule

MAX_AGE_SECONDS = 1.0


class GrantCache:
    """Every grant rule, reloaded from the database when the copy is older than max_age_seconds.

    Only ever used to answer "allowed" before an acknowledgement: a denial is always read from the database, and
    everything that acts (preparing the confirmation, deciding a click) checks the database again. So a grant
    added anywhere counts at once, and a grant revoked on another replica can at worst earn a "Checking…" ack,
    followed within moments by the refusal, for up to max_age_seconds. Reloading everything (a small table) rather
    than trusting a change counter keeps that bound whatever happened to the rows.
    """

    def __init__(
        self, db: Database, *, max_age_seconds: float = MAX_AGE_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        self.db = db
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._reloading = threading.Lock()
        self._rules: dict[str, list[GrantRule]] = {}
        self._loaded_at = float("-inf")
        self._generation = 0

    def invalidate(self) -> None:
        """Forget the copy (this process changed grants): the next look-up reloads."""
        self._generation += 1
        self._loaded_at = float("-inf")

    def rules_for(self, user_id: str) -> list[GrantRule] | None:
        """Return the user's grant rules from a copy at most max_age_seconds old; None when there is none to hand."""
        if self._clock() - self._loaded_at > self.max_age_seconds:
            if not self._reloading.acquire(blocking=False):
                return None  # another thread is reloading: read the database this once
            try:
                self._reload()
            finally:
                self._reloading.release()
        return self._rules.get(user_id, [])

    def _reload(self) -> None:
        """Read every grant rule; note the time taken before reading, so the copy's age is never understated."""
        started, generation = self._clock(), self._generation
        query = select(Grant.user_id, Grant.action, Grant.kind, Grant.pattern, Grant.channel_id, Grant.needs_approval)
        rules: dict[str, list[GrantRule]] = {}
        with self.db.reading() as connection:
            for row in connection.execute(query):
                rules.setdefault(row.user_id, []).append(row)
        self._rules = rules
        if generation == self._generation:  # an invalidate() during the read wins
            self._loaded_at = started
