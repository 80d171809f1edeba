"""Type-ahead: the instances a person may start in a channel whose name or id contains what they typed.

An offer is no permission: what is picked is looked up and checked again, live, when the modal is submitted.
Someone with no start grant usable in the channel is offered nothing, and so is someone naming exactly an instance no
grant of theirs covers there; both refusals are audited (once a minute per person, channel and instance, so typing
does not flood the trail).

Which of the mirror's instances a person may start is asked of the Authority once per person, channel, grants and
mirror (`allowed_among` remembers it): then each letter typed only filters that list. The question is asked ahead
when the modal opens, and again for the people typing when the mirror is read anew, so no letter waits for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bot.domain.actions import START
from bot.domain.ids import is_instance_id
from bot.domain.ports import InstanceInfo, InstanceQuery, VmApi
from bot.domain.vm_errors import VmError
from bot.domain.vocabulary import ANY_CHANNEL
from bot.grants.authority import Authority, Question
from bot.grants.selectors import GLOB_CHARACTERS
from bot.operations.mirror import InstanceMirror, search_key

MAX_OFFERED = 100  # Slack shows at most 100 options
MAX_TYPED = 100  # characters of a search that count
LIVE_PAGE = 1000
AUDIT_EVERY_SECONDS = 60.0
TYPING_SECONDS = 300.0  # someone who asked within this long is still typing: their list is prepared anew


class Suggestions:
    """Answers type-ahead from the instance mirror (or, before its first read, from one DescribeInstances page)."""

    def __init__(
        self, vm: VmApi, authority: Authority, mirror: InstanceMirror, *, clock: Callable[[], float] = time.monotonic
    ):
        self.vm = vm
        self.authority = authority
        self.mirror = mirror
        self._clock = clock
        self._lock = threading.Lock()
        self._audited: dict[tuple[str, ...], float] = {}
        self._typing: dict[tuple[str, str], float] = {}  # (user, where) -> when they last asked
        mirror.on_refresh = self._prepare_typing

    def offer(self, user_id: str, channel_id: str | None, typed: str) -> list[InstanceInfo]:
        """Return at most MAX_OFFERED instances `user_id` may start in `channel_id` (None: no channel picked yet,
        so only grants usable in any channel count), best match first: an exact name or id, then by name."""
        where = channel_id or ANY_CHANNEL
        needle = typed.strip()[:MAX_TYPED].lower()
        probe = Question(user_id, START.grant, [], where)
        if not self.authority.check(probe, quick=True).usable_here:
            self._refused(probe)
            return []
        with self._lock:
            self._typing[(user_id, where)] = self._clock()
        snapshot = self.mirror.current()
        if snapshot is None:
            offered = self._live(user_id, where, typed.strip()[:MAX_TYPED])
        else:
            allowed = self.authority.allowed_among(user_id, START.grant, where, snapshot.instances)
            offered = [info for info in allowed if needle in search_key(info)] if needle else allowed
            if not offered and needle:
                # Nothing offered for an exact name or id that exists: someone probing for what they may not start.
                named = [i.instance_id for i in snapshot.instances if needle in (i.name.lower(), i.instance_id.lower())]
                if named:
                    self._refused(Question(user_id, START.grant, named[:10], where))
        exact = [i for i in offered if needle in (i.name.lower(), i.instance_id.lower())]
        rest = [i for i in offered if needle not in (i.name.lower(), i.instance_id.lower())]
        return (exact + rest)[:MAX_OFFERED]

    def prepare(self, user_id: str, channel_id: str | None) -> None:
        """Work out ahead what someone may be offered (when their modal opens): their first letter finds it ready."""
        snapshot = self.mirror.current()
        if snapshot is not None:
            self.authority.allowed_among(user_id, START.grant, channel_id or ANY_CHANNEL, snapshot.instances)

    def _prepare_typing(self) -> None:
        """The mirror was read anew: prepare the lists of the people typing now (in the reading thread)."""
        now = self._clock()
        with self._lock:
            self._typing = {k: t for k, t in self._typing.items() if now - t < TYPING_SECONDS}
            typing = list(self._typing)
        for user_id, where in typing:
            self.prepare(user_id, None if where == ANY_CHANNEL else where)

    def _live(self, user_id: str, where: str, typed: str) -> list[InstanceInfo]:
        """Before the mirror's first read: one DescribeInstances page, narrowed by name prefix where Zenlayer can."""
        prefix = typed if typed and not any(c in GLOB_CHARACTERS for c in typed) else None
        try:
            page = self.vm.list_instances(InstanceQuery(name=f"{prefix}*" if prefix else None), page_size=LIVE_PAGE)
            found = {i.instance_id: i for i in page.instances if typed.lower() in search_key(i)}
            if is_instance_id(typed) and typed not in found:
                found.update(self.vm.describe_instances([typed]))
        except VmError:
            return []
        ordered = sorted(found.values(), key=lambda i: (i.name.lower(), i.instance_id))
        coverage = self.authority.check(Question(user_id, START.grant, [i.instance_id for i in ordered], where, found))
        return [found[i] for i in coverage.allowed]

    def _refused(self, probe: Question) -> None:
        """Audit that someone was offered nothing for want of a grant here — none usable in the channel, or none
        covering the instance they named — at most once a minute per person, channel and instances."""
        key = (probe.user_id, probe.channel_id, *probe.ids)
        now = self._clock()
        with self._lock:
            if now - self._audited.get(key, float("-inf")) < AUDIT_EVERY_SECONDS:
                return
            self._audited[key] = now
            if len(self._audited) > 10_000:
                self._audited = {k: t for k, t in self._audited.items() if now - t < AUDIT_EVERY_SECONDS}
        self.authority.record_denial(probe, self.authority.check(probe), at="type-ahead")
