"""Writing one poll of every watched operation: one transaction, fenced by each operation's lease."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, bindparam, delete, update
from sqlalchemy.orm import Session

from bot.db.clock import db_time
from bot.db.lease import Lease, Owner
from bot.db.models import InstanceClaim, Operation, OperationInstance
from bot.db.session import Database
from bot.delivery import outbox
from bot.domain.actions import Outcome
from bot.execution.ports import Ending, PollPlan
from bot.operations import repository, runs
from bot.operations.states import State


def apply_polls(
    db: Database,
    owner: Owner,
    lease: Lease,
    plans: Sequence[PollPlan],
    addresses: dict[str, str],
    *,
    reminder_seconds: float,
) -> set[int]:
    """Write polls' plans in one transaction: statuses, claims, what Slack is owed and the operations they end;
    the lease check is folded in (only operations still leased to us and watching are written)."""
    plans = [p for p in plans if not p.empty]
    if not plans:
        return set()
    with db.session() as session:
        mine = set(
            session.scalars(
                update(Operation)
                .where(
                    Operation.id.in_([p.operation_id for p in plans]),
                    Operation.lease_owner == owner.name,
                    Operation.state == State.WATCHING.value,
                )
                .values(lease_until=lease.until())
                .returning(Operation.id)
                .execution_options(synchronize_session=False)
            )
        )
        written = [p for p in plans if p.operation_id in mine]
        _write_rows(session, written, addresses)
        for plan in written:  # a time-boxed run's clock starts when its instance is RUNNING, in this transaction
            runs.start(session, plan.operation_id, plan.reached.values(), reminder_seconds=reminder_seconds)
        # An operation that ends lets go of all its instances with its final transition.
        ended = [i for p in written if p.ending is None for i in p.ended]
        if ended:
            session.execute(
                delete(InstanceClaim)
                .where(InstanceClaim.request_id.in_(list(mine)), InstanceClaim.instance_id.in_(ended))
                .execution_options(synchronize_session=False)
            )
        moving = [p.operation_id for p in written if p.told and p.ending is None]
        repository.owe(session, moving, [outbox.Kind.PROGRESS, outbox.Kind.REFRESH])
        _end(session, written)
    return mine


def _end(session: Session, written: Sequence[PollPlan]) -> None:
    """Move the operations these polls ended to their final states (owing Slack the outcome)."""
    for ending in (Ending.DONE, Ending.FAILED):
        ids = [p.operation_id for p in written if p.ending == ending]
        repository.transition_many(session, ids, from_state=State.WATCHING, to=State(ending.value))
    for plan in written:
        if plan.ending == Ending.TIMED_OUT:
            # A failed poll's error explains the timeout; otherwise the calls' error stands.
            why: dict[str, Any] = {"error": plan.error} if plan.error else {}
            repository.transition(session, plan.operation_id, from_states=[State.WATCHING], to=State.TIMED_OUT, **why)


def _write_rows(session: Session, plans: Sequence[PollPlan], addresses: dict[str, str]) -> None:
    """Write every row change of the plans: one executemany per set of columns (SQL needs the same columns)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for plan in plans:
        for row_id, values in plan.updates.items():
            row = {k: (v.value if isinstance(v, Outcome) else v) for k, v in values.items() if k != "status_changed"}
            changed = bool(values.get("status_changed"))
            address = addresses.get(plan.reached.get(row_id, ""))
            if address:
                row["ip_address"] = address
            key = (*sorted(row), "status_changed" if changed else "")
            # Parameters may not share a column's name in an UPDATE's SET clause: prefix them.
            groups.setdefault(key, []).append({"row_id": row_id, **{f"v_{k}": v for k, v in row.items()}})
    table = OperationInstance.__table__
    assert isinstance(table, Table)  # a plain executemany UPDATE (the ORM's bulk UPDATE wants whole rows)
    for key, rows in groups.items():
        columns = [k for k in key if k and k != "status_changed"]
        stamp = {"status_changed_at": db_time()} if "status_changed" in key else {}
        statement = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values({**{c: bindparam(f"v_{c}") for c in columns}, **stamp})
        )
        session.execute(statement, rows)
