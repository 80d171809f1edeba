"""Acknowledgements first: work handed off after an ack waits while other acks are still being answered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

QUIET_SECONDS = 0.02
MAX_DELAY_SECONDS = 1.0


class AckFirst:
    """Holds background work back while Slack is being acknowledged, so the acks get the CPU (and the GIL) first.

    Slack waits at most 3 s for an ack; the work after it (a lookup, a confirmation, an audit row) has no such
    limit. In one process every runnable thread shares the interpreter, so a burst of commands would otherwise be
    acknowledged at the pace of all the work the earlier ones started. A delay is bounded by max_delay_seconds,
    so a steady stream of acks cannot starve the work.
    """

    def __init__(
        self,
        *,
        quiet_seconds: float = QUIET_SECONDS,
        max_delay_seconds: float = MAX_DELAY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.quiet_seconds = quiet_seconds
        self.max_delay_seconds = max_delay_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._active = 0
        self._last_ack_at = float("-inf")

    @contextmanager
    def acknowledging(self) -> Iterator[None]:
        """Mark the block as answering Slack: background work waits until it and every other ack are done."""
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                self._last_ack_at = self._clock()

    def wait_turn(self) -> None:
        """Return once no ack has been in progress for quiet_seconds, or after max_delay_seconds at most."""
        # Waiters look again every quiet_seconds instead of being notified: waking every waiter after every ack
        # would cost the acks more than it saves.
        deadline = self._clock() + self.max_delay_seconds
        while True:
            now = self._clock()
            with self._lock:
                quiet_at = now + self.quiet_seconds if self._active else self._last_ack_at + self.quiet_seconds
            if now >= quiet_at or now >= deadline:
                return
            time.sleep(min(quiet_at, deadline) - now)
