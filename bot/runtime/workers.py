"""A fixed pool of worker threads whose submit() never waits on a lock another thread may hold."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class WorkerPool(Executor):
    """Runs submitted work on `workers` threads started up front, first come first served.

    Acknowledgements hand their work over with submit(). ThreadPoolExecutor.submit takes its own lock plus one
    lock shared by every ThreadPoolExecutor in the process (the watcher's included) and a semaphore's condition;
    with one GIL and many busy threads a holder is often descheduled mid-way, and a burst of acks queued behind
    it (profiled: 42% of a refusal's ack time on PostgreSQL). Here submit() is a put on a SimpleQueue.
    """

    def __init__(self, workers: int, *, thread_name_prefix: str):
        if workers < 1:
            raise ValueError("a worker pool needs at least one thread")
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._shutdown = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{thread_name_prefix}_{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue fn(*args, **kwargs); return its future."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new work after shutdown")
        future: Future[T] = Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; the threads finish what is queued (or cancel it) and end."""
        self._shutdown = True
        if cancel_futures:
            while True:
                try:
                    work = self._queue.get_nowait()
                except queue.Empty:
                    break
                if work is not None:
                    work[0].cancel()
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _work(self) -> None:
        """Run queued work until told to stop."""
        while (work := self._queue.get()) is not None:
            future, fn, args, kwargs = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del work, future, fn, args, kwargs  # drop references before waiting for the next one
