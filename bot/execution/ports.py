"""What execution works on and records through: plain snapshots of operations, and the Journal port.

Execution calls Zenlayer and reads instance statuses; it never touches the database itself. Everything it decides
is written through the Journal (bot.operations.journal implements it), fenced by the operation's lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from bot.domain.actions import Action, Outcome
from bot.domain.vm_errors import VmError

# A call's effect as the instance rows record it: applied, or perhaps applied (None: not called, or refused).
ACCEPTED, UNKNOWN = "accepted", "unknown"


@dataclass(frozen=True)
class Target:
    """One instance an operation acts on, as its row stands."""

    row_id: int
    instance_id: str
    last_status: str | None = None
    outcome: Outcome | None = None
    call_result: str | None = None
    calls: int = 0
    unchanged_polls: int = 0
    missing_polls: int = 0


@dataclass(frozen=True)
class Job:
    """An operation whose Zenlayer calls are to be made: its action, who asked for it, its open instances."""

    operation_id: int
    action: Action
    actor: str  # who the calls are made for (the audit trail's actor)
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Watched:
    """An operation being watched: its included instances and whether its time is up (by the database's clock)."""

    operation_id: int
    action: Action
    actor: str
    past_deadline: bool
    targets: tuple[Target, ...]

    def job(self, targets: Sequence[Target]) -> Job:
        """Return the job that calls Zenlayer again for some of its instances."""
        return Job(self.operation_id, self.action, self.actor, tuple(targets))


class Ending(StrEnum):
    """How a watched operation ends (the names of the operation states it moves to)."""

    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


@dataclass
class PollPlan:
    """What one poll means for one watched operation: row changes, claims to release, calls to repeat, its end."""

    operation_id: int
    updates: dict[int, dict[str, Any]] = field(default_factory=dict)  # row id → column values (see Journal.apply)
    ended: list[str] = field(default_factory=list)  # instance ids that got an outcome (their claims go)
    reached: dict[int, str] = field(default_factory=dict)  # row id → instance id now RUNNING (address looked up)
    retry: list[Target] = field(default_factory=list)  # called with an unknown outcome and still unchanged
    told: bool = False  # a status changed that the thread and the confirmation must show
    ending: Ending | None = None
    error: str | None = None  # why polling failed, when it did and the operation timed out

    @property
    def empty(self) -> bool:
        """True when the poll changes, owes and ends nothing (nothing to write)."""
        return not (self.updates or self.retry or self.ending)


Part = tuple[Job, Sequence[Target]]  # one operation's share of a call
Made = tuple[Job, int, Sequence[Target]]  # one operation's share of a call made: its call id in the journal


class Journal(Protocol):
    """Records execution's intents and results, each write fenced by the operation's lease (bot.operations). Several
    operations sharing one Zenlayer call are recorded together: one transaction per step of the call, not per
    operation."""

    def begin_calls(self, parts: Sequence[Part]) -> dict[int, int]:
        """Record a call before making it, one row per operation (and its instances' outcome unknown), fenced by
        each lease and by the call counts each job read (a compare-and-set); return operation id → call id for
        those that passed both (the others must not be called)."""
        ...

    def complete_calls(
        self,
        made: Sequence[Made],
        outcome: str,
        error: VmError | None,
        zenlayer_request_id: str | None = None,
        *,
        call_result: str | None = UNKNOWN,
    ) -> None:
        """Complete recorded calls with their outcome and requestId, and audit each."""
        ...

    def set_outcome(self, job: Job, targets: Sequence[Target], outcome: Outcome, reason: str) -> None:
        """Record a final outcome for instances that will not be watched, and let go of their claims."""
        ...

    def finish_calls(self, finished: Sequence[tuple[Job, Sequence[str]]]) -> None:
        """The calls are made: watch each operation (or fail it when nothing is left to watch), with its errors."""
        ...

    def apply(self, plans: Sequence[PollPlan], addresses: dict[str, str]) -> set[int]:
        """Write polls' plans in one transaction, for the operations still leased to us; return their ids."""
        ...
