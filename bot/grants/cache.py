"""A copy of every grant rule in memory, so the check before an ack need not touch the database to say "yes"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from bot.db.models import Grant
from bot.db.session import Database
from bot.grants.rules import GrantRule

MAX_AGE_SECONDS = 1.0

Rules = dict[str, list[GrantRule]]


@dataclass(frozen=True)
class Lookup:
    """A user's grant rules, and whether they come from a read begun after they were asked for."""

    rules: list[GrantRule]
    fresh: bool


class GrantCache:
    """Every grant rule, reloaded from the database when the copy is older than max_age_seconds.

    The copy only ever answers "allowed" before an acknowledgement: a denial comes from `fresh_rules_for`, a read
    that began after it was asked for, and everything that acts (preparing the confirmation, deciding a click)
    checks the database again. So a grant added anywhere counts at once, and a grant revoked on another replica can
    at worst earn a "Checking…" ack, followed within moments by the refusal, for up to max_age_seconds. Reloading
    everything (a small table) rather than trusting a change counter keeps that bound whatever happened to the rows.
    """

    def __init__(
        self,
        db: Database,
        *,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        read: Callable[[], Rules] | None = None,
    ):
        self.db = db
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._read = read or self._read_database
        self._rules: Rules = {}
        self._loaded_at = float("-inf")
        self._generation = 0
        # Fresh reads: one at a time, numbered; a caller needs one numbered above those started before it came.
        self._fresh = threading.Condition()
        self._fresh_started = 0
        self._fresh_done = 0
        self._fresh_reading = False
        self._fresh_rules: Rules = {}

    def invalidate(self) -> None:
        """Forget the copy (this process changed grants): the next look-up reloads."""
        self._generation += 1
        self._loaded_at = float("-inf")

    def lookup(self, user_id: str) -> Lookup:
        """Return the user's grant rules from the copy while it is at most max_age_seconds old, else read afresh.

        An old copy is refreshed by the same shared read refusals use, so a burst that finds it old waits for one
        read, and a caller told `fresh` may refuse from these rules without reading again.
        """
        if self._clock() - self._loaded_at > self.max_age_seconds:
            return Lookup(self.fresh_rules_for(user_id), fresh=True)
        return Lookup(self._rules.get(user_id, []), fresh=False)

    def fresh_rules_for(self, user_id: str) -> list[GrantRule]:
        """Return the user's grant rules from a read of every rule that began after this call.

        Callers arriving together share reads: each waits for the first read that starts after it arrived (never
        one already under way, which could miss a grant committed just before it arrived). A burst of refusals
        costs a few reads of the table instead of one query each.
        """
        with self._fresh:
            needed = self._fresh_started + 1
            while self._fresh_done < needed:
                if self._fresh_reading:
                    self._fresh.wait()
                    continue
                self._fresh_reading = True
                self._fresh_started += 1
                number, generation, started = self._fresh_started, self._generation, self._clock()
                try:
                    self._fresh.release()
                    try:
                        rules = self._read()
                    finally:
                        self._fresh.acquire()
                finally:
                    self._fresh_reading = False
                    self._fresh.notify_all()
                self._fresh_rules, self._fresh_done = rules, number
                self._keep(rules, generation, started)
            return list(self._fresh_rules.get(user_id, []))

    def _keep(self, rules: Rules, generation: int, started: float) -> None:
        """Make rules the copy, dated by when their read started, so the copy's age is never understated."""
        self._rules = rules
        if generation == self._generation:  # an invalidate() during the read wins
            self._loaded_at = started

    def _read_database(self) -> Rules:
        """Read every grant rule, grouped by user."""
        query = select(
            Grant.user_id,
            Grant.action,
            Grant.kind,
            Grant.pattern,
            Grant.channel_id,
            Grant.needs_approval,
            Grant.max_run_seconds,
        )
        rules: Rules = {}
        for row in self.db.read(query):
            rules.setdefault(row.user_id, []).append(row)
        return rules
