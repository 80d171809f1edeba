"""WorkerPool: the executor acknowledgements hand their work to."""

from __future__ import annotations

import threading

import pytest

from bot.runtime.workers import WorkerPool


def test_work_runs_on_the_pool_and_its_result_or_failure_reaches_the_future() -> None:
    pool = WorkerPool(2, thread_name_prefix="test-pool")
    try:
        assert pool.submit(lambda a, b: a + b, 2, b=3).result(timeout=10) == 5
        assert pool.submit(threading.current_thread).result(timeout=10).name.startswith("test-pool_")

        def fail() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            pool.submit(fail).result(timeout=10)
    finally:
        pool.shutdown()


def test_shutdown_finishes_queued_work_and_ends_every_thread() -> None:
    pool = WorkerPool(2, thread_name_prefix="test-pool")
    release = threading.Event()
    done: list[int] = []
    for i in range(6):
        pool.submit(lambda i=i: (release.wait(10), done.append(i)))
    release.set()
    pool.shutdown(wait=True)
    assert sorted(done) == list(range(6))
    assert not any(t.name.startswith("test-pool_") and t.is_alive() for t in threading.enumerate())
    with pytest.raises(RuntimeError):
        pool.submit(print)


def test_shutdown_can_cancel_what_has_not_started() -> None:
    pool = WorkerPool(1, thread_name_prefix="test-pool")
    started, release = threading.Event(), threading.Event()
    running = pool.submit(lambda: (started.set(), release.wait(10)))
    assert started.wait(10)
    queued = pool.submit(print, "never")
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    running.result(timeout=10)
    assert queued.cancelled()
