"""One job per key at a time, on a WorkerPool: a slow job for one request or channel never delays another's."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

from bot.runtime.workers import WorkerPool

log = logging.getLogger(__name__)

Key = TypeVar("Key", bound=Hashable)


class KeyedExecutor(Generic[Key]):
    """Runs jobs on a pool of `workers` threads, never two jobs with the same key at once.

    A job whose key is busy is not queued behind it: submit() says no, and the caller tries again on its next
    round (the database, not this queue, holds the work). A job's exception is logged, not raised: one key's
    trouble must not stop the others, and it is retried on the next round.
    """

    def __init__(self, workers: int, *, name: str):
        # No workers: run each job in the submitting thread (one process, deterministic: tools and some tests).
        self._pool = WorkerPool(workers, thread_name_prefix=name) if workers else None
        self._busy: set[Key] = set()
        self._lock = threading.Lock()

    def idle(self, keys: Iterable[Key]) -> list[Key]:
        """Return the keys with no job in flight, in order."""
        with self._lock:
            return [k for k in keys if k not in self._busy]

    def busy(self) -> set[Key]:
        """Return the keys with a job in flight."""
        with self._lock:
            return set(self._busy)

    def submit(self, key: Key, work: Callable[..., Any], *args: Any) -> bool:
        """Run work(*args) for key unless a job for key is in flight; True iff it was taken."""
        return self.submit_many([key], work, *args)

    def submit_many(self, keys: Iterable[Key], work: Callable[..., Any], *args: Any) -> bool:
        """Run one job for several keys (all of them busy while it runs) unless any is in flight; True iff taken."""
        keys = list(dict.fromkeys(keys))
        with self._lock:
            if any(key in self._busy for key in keys):
                return False
            self._busy.update(keys)
        context = contextvars.copy_context()

        def job() -> None:
            try:
                context.run(work, *args)
            except Exception:
                log.exception("a job for %s failed; it is retried on the next round", keys)
            finally:
                with self._lock:
                    self._busy.difference_update(keys)

        if self._pool is None:
            job()
            return True
        try:
            self._pool.submit(job)
        except RuntimeError:  # shutting down: the work stays in the database for the next process
            with self._lock:
                self._busy.difference_update(keys)
            return False
        return True

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        """Stop taking jobs and wait for those in flight (dropping queued ones with cancel_pending)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel_pending)
