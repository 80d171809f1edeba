"""Read models: frozen copies of an operation and its instances, the only shape that leaves a database session."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from bot.db.models import Operation, OperationInstance
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


def record_of(row: Operation, as_of: datetime) -> OperationRecord:
    """Copy an ORM row (with its instances loaded) into a read model."""
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
        instances=tuple(_instance_of(i) for i in row.instances),
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
