"""A per-user command rate limit, so nobody can spend the Zenlayer account's API budget through the bot."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from enum import Enum

from bot.db import audit
from bot.db.session import Database

WINDOW_SECONDS = 60.0


class Admission(Enum):
    """What the limiter says about one command."""

    ALLOWED = "allowed"
    REFUSED = "refused"  # over the limit, already audited in this window
    REFUSED_FIRST = "refused_first"  # the first refusal in this window: audit it


class CommandLimiter:
    """At most `per_minute` commands per user in any 60 s (per process); 0 turns the limit off."""

    def __init__(self, db: Database, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.db = db
        self.per_minute = per_minute
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._audited_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def admit(self, user_id: str) -> Admission:
        """Count one command by user_id and say whether it may go ahead (in memory only: this runs before the ack)."""
        if self.per_minute <= 0:
            return Admission.ALLOWED
        now = self.clock()
        with self._lock:
            times = self._seen.setdefault(user_id, deque())
            while times and times[0] <= now - WINDOW_SECONDS:
                times.popleft()
            if len(times) < self.per_minute:
                times.append(now)
                return Admission.ALLOWED
            if self._audited_until.get(user_id, 0.0) > now:
                return Admission.REFUSED
            # One audit row per user per window: a flood must not turn into a flood of database writes.
            self._audited_until[user_id] = times[0] + WINDOW_SECONDS
            self._forget_idle(now)
            return Admission.REFUSED_FIRST

    def record_refusal(self, user_id: str, channel_id: str, verb: str) -> None:
        """Write the refusal to the audit trail."""
        audit.write(self.db, "rate_limited", actor=user_id, channel=channel_id, verb=verb, per_minute=self.per_minute)

    def _forget_idle(self, now: float) -> None:
        """Drop users with no command in the window, so memory follows active users only."""
        idle = [u for u, times in self._seen.items() if not times or times[-1] <= now - WINDOW_SECONDS]
        for user in idle:
            del self._seen[user]
            self._audited_until.pop(user, None)
