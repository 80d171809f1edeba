"""The execution Journal in SQL: calls recorded before they are made, results after, polls applied in one
transaction — every write fenced by the operation's lease, in the same statement, on the database's clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.orm import Session

from bot.db import audit
from bot.db.clock import db_time
from bot.db.lease import Lease, Owner
from bot.db.models import Operation, OperationInstance, ZenlayerCall
from bot.db.session import Database
from bot.db.sql import rowcount
from bot.domain.actions import Outcome
from bot.domain.vm_errors import VmError
from bot.domain.vocabulary import SYSTEM_ACTOR
from bot.execution.ports import ACCEPTED, UNKNOWN, Job, PollPlan, Target, Watched
from bot.operations import claims, repository
from bot.operations.polls import apply_polls
from bot.operations.states import FINAL_STATES, State
from bot.operations.watching import read_work

INTERRUPTED = "the process making this call stopped before it returned"
UNRECORDED = "the call was made, but the database failed before its outcome was recorded"


class _CalledSince(Exception):
    """A job's instances were called for since it read them (its snapshot is stale): it must not call again."""


def _rows_by_calls(targets: Sequence[Target]) -> dict[int, list[int]]:
    """Group targets' row ids by the number of calls the job read for them."""
    grouped: dict[int, list[int]] = {}
    for target in targets:
        grouped.setdefault(target.calls, []).append(target.row_id)
    return grouped


