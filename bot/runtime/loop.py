"""The one background loop: run a step, wait as long as it says (or until woken), repeat until stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class RunLoop:
    """Calls `step()` until stop is set; step returns how many seconds to wait before the next call.

    `wake()` cuts a wait short (new work was committed). A step that raises is logged and retried after
    `retry_seconds`; `on_step` observes each successful step's duration (metrics, readiness).
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], float],
        *,
        retry_seconds: float,
        on_step: Callable[[float], None] | None = None,
    ):
        self.name = name
        self._step = step
        self._retry_seconds = retry_seconds
        self._on_step = on_step
        self._wake = threading.Event()

    def wake(self) -> None:
        """Run the next step now instead of after the current wait."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Step until stop is set (call wake() after setting it, to end a wait at once)."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                wait = self._step()
            except Exception:
                log.exception("%s failed; retrying in %.1f s", self.name, self._retry_seconds)
                wait = self._retry_seconds
            else:
                if self._on_step is not None:
                    self._on_step(time.monotonic() - started)
            self._wake.wait(max(0.0, wait))
            self._wake.clear()
