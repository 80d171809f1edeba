"""Clicks on a confirmation: recorded before they are acknowledged (so no crash loses one), then decided once.

A click carries no authority of its own: its operation is acted on only when the clicked message is that
operation's message in its channel, the clicker is the one the button is for, and the grants still allow it —
checked again at the click, never trusted from the confirmation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.db import audit
from bot.db.clock import db_time
from bot.db.lease import Lease, Owner
from bot.db.models import Click
from bot.db.session import Database
from bot.db.sql import rowcount
from bot.delivery import outbox
from bot.domain.ports import InstanceInfo, VmApi
from bot.domain.vm_errors import VmError
from bot.domain.vocabulary import GrantAction
from bot.grants.authority import Authority, Question
from bot.grants.rules import Coverage
from bot.operations import repository, run_clicks
from bot.operations.claims import InstancesBusy
from bot.operations.click_model import (
    RUN_DECISIONS,
    SHOWN_IN_THE_CONFIRMATION,
    ClickOutcome,
    ClickResult,
    ClickRow,
    Decision,
    audit_refusal,
)
from bot.operations.records import EXTENSION_SECONDS, OperationRecord
from bot.operations.states import State
from bot.runtime.group_commit import GroupCommit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Checks:
    """What the grants said at the click, read before the deciding transaction (never holding it open)."""

    requester: Coverage | None = None  # the requester's grants for the action
    approver: Coverage | None = None  # the clicker's approve grants, for Approve and Reject


class Clicks:
    """Records clicks (group-committed: each waits for its own row's commit) and decides them."""

    def __init__(
        self,
        db: Database,
        vm: VmApi,
        authority: Authority,
        *,
        owner: Owner,
        lease: Lease,
        extend_seconds: float = EXTENSION_SECONDS,
    ):
        self.db = db
        self.vm = vm
        self.authority = authority
        self.owner = owner
        self.lease = lease
        self.extend_seconds = extend_seconds  # what a run's Extend adds
        self._clicks: GroupCommit[dict[str, object], int] = GroupCommit(self._insert)
        # Clicks this process is deciding right now: its sweep leaves them to the request that recorded them.
        self._deciding: set[int] = set()
        self._deciding_lock = threading.Lock()

    def record(self, click: ClickRow) -> int:
        """Record a click (one quick insert) before it is acknowledged, so no crash can lose it; return its id."""
        row: dict[str, object] = {
            "request_id": click.request_id,
            "user_id": click.user_id,
            "decision": click.decision.value,
            "channel_id": click.channel_id,
            "message_ts": click.message_ts,
            "replica": self.owner.name,
        }
        return self._clicks.submit(row)

    def _insert(self, rows: Sequence[dict[str, object]]) -> list[int]:
        """Insert clicks in one committed transaction; return their ids in the order of rows."""
        # One statement for the whole batch (insertmanyvalues), committed when it returns; someone waits for the ack.
        with self.db.writing(urgent=True) as connection:
            statement = insert(Click).values(created_at=db_time()).returning(Click.id, sort_by_parameter_order=True)
            return list(connection.execute(statement, list(rows)).scalars())

    def decide(self, click_id: int, *, response_url: str | None = None) -> ClickResult | None:
        """Decide a recorded click; None when it was decided already (by recovery, or by another replica).

        `response_url` is where the clicker can be told privately if the confirmation cannot show the decision.
        """
        with self._deciding_lock:
            self._deciding.add(click_id)
        try:
            return self._decide_once(click_id, response_url)
        finally:
            with self._deciding_lock:
                self._deciding.discard(click_id)

    def _decide_once(self, click_id: int, response_url: str | None) -> ClickResult | None:
        """Read a recorded click and its checks, then decide it in one transaction (None: decided already)."""
        with self.db.session(readonly=True) as session:
            recorded = session.get(Click, click_id)
            if recorded is None or recorded.decided_at is not None:
                return None
            click = ClickRow(
                recorded.request_id,
                recorded.user_id,
                Decision(recorded.decision),
                recorded.channel_id,
                recorded.message_ts,
            )
            before = repository.record(session, click.request_id)
        run_checks = None
        if click.decision in RUN_DECISIONS:
            run_checks = run_clicks.checks(self.authority, self.vm, before, click, self.extend_seconds)
        checks, lookup_failed = self._checks(before, click) if run_checks is None else (_Checks(), False)
        with self.db.session() as session:
            taken = session.execute(
                update(Click)
                .where(Click.id == click_id, Click.decided_at.is_(None))
                .values(decided_at=db_time())
                .execution_options(synchronize_session=False)
            )
            if rowcount(taken) != 1:
                return None
            if lookup_failed:
                # Decided as refused: the user is told to try again, so it must never be carried out by recovery.
                result = ClickResult(ClickOutcome.LOOKUP_FAILED, repository.record(session, click.request_id))
            elif run_checks is not None:
                result = run_clicks.apply(session, click, run_checks)
            else:
                result = self._decide(session, click, checks, response_url)
            session.execute(
                update(Click)
                .where(Click.id == click_id)
                .values(outcome=result.outcome.value)
                .execution_options(synchronize_session=False)
            )
            return result

    def drop(self, click_id: int) -> None:
        """Decide a click as nothing: the same signed request was answered before (a replay)."""
        with self.db.session() as session:
            session.execute(
                update(Click)
                .where(Click.id == click_id, Click.decided_at.is_(None))
                .values(decided_at=db_time(), outcome="replay")
                .execution_options(synchronize_session=False)
            )

    def decide_orphans(self) -> list[ClickResult]:
        """Decide clicks whose deciding failed or whose process died: this replica's predecessor's at once, its own
        a heartbeat after they were recorded unless it is deciding them right now, and any other replica's once
        they are a lease old (their own process decides them within milliseconds, or soon, or died)."""
        mine = and_(Click.replica == self.owner.name, self.lease.older_than_a_beat(Click.created_at))
        with self.db.session(readonly=True) as session:
            orphans = list(
                session.scalars(
                    select(Click.id)
                    .where(
                        Click.decided_at.is_(None),
                        or_(self.owner.predecessor(Click.replica), mine, self.lease.older_than_one(Click.created_at)),
                    )
                    .order_by(Click.id)
                )
            )
        with self._deciding_lock:
            orphans = [click_id for click_id in orphans if click_id not in self._deciding]
        results = [self.decide(click_id) for click_id in orphans]
        return [r for r in results if r is not None]

    # --- deciding -------------------------------------------------------------------------------------------

    def _checks(self, operation: OperationRecord | None, click: ClickRow) -> tuple[_Checks, bool]:
        """Read the grants that decide the click (looking the instances up when grants select by attributes)."""
        if operation is None or operation.state != State.PENDING:
            return _Checks(), False
        ids = [i.instance_id for i in operation.included]
        grant = operation.action.grant
        instances: Mapping[str, InstanceInfo] | None = None
        users = [operation.requester_id, click.user_id]
        if ids and self.authority.needs_lookup(users, [grant, GrantAction.APPROVE]):
            try:
                instances = self.vm.describe_instances(ids)
            except VmError as exc:
                log.warning(
                    "could not look up the instances of request %s at a click: %s", operation.id, exc.describe()
                )
                return _Checks(), True
        where = operation.channel_id
        requester = self.authority.check(Question(operation.requester_id, grant, ids, where, instances))
        approver = None
        if click.decision in (Decision.APPROVE, Decision.REJECT) and click.user_id != operation.requester_id:
            approver = self.authority.check(Question(click.user_id, GrantAction.APPROVE, ids, where, instances))
        return _Checks(requester, approver), False

    def _decide(self, session: Session, click: ClickRow, checks: _Checks, response_url: str | None) -> ClickResult:
        """Apply a click in one transaction; the state change itself is a compare-and-set."""
        operation = repository.record(session, click.request_id)
        if operation is None:
            return ClickResult(ClickOutcome.UNKNOWN, None)
        if not _on_its_message(session, operation, click):
            result = ClickResult(ClickOutcome.WRONG_MESSAGE, None)
        else:
            try:
                with session.begin_nested():  # an approval that cannot claim its instances is undone whole
                    result = self._apply(session, operation, click, checks)
            except InstancesBusy as busy:
                result = ClickResult(ClickOutcome.BUSY, None, None, sorted(busy.holders), busy.holders)
        if result.outcome in SHOWN_IN_THE_CONFIRMATION:
            # The confirmation shows the decision (sent by the outbox); the clicker hears if it cannot.
            outbox.enqueue(
                session, operation.id, outbox.Kind.REFRESH, notify_user=click.user_id, response_url=response_url
            )
        elif result.outcome == ClickOutcome.WITHDRAWN:
            # Found after all (the click carries its ts, now noted): show it withdrawn rather than leave it live.
            outbox.enqueue(session, operation.id, outbox.Kind.REFRESH)
        audit_refusal(session, click, operation.id, result.outcome, busy=result.busy)
        return ClickResult(
            result.outcome, repository.record(session, operation.id), result.coverage, result.busy, result.holders
        )

    def _apply(self, session: Session, operation: OperationRecord, click: ClickRow, checks: _Checks) -> ClickResult:
        """Decide one click inside a transaction."""
        if operation.state != State.PENDING:
            return ClickResult(_settled_outcome(operation.state), None)
        is_requester = click.user_id == operation.requester_id
        decision = click.decision
        if decision == Decision.CANCEL or (decision == Decision.CONFIRM and not operation.needs_approval):
            if not is_requester:
                return ClickResult(ClickOutcome.NOT_REQUESTER, None)
            if decision == Decision.CANCEL:
                if repository.decide(
                    session, operation.id, State.CANCELLED, by=click.user_id, event="request_cancelled"
                ):
                    return ClickResult(ClickOutcome.CANCELLED, None)
                return ClickResult(_lost_race(session, operation.id), None)
        elif not operation.needs_approval:
            # Approve / Reject belong to operations that asked for a second person, never to a plain confirmation.
            return ClickResult(ClickOutcome.NOT_REQUESTER, None)
        elif is_requester:
            return ClickResult(ClickOutcome.SELF_APPROVAL, None)
        elif decision == Decision.CONFIRM:
            return ClickResult(ClickOutcome.NOT_REQUESTER, None)  # a forged go-ahead is no way to approve
        else:
            approver = checks.approver
            if approver is None or not approver.ok:
                return ClickResult(ClickOutcome.NOT_APPROVER, None, approver)
            if decision == Decision.REJECT:
                if repository.decide(session, operation.id, State.REJECTED, by=click.user_id, event="request_rejected"):
                    return ClickResult(ClickOutcome.REJECTED, None, approver)
                return ClickResult(_lost_race(session, operation.id), None)
        refusal = _refusal(session, operation, checks.requester, by_requester=is_requester)
        if refusal is not None:
            return refusal
        if repository.approve(session, operation.id, by=click.user_id):
            return ClickResult(ClickOutcome.APPROVED, None)
        return ClickResult(_lost_race(session, operation.id), None)


def _on_its_message(session: Session, operation: OperationRecord, click: ClickRow) -> bool:
    """True when the click was made on this operation's own message (noting the message when the click came
    before the bot's note of its post: a message belongs to one operation, a unique key makes sure)."""
    if click.channel_id is not None and click.channel_id != operation.channel_id:
        return False
    if operation.message_ts is not None or click.message_ts is None:
        return operation.message_ts == click.message_ts or click.message_ts is None
    try:
        with session.begin_nested():
            if repository.attach_message(session, operation.id, click.message_ts):
                return True
    except IntegrityError:  # that message is another operation's
        return False
    # Noted meanwhile by the post's own record (PostgreSQL re-checks the WHERE after waiting for that writer):
    # the click belongs if it was made on that very message.
    current = repository.record(session, operation.id)
    return current is not None and current.message_ts == click.message_ts


def _refusal(
    session: Session, operation: OperationRecord, coverage: Coverage | None, *, by_requester: bool
) -> ClickResult | None:
    """Check, at the moment of approval, that the operation may still go ahead; return the refusal, if any."""
    if coverage is None or not coverage.ok:
        audit.record(
            session,
            "denied",
            actor=operation.requester_id,
            request_id=operation.id,
            action=operation.action.grant,
            uncovered=coverage.uncovered if coverage else [],
            at="click",
        )
        outcome = ClickOutcome.NOT_ALLOWED if by_requester else ClickOutcome.REQUESTER_NOT_ALLOWED
        return ClickResult(outcome, None, coverage)
    if by_requester and coverage.needs_approval:
        return ClickResult(ClickOutcome.NEEDS_APPROVAL, None, coverage)
    cap = run_cap_of(coverage, operation)
    if cap is not None and (operation.run_seconds is None or operation.run_seconds > cap):
        return ClickResult(ClickOutcome.RUN_TOO_LONG, None, coverage)
    return None  # whether another operation holds an instance is decided by the claims approve() inserts


def run_cap_of(coverage: Coverage, operation: OperationRecord) -> float | None:
    """The tightest run cap the grants put on a start's instances now (None: uncapped, or not a start)."""
    if operation.action.name != "start":
        return None
    caps = [cap for i in operation.included if (cap := coverage.caps.get(i.instance_id)) is not None]
    return min(caps) if caps else None


def _settled_outcome(state: State) -> ClickOutcome:
    """Name why a click on an operation no longer pending does nothing."""
    if state == State.EXPIRED:
        return ClickOutcome.EXPIRED
    if state == State.WITHDRAWN:
        return ClickOutcome.WITHDRAWN
    return ClickOutcome.ALREADY_DECIDED


def _lost_race(session: Session, operation_id: int) -> ClickOutcome:
    """Explain a compare-and-set that did not win: someone else decided first, or time ran out."""
    current = repository.record(session, operation_id)
    if current is not None and current.state in (State.PENDING, State.EXPIRED):
        return ClickOutcome.EXPIRED  # still pending: the CAS lost on the expiry condition
    return ClickOutcome.ALREADY_DECIDED
