"""Small interfaces the domain works through; app.py fills them with real implementations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class InstanceInfo:
    """What Zenlayer says about one instance."""

    instance_id: str
    name: str
    status: str
    zone: str | None = None


class VmApi(Protocol):
    """The Zenlayer VM calls the domain needs; errors are bot.zenlayer.errors.ZenlayerError subclasses."""

    def start_instances(self, ids: Sequence[str]) -> str:
        """Start at most 100 STOPPED instances; return Zenlayer's requestId."""
        ...

    def describe_instances_status(self, ids: Sequence[str]) -> dict[str, str]:
        """Return {id: status} for the ids that exist (any number of ids; batched inside)."""
        ...

    def describe_instances(self, ids: Sequence[str]) -> dict[str, InstanceInfo]:
        """Return names, zones and statuses for the ids that exist (batched inside)."""
        ...