class SqlJournal:
    """Implements bot.execution.ports.Journal for one replica (its owner name fences every write)."""

    def __init__(
        self, db: Database, *, owner: Owner, lease: Lease, watch_seconds: float, reminder_seconds: float = 900.0
    ):
        self.db = db
        self.owner = owner
        self.lease = lease
        self.watch_seconds = watch_seconds
        self.reminder_seconds = reminder_seconds

    def _fenced(self) -> Any:
        """SQL: the operation is leased to this replica and its lease is live (the fence of every call)."""
        return and_(Operation.lease_owner == self.owner.name, self.lease.live(Operation.lease_until))

    # --- reading work -------------------------------------------------------------------------------------

    def jobs(self, operation_ids: Sequence[int], state: State) -> list[Job]:
        """Return the operations among operation_ids in `state` and leased to us, as jobs (their open instances)."""
        return [w.job(w.targets) for w in read_work(self.db, self.owner, operation_ids, state)]

    def watched(self, operation_ids: Sequence[int]) -> list[Watched]:
        """Return the watching operations among operation_ids leased to us, with whether their time is up."""
        return read_work(self.db, self.owner, operation_ids, State.WATCHING)

    # --- calls ----------------------------------------------------------------------------------------------

    def begin(self, operation_id: int) -> bool:
        """Move an approved operation to starting (its calls are about to be made); True iff this replica did."""
        with self.db.session() as session:
            return repository.transition(
                session, operation_id, from_states=[State.APPROVED], to=State.STARTING, owner=self.owner.name
            )

    def settle_interrupted(self, job: Job) -> None:
        """An operation left starting by a crash: its open calls' outcome is unknown (polls will tell)."""
        with self.db.session() as session:
            open_calls = list(
                session.scalars(
                    select(ZenlayerCall).where(
                        ZenlayerCall.request_id == job.operation_id, ZenlayerCall.completed_at.is_(None)
                    )
                )
            )
            for call in open_calls:
                session.execute(
                    update(ZenlayerCall)
                    .where(ZenlayerCall.id == call.id, ZenlayerCall.completed_at.is_(None))
                    .values(completed_at=db_time(), outcome=UNKNOWN, error=INTERRUPTED)
                    .execution_options(synchronize_session=False)
                )
                self._audit_call(session, job, json.loads(call.instance_ids), UNKNOWN, INTERRUPTED, None, call.replica)
            audit.record(
                session,
                "start_interrupted",
                actor=SYSTEM_ACTOR,
                request_id=job.operation_id,
                open_calls=len(open_calls),
                resumed_by=self.owner.name,
            )

    def settle_unrecorded(self) -> int:
        """Settle calls whose outcome was never written (the database failed between the call and its record) once
        their operation is over and they are a lease old: outcome unknown, as the instances' status already told.
        A chore: an operation still starting has its open calls settled by whoever resumes it."""
        over = select(Operation.id).where(Operation.state.in_([s.value for s in FINAL_STATES]))
        with self.db.session() as session:
            return rowcount(
                session.execute(
                    update(ZenlayerCall)
                    .where(
                        ZenlayerCall.completed_at.is_(None),
                        ZenlayerCall.request_id.in_(over),
                        self.lease.older_than_one(ZenlayerCall.created_at),
                    )
                    .values(completed_at=db_time(), outcome=UNKNOWN, error=UNRECORDED)
                    .execution_options(synchronize_session=False)
                )
            )

    def begin_call(self, job: Job, targets: Sequence[Target]) -> int | None:
        """Record a call before making it, fenced by the lease (renewed for the call) and by the number of calls the
        job read for each instance; None when the lease is lost or another job of ours called for them since."""
        try:
            with self.db.session() as session:
                held = session.execute(
                    update(Operation)
                    .where(Operation.id == job.operation_id, self._fenced())
                    .values(lease_until=self.lease.until())
                    .execution_options(synchronize_session=False)
                )
                if not rowcount(held):
                    return None
                counted = sum(
                    rowcount(
                        session.execute(
                            update(OperationInstance)
                            .where(OperationInstance.id.in_(rows), OperationInstance.calls == calls)
                            .values(calls=calls + 1, call_result=UNKNOWN, unchanged_polls=0)
                            .execution_options(synchronize_session=False)
                        )
                    )
                    for calls, rows in _rows_by_calls(targets).items()
                )
                if counted != len(targets):
                    raise _CalledSince(job.operation_id)  # rolls the counts back
                return int(
                    session.scalars(
                        insert(ZenlayerCall)
                        .values(
                            request_id=job.operation_id,
                            action=job.action.zenlayer_action,
                            instance_ids=json.dumps([t.instance_id for t in targets]),
                            replica=self.owner.name,
                            created_at=db_time(),
                        )
                        .returning(ZenlayerCall.id)
                    ).one()
                )
        except _CalledSince:
            return None

    def complete_call(
        self,
        job: Job,
        call_id: int,
        ids: Sequence[str],
        outcome: str,
        error: VmError | None,
        zenlayer_request_id: str | None = None,
        *,
        call_result: str | None = UNKNOWN,
    ) -> None:
        """Complete a recorded call with its outcome and requestId, and audit it."""
        zenlayer_request_id = zenlayer_request_id or (error.request_id if error else None)
        described = None if error is None else error.describe()
        with self.db.session() as session:
            session.execute(
                update(ZenlayerCall)
                .where(ZenlayerCall.id == call_id)
                .values(
                    completed_at=db_time(), outcome=outcome, zenlayer_request_id=zenlayer_request_id, error=described
                )
                .execution_options(synchronize_session=False)
            )
            values: dict[str, Any] = {"call_result": call_result}
            if zenlayer_request_id is not None and outcome == ACCEPTED:
                values["zenlayer_request_id"] = zenlayer_request_id
            session.execute(
                update(OperationInstance)
                .where(OperationInstance.request_id == job.operation_id, OperationInstance.instance_id.in_(list(ids)))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            self._audit_call(session, job, list(ids), outcome, described, zenlayer_request_id, self.owner.name)

    def _audit_call(
        self,
        session: Session,
        job: Job,
        ids: list[str],
        outcome: str,
        error: str | None,
        zenlayer_request_id: str | None,
        replica: str,
    ) -> None:
        """Write one Zenlayer call to the audit trail (start calls keep the event name they always had)."""
        event = f"zenlayer_{job.action.name}_instances"
        audit.record(
            session,
            event,
            actor=job.actor,
            request_id=job.operation_id,
            zenlayer_request_id=zenlayer_request_id,
            instance_ids=ids,
            outcome=outcome,
            error=error,
            replica=replica,
        )

    def set_outcome(self, job: Job, targets: Sequence[Target], outcome: Outcome, reason: str) -> None:
        """Record a final outcome for instances that will not be watched, and let go of their claims."""
        with self.db.session() as session:
            session.execute(
                update(OperationInstance)
                .where(OperationInstance.id.in_([t.row_id for t in targets]))
                .values(outcome=outcome.value, skip_reason=reason[:255])
                .execution_options(synchronize_session=False)
            )
            claims.release_claims(session, job.operation_id, [t.instance_id for t in targets])

    def finish_calls(self, job: Job, errors: Sequence[str]) -> None:
        """The calls are made: watch the operation until its deadline, or fail it when nothing is left to watch."""
        error = "; ".join(errors) or None
        with self.db.session() as session:
            remaining = session.scalar(
                select(OperationInstance.id).where(
                    OperationInstance.request_id == job.operation_id,
                    OperationInstance.included.is_(True),
                    OperationInstance.outcome.is_(None),
                )
            )
            if remaining is None:
                repository.transition(
                    session, job.operation_id, from_states=[State.STARTING], to=State.FAILED, error=error
                )
                return
            started = session.scalar(select(Operation.started_at).where(Operation.id == job.operation_id))
            repository.transition(
                session,
                job.operation_id,
                from_states=[State.STARTING],
                to=State.WATCHING,
                started_at=started or db_time(),
                watch_deadline=db_time(self.watch_seconds),
                error=error,
            )

    # --- polls ----------------------------------------------------------------------------------------------

    def apply(self, plans: Sequence[PollPlan], addresses: dict[str, str]) -> set[int]:
        """Write polls' plans in one transaction, for the operations still leased to us; return their ids."""
        return apply_polls(self.db, self.owner, self.lease, plans, addresses, reminder_seconds=self.reminder_seconds)
