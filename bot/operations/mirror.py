"""A local mirror of the instances Zenlayer has, for type-ahead only: it offers, it never decides.

Slack wants a type-ahead answer within 3 s, and people type a letter at a time. Reading every page of
DescribeInstances for each letter costs ⌈N/1000⌉ calls (20 for 20,000 instances), and Zenlayer filters names by
prefix only, while a grant may select by any glob, group or tag. So each replica keeps the whole list in memory,
read page by page in the background when it is older than `max_age_seconds` and someone is typing (an idle replica
asks Zenlayer nothing), and a search filters it in memory. What is offered is checked again, live, by everything
that acts: the submission looks the instances up at Zenlayer, and so do the confirmation's click and approval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from bot.domain.ports import InstanceInfo, InstanceQuery, VmApi
from bot.domain.vm_errors import VmError

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # DescribeInstances' largest page
MAX_PAGES = 200  # 200,000 instances: beyond that the mirror keeps what it read and says so in the log
MAX_AGE_SECONDS = 30.0


@dataclass(frozen=True)
class Snapshot:
    """Every instance as read, sorted by name, with the lowercased text a search matches."""

    instances: tuple[InstanceInfo, ...]
    keys: tuple[str, ...]  # "name id" lowercased, one per instance
    read_at: float  # the mirror's clock


def search_key(info: InstanceInfo) -> str:
    """Return what a typed word is looked for in: the name and the id, lowercased."""
    return f"{info.name} {info.instance_id}".lower()


class InstanceMirror:
    """Every instance Zenlayer has, as last read; refreshed in the background while people type."""

    def __init__(
        self,
        vm: VmApi,
        executor: Executor,
        *,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.vm = vm
        self.executor = executor
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self.on_refresh: Callable[[], None] = lambda: None  # called after each new read (in its thread)
        self._lock = threading.Lock()
        self._refreshing = False

    def current(self) -> Snapshot | None:
        """Return the instances as last read, sorted by name (None before the first read finished: the caller asks
        Zenlayer itself); a stale mirror is read again in the background meanwhile."""
        snapshot = self._snapshot
        if snapshot is None or self._clock() - snapshot.read_at > self.max_age_seconds:
            self.refresh_soon()
        return snapshot

    def refresh_soon(self) -> None:
        """Read every page again in the background, unless a read is under way already."""
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True
        try:
            self.executor.submit(self.refresh)
        except RuntimeError:  # shutting down
            with self._lock:
                self._refreshing = False

    def refresh(self) -> None:
        """Read every page of DescribeInstances and make it the mirror (a failed read keeps the previous one)."""
        try:
            started = self._clock()
            read: list[InstanceInfo] = []
            for page_num in range(1, MAX_PAGES + 1):
                page = self.vm.list_instances(InstanceQuery(), page_num=page_num, page_size=PAGE_SIZE)
                read.extend(page.instances)
                if not page.instances or len(read) >= page.total:
                    break
            else:
                log.warning("the instance mirror stopped after %d pages (%d instances)", MAX_PAGES, len(read))
            read.sort(key=lambda i: (i.name.lower(), i.instance_id))
            self._snapshot = Snapshot(tuple(read), tuple(search_key(i) for i in read), started)
            self.on_refresh()
        except VmError as exc:
            log.warning("could not refresh the instance mirror: %s", exc.describe())
        except Exception:
            log.exception("could not refresh the instance mirror")
        finally:
            with self._lock:
                self._refreshing = False
