"""Instances as people know them: resolve typed names to instances, and list what a caller may start."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from bot.db.session import Database
from bot.domain.errors import UserError
from bot.domain.ports import InstanceInfo, InstanceQuery, VmApi
from bot.domain.vm_errors import VmError
from bot.domain.vocabulary import GrantAction
from bot.grants.rules import check_coverage, list_grants
from bot.grants.selectors import GLOB_CHARACTERS

PAGE_SIZE = 1000  # DescribeInstances' largest page
MAX_PAGES = 50  # /vm list reads at most this many pages (50,000 instances) before saying it stopped
MAX_NAME_PAGES = 10  # a name is looked up in at most this many pages; past them it counts as shared, never unique


class LookupFailed(UserError):
    """Zenlayer could not be asked about the instances."""

    def __init__(self, error: VmError):
        self.error = error
        super().__init__(f"Could not look up the instances at Zenlayer: {error.describe()}")


@dataclass
class Resolution:
    """What the words of a command stand for: instances found by id or by a unique name, and the rest."""

    instances: dict[str, InstanceInfo] = field(default_factory=dict)  # by id, in the order typed, deduplicated
    missing: list[str] = field(default_factory=list)  # words that are neither an id nor a name
    ambiguous: dict[str, list[InstanceInfo]] = field(default_factory=dict)  # a name shared by several instances
    typed: dict[str, str] = field(default_factory=dict)  # id -> the word that found it (a refusal shows only that)

    @property
    def ids(self) -> list[str]:
        """The ids found, then the words not found (so that they are checked and reported like ids)."""
        return [*self.instances, *self.missing]


def resolve(vm: VmApi, words: Sequence[str]) -> Resolution:
    """Look words up as instance ids first, then as exact instance names; never guess between namesakes."""
    try:
        by_id = vm.describe_instances(list(words)) if words else {}
        resolution = Resolution()
        for word in words:
            info = by_id.get(word)
            if info is None:
                # A word with a glob character would be a fuzzy match at Zenlayer; ids and names here have none.
                if any(c in GLOB_CHARACTERS for c in word):
                    resolution.missing.append(word)
                    continue
                named, complete = namesakes(vm, word)
                if len(named) > 1 or (named and not complete):
                    resolution.ambiguous[word] = named
                    continue
                info = named[0] if named else None
            if info is None:
                resolution.missing.append(word)
            else:
                resolution.instances.setdefault(info.instance_id, info)  # a name and an id for one instance: once
                resolution.typed.setdefault(info.instance_id, word)
    except VmError as exc:
        raise LookupFailed(exc) from exc
    return resolution


def namesakes(vm: VmApi, name: str) -> tuple[list[InstanceInfo], bool]:
    """Return every instance named exactly name, page by page, and whether Zenlayer's whole answer was read."""
    found: list[InstanceInfo] = []
    read = 0
    for page_num in range(1, MAX_NAME_PAGES + 1):
        page = vm.list_instances(InstanceQuery(name=name), page_num=page_num, page_size=PAGE_SIZE)
        read += len(page.instances)
        found.extend(i for i in page.instances if i.name == name)
        if read >= page.total:
            return found, True
        if not page.instances:
            break  # an empty page before the total: the answer changed under us, or was cut off
    return found, False


@dataclass
class Listing:
    """The instances a caller may start in a channel (sorted by name), and how many Zenlayer has in all."""

    instances: list[InstanceInfo] = field(default_factory=list)
    scanned: int = 0
    total: int = 0
    truncated: bool = False  # stopped after MAX_PAGES pages


def matches_filter(info: InstanceInfo, pattern: str | None) -> bool:
    """True when the instance's name or id matches the glob (a plain word matches anywhere in either)."""
    if not pattern:
        return True
    glob = pattern if any(c in GLOB_CHARACTERS for c in pattern) else f"*{pattern}*"
    return fnmatchcase(info.name.lower(), glob.lower()) or fnmatchcase(info.instance_id, glob)


class Inventory:
    """Answers `/vm list`: pages through DescribeInstances and keeps what the caller's grants cover here."""

    def __init__(self, db: Database, vm: VmApi):
        self.db = db
        self.vm = vm

    def startable(self, user_id: str, channel_id: str, pattern: str | None = None) -> Listing:
        """Return the instances user_id may start from channel_id whose name or id matches pattern."""
        with self.db.session(readonly=True) as session:
            grants = list_grants(session, user_id)
        listing = Listing()
        if not any(g.action == GrantAction.START for g in grants):
            return listing
        page_num = 1
        try:
            while True:
                page = self.vm.list_instances(InstanceQuery(), page_num=page_num, page_size=PAGE_SIZE)
                listing.total = page.total
                listing.scanned += len(page.instances)
                wanted = {i.instance_id: i for i in page.instances if matches_filter(i, pattern)}
                coverage = check_coverage(
                    grants, list(wanted), action=GrantAction.START, channel_id=channel_id, instances=wanted
                )
                listing.instances.extend(wanted[i] for i in coverage.allowed)
                if not page.instances or listing.scanned >= page.total:
                    break
                if page_num >= MAX_PAGES:
                    listing.truncated = True
                    break
                page_num += 1
        except VmError as exc:
            raise LookupFailed(exc) from exc
        listing.instances.sort(key=lambda i: (i.name.lower(), i.instance_id))
        return listing
