"""Read models: frozen copies of an operation and its instances, the only shape that leaves a database session."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.db.models import Operation, OperationInstance, Run
from bot.domain.actions import Action, Outcome, action_named
from bot.operations.states import ACTIVE_STATES, State


@dataclass(frozen=True)
class InstanceRecord:
    """One instance of an operation, as last seen."""

    row_id: int
    instance_id: str
    name: str | None = None
    zone: str | None = None
    ip_address: str | None = None
    included: bool = True  # false: skipped at confirmation
    skip_reason: str | None = None
    initial_status: str | None = None
    last_status: str | None = None
    reported_status: str | None = None
    outcome: Outcome | None = None
    zenlayer_request_id: str | None = None


class RunState(enum.StrEnum):
    """Where a time-boxed run is."""

    WAITING = "waiting"  # its start is under way
    RUNNING = "running"  # its clock runs: stop_at is set
    STOPPING = "stopping"  # its stop operation is made
    STOPPED = "stopped"
    ENDED = "ended"  # never RUNNING, or stopped elsewhere (a failed stop leaves its run running: the timer stands)


EXTENSION_SECONDS = 3600.0  # what an Extend button adds unless RUN_EXTEND_SECONDS says otherwise


@dataclass(frozen=True)
class RunRecord:
    """One run of one instance, as read, with the database's time of the read."""

    run_id: int
    request_id: int  # the start that brought the instance up (whose thread the run reports in)
    instance_id: str
    requester_id: str
    channel_id: str
    state: RunState
    duration_seconds: float
    cap_seconds: float | None
    started_at: datetime | None
    stop_at: datetime | None
    extensions: int
    ended_at: datetime | None
    ended_reason: str | None
    stop_request_id: int | None
    as_of: datetime

    @property
    def seconds_left(self) -> float | None:
        """Seconds until the stop (None before the clock started)."""
        return None if self.stop_at is None else max(0.0, (self.stop_at - self.as_of).total_seconds())

    @property
    def ran_seconds(self) -> float | None:
        """How long the instance ran in this run: until it ended, else until now (None before RUNNING)."""
        if self.started_at is None:
            return None
        return max(0.0, ((self.ended_at or self.as_of) - self.started_at).total_seconds())

    def can_extend(self, seconds: float = EXTENSION_SECONDS) -> bool:
        """True while the run is running and `seconds` more keep it within now + its cap."""
        if self.state != RunState.RUNNING or self.stop_at is None:
            return False
        return self.cap_seconds is None or (self.seconds_left or 0.0) + seconds <= self.cap_seconds


@dataclass(frozen=True)
class OperationRecord:
    """An operation as it stood when read, with `as_of` the database's time of that read."""

    id: int
    action: Action
    requester_id: str
    channel_id: str
    message_ts: str | None
    state: State
    needs_approval: bool
    created_at: datetime
    expires_at: datetime
    as_of: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome_posted_at: datetime | None = None
    error: str | None = None
    approvers: tuple[str, ...] = ()  # who may approve it, as found when it was opened
    instances: tuple[InstanceRecord, ...] = field(default_factory=tuple)
    run_seconds: float | None = None  # a time-boxed start's run length
    run_cap_seconds: float | None = None
    parent_id: int | None = None  # the start in whose thread this operation reports (a run's stop)
    parent_message_ts: str | None = None
    runs: tuple[RunRecord, ...] = ()  # a start's runs, or the runs this stop ends

    @property
    def thread_ts(self) -> str | None:
        """The message this operation's thread hangs from: its own confirmation, or its parent's."""
        return self.message_ts if self.parent_id is None else self.parent_message_ts

    @property
    def live_runs(self) -> list[RunRecord]:
        """The runs whose clock is running."""
        return [r for r in self.runs if r.state == RunState.RUNNING]

    @property
    def included(self) -> list[InstanceRecord]:
        """The instances the operation acts on (not those skipped at confirmation)."""
        return [i for i in self.instances if i.included]

    @property
    def active(self) -> bool:
        """True while the operation is approved and not yet final."""
        return self.state in ACTIVE_STATES

    @property
    def untold(self) -> list[InstanceRecord]:
        """The included instances whose status changed since the thread was last told (skipped ones aside)."""
        return [i for i in self.included if i.skip_reason is None and i.last_status != i.reported_status]

    @property
    def settled(self) -> bool:
        """True when every included instance has an outcome."""
        return all(i.outcome is not None for i in self.included)


@dataclass(frozen=True)
class Holder:
    """The active operation that holds an instance: enough for the Slack layer to link to its thread."""

    request_id: int
    channel_id: str
    message_ts: str | None


def record_of(
    row: Operation,
    as_of: datetime,
    runs: tuple[RunRecord, ...] = (),
    parent_message_ts: str | None = None,
    instances: Sequence[OperationInstance] | None = None,
) -> OperationRecord:
    """Copy an ORM row (with its instances loaded, or given) into a read model."""
    return OperationRecord(
        id=row.id,
        action=action_named(row.action),
        requester_id=row.requester_id,
        channel_id=row.channel_id,
        message_ts=row.message_ts,
        state=State(row.state),
        needs_approval=row.needs_approval,
        created_at=row.created_at,
        expires_at=row.expires_at,
        as_of=as_of,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        outcome_posted_at=row.outcome_posted_at,
        error=row.error,
        approvers=tuple(json.loads(row.approvers)) if row.approvers else (),
        instances=tuple(_instance_of(i) for i in (row.instances if instances is None else instances)),
        run_seconds=row.run_seconds,
        run_cap_seconds=row.run_cap_seconds,
        parent_id=row.parent_id,
        parent_message_ts=parent_message_ts,
        runs=runs,
    )


def run_of(row: Run, as_of: datetime) -> RunRecord:
    """Copy one run row into a read model."""
    return RunRecord(
        row.id,
        row.request_id,
        row.instance_id,
        row.requester_id,
        row.channel_id,
        RunState(row.state),
        row.duration_seconds,
        row.cap_seconds,
        row.started_at,
        row.stop_at,
        row.extensions,
        row.ended_at,
        row.ended_reason,
        row.stop_request_id,
        as_of,
    )


def _instance_of(row: OperationInstance) -> InstanceRecord:
    """Copy one instance row into a read model."""
    return InstanceRecord(
        row_id=row.id,
        instance_id=row.instance_id,
        name=row.name,
        zone=row.zone,
        ip_address=row.ip_address,
        included=row.included,
        skip_reason=row.skip_reason,
        initial_status=row.initial_status,
        last_status=row.last_status,
        reported_status=row.reported_status,
        outcome=Outcome(row.outcome) if row.outcome else None,
        zenlayer_request_id=row.zenlayer_request_id,
    )


@dataclass(frozen=True)
class HomeRun:
    """One of the caller's running time-boxed runs, as the Home shows it (with Extend and Stop)."""

    request_id: int
    instance_id: str
    name: str | None
    channel_id: str
    message_ts: str | None  # the start's confirmation: the run's thread
    stop_at: datetime | None
    seconds_left: float | None
    can_extend: bool  # Extend keeps it within its cap (no button otherwise)
