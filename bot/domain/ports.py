"""Small interfaces the domain works through; app.py fills them with real implementations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class InstanceInfo:
    """What Zenlayer says about one instance: how people know it, where it is, and how to reach it."""

    instance_id: str
    name: str
    status: str
    zone: str | None = None
    resource_group_id: str | None = None
    resource_group_name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()  # (key, value) pairs
    public_ips: tuple[str, ...] = ()
    private_ips: tuple[str, ...] = ()
    instance_type: str | None = None

    @property
    def ip(self) -> str | None:
        """The address people connect to: the first public IP, else the first private one."""
        return (self.public_ips or self.private_ips or (None,))[0]


@dataclass(frozen=True)
class InstanceQuery:
    """DescribeInstances filters; None means "any". A name ending in `*` is a prefix match, as at Zenlayer."""

    name: str | None = None
    resource_group_id: str | None = None
    zone: str | None = None
    status: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class InstancePage:
    """One page of DescribeInstances and how many instances match in all."""

    instances: list[InstanceInfo] = field(default_factory=list)
    total: int = 0


@runtime_checkable
class VmApi(Protocol):
    """The Zenlayer VM calls the domain needs; failures are bot.domain.vm_errors.VmError subclasses.

    Start, stop and reboot each take 1 to 100 ids, all or nothing, and only ask: the instances change state
    afterwards (watch them with describe_instances_status).
    """

    def start_instances(self, ids: Sequence[str]) -> str:
        """Start at most 100 STOPPED instances; return Zenlayer's requestId."""
        ...

    def stop_instances(self, ids: Sequence[str]) -> str:
        """Shut down at most 100 RUNNING instances gracefully, never forced; return Zenlayer's requestId."""
        ...

    def reboot_instances(self, ids: Sequence[str]) -> str:
        """Reboot at most 100 RUNNING instances; return Zenlayer's requestId."""
        ...

    def describe_instances_status(self, ids: Sequence[str]) -> dict[str, str]:
        """Return {id: status} for the ids that exist (any number of ids; batched inside)."""
        ...

    def describe_instances(self, ids: Sequence[str]) -> dict[str, InstanceInfo]:
        """Return what Zenlayer says about the ids that exist (batched inside)."""
        ...

    def list_instances(self, query: InstanceQuery, *, page_num: int = 1, page_size: int = 1000) -> InstancePage:
        """Return one page (page_size at most 1000) of the instances matching query, with the total count."""
        ...


@dataclass(frozen=True)
class StatusChange:
    """An instance whose status moved since the thread was last told."""

    instance_id: str
    name: str | None
    old: str | None
    new: str | None  # None: the instance is no longer returned by Zenlayer
    ip: str | None = None  # its address, once known (learnt when it reaches RUNNING)
