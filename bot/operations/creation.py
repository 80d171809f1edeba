"""Recording new operations: pending, with their instances and a `request_created` audit event each — one INSERT
for the operations and one for their instances however many (the auto-stops of one firing; a person's operation
is a set of one). What happens to them next is the repository's (bot.operations.repository)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from bot.db import audit
from bot.db.clock import as_utc, db_time
from bot.db.models import Operation, OperationInstance
from bot.db.sql import fit, length_of, table_of
from bot.domain.actions import Action
from bot.domain.errors import InvalidInput
from bot.domain.ids import is_instance_id
from bot.operations.states import State


@dataclass(frozen=True)
class NewInstance:
    """One instance to record in a new operation, as looked up before asking for confirmation."""

    instance_id: str
    name: str | None = None
    zone: str | None = None
    status: str | None = None
    included: bool = True
    skip_reason: str | None = None


@dataclass(frozen=True)
class NewOperation:
    """One operation to record: who asks for which action on which instances, and where it reports.

    `approvers` are the people who may approve it (shown on its confirmation while it waits); `run_seconds` makes a
    start time-boxed; `parent_id` is the operation in whose thread it reports (an auto-stop: its run's start).
    """

    action: Action
    requester_id: str
    channel_id: str
    instances: Sequence[NewInstance]
    needs_approval: bool = False
    approvers: Sequence[str] = ()
    run_seconds: float | None = None
    run_cap_seconds: float | None = None
    parent_id: int | None = None

    def row(self) -> dict[str, Any]:
        """The operation's columns that differ from one new operation to another."""
        return {
            "action": self.action.name,
            "requester_id": self.requester_id,
            "channel_id": self.channel_id,
            "needs_approval": self.needs_approval,
            "approvers": json.dumps(list(self.approvers)) if self.approvers else None,
            "run_seconds": self.run_seconds,
            "run_cap_seconds": self.run_cap_seconds,
            "parent_id": self.parent_id,
        }


def create(session: Session, *, ttl_seconds: float, **operation: Any) -> int:
    """Record one pending operation (NewOperation's fields), expiring ttl_seconds from now; return its id."""
    return create_many(session, [NewOperation(**operation)], ttl_seconds=ttl_seconds)[0]


def create_many(session: Session, operations: Sequence[NewOperation], *, ttl_seconds: float) -> list[int]:
    """Record pending operations with their instances, expiring ttl_seconds from now, and audit each; return their
    ids in order. One INSERT for the operations and one for their instances, however many."""
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
    if not operations:
        return []
    uniques = [_unique(o.instances) for o in operations]
    table = table_of(Operation)
    keys = list(operations[0].row())
    made = session.execute(
        insert(table)
        .values(state=State.PENDING.value, created_at=db_time(), updated_at=db_time(), expires_at=db_time(ttl_seconds))
        .returning(table.c.id, table.c.expires_at, *(table.c[k] for k in keys)),
        [o.row() for o in operations],
    ).all()
    # RETURNING's order is not promised: match rows by their values (operations alike in every column are alike).
    by_values: dict[tuple[Any, ...], list[tuple[int, datetime]]] = {}
    for row in made:
        by_values.setdefault(tuple(row[2:]), []).append((int(row.id), row.expires_at))
    ids = [by_values[tuple(o.row().values())].pop(0) for o in operations]
    rows = [_instance_row(operation_id, i) for (operation_id, _), new in zip(ids, uniques, strict=True) for i in new]
    session.execute(insert(OperationInstance), rows)
    audit.record_many(
        session,
        [
            audit.entry(
                "request_created",
                actor=operation.requester_id,
                request_id=operation_id,
                action=operation.action.name,
                channel=operation.channel_id,
                needs_approval=operation.needs_approval,
                to_start=[i.instance_id for i in unique if i.included],
                skipped={i.instance_id: i.skip_reason for i in unique if not i.included},
                expires_at=as_utc(expires_at).isoformat(),
            )
            for operation, (operation_id, expires_at), unique in zip(operations, ids, uniques, strict=True)
        ],
    )
    return [operation_id for operation_id, _ in ids]


def _unique(instances: Sequence[NewInstance]) -> list[NewInstance]:
    """Return the instances by first mention, refusing none at all and anything that is not an instance id."""
    if not instances:
        raise InvalidInput("an operation needs at least one instance")
    bad = [i.instance_id for i in instances if not is_instance_id(i.instance_id)]
    if bad:
        raise InvalidInput(f"not instance ids: {', '.join(repr(b) for b in bad[:10])}")
    first_mention: dict[str, NewInstance] = {}
    for instance in instances:
        first_mention.setdefault(instance.instance_id, instance)
    return list(first_mention.values())


def _instance_row(operation_id: int, new: NewInstance) -> dict[str, Any]:
    """Return the row for one new instance, with what Zenlayer said cut to fit its columns."""
    return {
        "request_id": operation_id,
        "instance_id": new.instance_id,
        "name": fit(new.name, length_of(OperationInstance, "name")),
        "zone": fit(new.zone, length_of(OperationInstance, "zone")),
        "initial_status": fit(new.status, length_of(OperationInstance, "initial_status")),
        "last_status": fit(new.status, length_of(OperationInstance, "last_status")),
        "included": new.included,
        "skip_reason": fit(new.skip_reason, length_of(OperationInstance, "skip_reason")),
    }
