"""Group commit: rows written by concurrent callers share one transaction, and each caller waits for its commit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Slot(Generic[Item, Result]):
    """One caller's item, and what became of it."""

    __slots__ = ("done", "error", "item", "lead", "result")

    def __init__(self, item: Item):
        self.item = item
        self.done = threading.Event()
        self.lead = False  # woken to write the next batch, rather than with a result
        self.result: Result | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    """Writes items in batches: whoever finds no batch being written writes everything queued, in one call.

    `write(items)` must write all items in one transaction and return one result per item, in order, only once
    they are committed. A caller returns only after its own item's batch committed, so durability is the same as
    writing alone; under concurrency N writes cost one transaction instead of N (on SQLite, N turns of the write
    lock and N commits). There is no timer: a batch is whatever queued while the previous one was being written.
    When a batch fails, its items are written one by one, so one bad item fails only its own caller.
    """

    def __init__(self, write: Callable[[Sequence[Item]], Sequence[Result]]):
        self._write = write
        self._lock = threading.Lock()
        self._queue: list[_Slot[Item, Result]] = []
        self._writing = False

    @property
    def queued(self) -> int:
        """How many items wait for the batch being written to commit (they go together in the next one)."""
        with self._lock:
            return len(self._queue)

    def submit(self, item: Item) -> Result:
        """Write item (with whatever else is queued) and return its result once committed; raise its failure."""
        slot: _Slot[Item, Result] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            slot.lead = not self._writing
            self._writing = True
        if not slot.lead:
            slot.done.wait()
        if slot.lead:
            self._write_queued()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _write_queued(self) -> None:
        """Write every queued item as one batch, then hand the writing on to the first caller queued meanwhile."""
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self._write_batch(batch)
        finally:
            with self._lock:
                if self._queue:
                    following = self._queue[0]
                    following.lead = True
                    following.done.set()
                else:
                    self._writing = False
            for slot in batch:
                slot.lead = False
                slot.done.set()

    def _write_batch(self, batch: list[_Slot[Item, Result]]) -> None:
        """Write the batch in one call; if that fails, write each item alone so failures stay with their callers."""
        try:
            results = list(self._write([slot.item for slot in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"group commit: {len(results)} results for {len(batch)} items")
        except BaseException as exc:
            if not isinstance(exc, Exception) or len(batch) == 1:
                for slot in batch:
                    slot.error = exc
                if not isinstance(exc, Exception):
                    raise
                return
            for slot in batch:
                try:
                    slot.result = self._write([slot.item])[0]
                except Exception as single:
                    slot.error = single
            return
        for slot, result in zip(batch, results, strict=True):
            slot.result = result
