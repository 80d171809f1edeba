"""Small interfaces the domain works through; app.py fills them with real implementations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class InstanceInfo:
    """What Zenlayer says about one instance."""

    instance_id: str
    name: str
    status: str
    zone: str | None = None


@runtime_checkable
class VmApi(Protocol):
    """The Zenlayer VM calls the domain needs; failures are bot.domain.vm_errors.VmError subclasses."""

    def start_instances(self, ids: Sequence[str]) -> str:
        """Start at most 100 STOPPED instances; return Zenlayer's requestId."""
        ...

    def describe_instances_status(self, ids: Sequence[str]) -> dict[str, str]:
        """Return {id: status} for the ids that exist (any number of ids; batched inside)."""
        ...

    def describe_instances(self, ids: Sequence[str]) -> dict[str, InstanceInfo]:
        """Return names, zones and statuses for the ids that exist (batched inside)."""
        ...


class DeliveryDeferred(Exception):
    """A message could not be sent now but will be later (e.g. Slack holds its channel back); not a failure."""


@dataclass(frozen=True)
class StatusChange:
    """An instance whose status moved since the thread was last told."""

    instance_id: str
    name: str | None
    old: str | None
    new: str | None  # None: the instance is no longer returned by Zenlayer


class Notifier(Protocol):
    """Tells people what happens to a start request; raises when the message could not be delivered."""

    def progress(self, request: Any, changes: Sequence[StatusChange]) -> None:
        """Reply in the request's thread with what changed and refresh the confirmation's progress line."""
        ...

    def finished(self, request: Any) -> str | None:
        """Post the final outcome (done, failed, timed out, expired) and update the confirmation.

        Returns the error that keeps the outcome from ever being posted (retrying cannot help), else None.
        """
        ...
