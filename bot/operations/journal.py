"""The execution Journal in SQL: calls recorded before they are made, results after, polls applied in one
transaction — every write fenced by the operation's lease, in the same statement, on the database's clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, insert, select, update

from bot.db import audit
from bot.db.clock import db_time
from bot.db.lease import Lease, Owner
from bot.db.models import Operation, OperationInstance, ZenlayerCall
from bot.db.session import Database
from bot.db.sql import rowcount, table_of
from bot.domain.actions import Outcome
from bot.domain.vm_errors import VmError
from bot.domain.vocabulary import SYSTEM_ACTOR
from bot.execution.ports import ACCEPTED, UNKNOWN, Job, Made, Part, PollPlan, Target, Watched
from bot.operations import claims, repository
from bot.operations.polls import apply_polls
from bot.operations.states import FINAL_STATES, State
from bot.operations.watching import read_work

INTERRUPTED = "the process making this call stopped before it returned"
UNRECORDED = "the call was made, but the database failed before its outcome was recorded"


class _CalledSince(Exception):
    """Jobs' instances were called for since they were read (their snapshots are stale): they must not call again."""

    def __init__(self, operation_ids: set[int]):
        super().__init__(sorted(operation_ids))
        self.operation_ids = operation_ids


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

    def begin(self, operation_ids: Sequence[int]) -> list[int]:
        """Move approved operations leased to us to starting (their calls are about to be made), in one
        compare-and-set; return those this replica moved."""
        with self.db.session() as session:
            return repository.transition_many(
                session, operation_ids, from_state=State.APPROVED, to=State.STARTING, owner=self.owner.name
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
                ids = json.loads(call.instance_ids)
                audit.record_many(session, [self._call_entry(job, ids, UNKNOWN, INTERRUPTED, None, call.replica)])
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

    def begin_calls(self, parts: Sequence[Part]) -> dict[int, int]:
        """Record a call before making it, one row per operation, in one transaction: each fenced by its lease
        (renewed for the call) and by the call counts its job read, in the same statements; return operation id →
        call id for those still ours (a part another job of ours called for since it was read is left out)."""
        while parts:
            try:
                return self._begin_calls(parts)
            except _CalledSince as stale:  # rare (a race within this replica): record the others again, alone
                parts = [(job, targets) for job, targets in parts if job.operation_id not in stale.operation_ids]
        return {}

    def _begin_calls(self, parts: Sequence[Part]) -> dict[int, int]:
        """One attempt of begin_calls (raising _CalledSince, which rolls it back, when a part's counts moved)."""
        with self.db.session() as session:
            held = set(
                session.scalars(
                    update(Operation)
                    .where(Operation.id.in_([job.operation_id for job, _ in parts]), self._fenced())
                    .values(lease_until=self.lease.until())
                    .returning(Operation.id)
                    .execution_options(synchronize_session=False)
                )
            )
            live = [(job, targets) for job, targets in parts if job.operation_id in held]
            if not live:
                return {}
            counted: set[int] = set()
            for calls, row_ids in _rows_by_calls([t for _, targets in live for t in targets]).items():
                counted.update(
                    session.scalars(
                        update(OperationInstance)
                        .where(OperationInstance.id.in_(row_ids), OperationInstance.calls == calls)
                        .values(calls=calls + 1, call_result=UNKNOWN, unchanged_polls=0)
                        .returning(OperationInstance.id)
                        .execution_options(synchronize_session=False)
                    )
                )
            stale = {job.operation_id for job, targets in live if any(t.row_id not in counted for t in targets)}
            if stale:
                raise _CalledSince(stale)
            table = table_of(ZenlayerCall)
            rows = [
                {
                    "request_id": job.operation_id,
                    "action": job.action.zenlayer_action,
                    "instance_ids": json.dumps([t.instance_id for t in targets]),
                    "replica": self.owner.name,
                }
                for job, targets in live
            ]
            made = session.execute(
                insert(table).values(created_at=db_time()).returning(table.c.id, table.c.request_id), rows
            )
            return {int(request_id): int(call_id) for call_id, request_id in made}

    def complete_calls(
        self,
        made: Sequence[Made],
        outcome: str,
        error: VmError | None,
        zenlayer_request_id: str | None = None,
        *,
        call_result: str | None = UNKNOWN,
    ) -> None:
        """Complete recorded calls with their outcome and requestId, and audit each, in one transaction."""
        zenlayer_request_id = zenlayer_request_id or (error.request_id if error else None)
        described = None if error is None else error.describe()
        with self.db.session() as session:
            session.execute(
                update(ZenlayerCall)
                .where(ZenlayerCall.id.in_([call_id for _, call_id, _ in made]))
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
                .where(OperationInstance.id.in_([t.row_id for _, _, targets in made for t in targets]))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            audit.record_many(
                session,
                [
                    self._call_entry(job, [t.instance_id for t in ts], outcome, described, zenlayer_request_id)
                    for job, _, ts in made
                ],
            )

    def _call_entry(
        self,
        job: Job,
        ids: list[str],
        outcome: str,
        error: str | None,
        zenlayer_request_id: str | None,
        replica: str | None = None,
    ) -> dict[str, Any]:
        """One Zenlayer call's audit event (start calls keep the event name they always had)."""
        return audit.entry(
            f"zenlayer_{job.action.name}_instances",
            actor=job.actor,
            request_id=job.operation_id,
            zenlayer_request_id=zenlayer_request_id,
            instance_ids=ids,
            outcome=outcome,
            error=error,
            replica=replica or self.owner.name,
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

    def finish_calls(self, finished: Sequence[tuple[Job, Sequence[str]]]) -> None:
        """The calls are made: watch each operation until its deadline, or fail it when nothing is left to watch;
        one compare-and-set per distinct error (usually one for all)."""
        ids = [job.operation_id for job, _ in finished]
        if not ids:
            return
        with self.db.session() as session:
            watched = set(
                session.scalars(
                    select(OperationInstance.request_id)
                    .where(
                        OperationInstance.request_id.in_(ids),
                        OperationInstance.included.is_(True),
                        OperationInstance.outcome.is_(None),
                    )
                    .distinct()
                )
            )
            groups: dict[tuple[bool, str | None], list[int]] = {}
            for job, errors in finished:
                groups.setdefault((job.operation_id in watched, "; ".join(errors) or None), []).append(job.operation_id)
            for (watching, error), group in groups.items():
                if not watching:
                    repository.transition_many(session, group, from_state=State.STARTING, to=State.FAILED, error=error)
                    continue
                repository.transition_many(
                    session,
                    group,
                    from_state=State.STARTING,
                    to=State.WATCHING,
                    started_at=func.coalesce(Operation.started_at, db_time()),
                    watch_deadline=db_time(self.watch_seconds),
                    error=error,
                )

    # --- polls ----------------------------------------------------------------------------------------------

    def apply(self, plans: Sequence[PollPlan], addresses: dict[str, str]) -> set[int]:
        """Write polls' plans in one transaction, for the operations still leased to us; return their ids."""
        return apply_polls(self.db, self.owner, self.lease, plans, addresses, reminder_seconds=self.reminder_seconds)
