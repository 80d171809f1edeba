"""The start-request use cases: check grants, prepare a confirmation, and decide a click."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from bot.db.models import ANY_CHANNEL, RequestInstance, StartRequest, utcnow
from bot.db.session import Database
from bot.domain import audit, inventory, lifecycle
from bot.domain.errors import NotAllowed, UserError
from bot.domain.grant_admin import approvers_for
from bot.domain.grants import Coverage, check_coverage, list_grants, need_attributes
from bot.domain.inventory import LookupFailed, Resolution
from bot.domain.lifecycle import ACTIVE_STATES, NewInstance, State
from bot.domain.ports import InstanceInfo, VmApi
from bot.domain.vm_errors import VmError
from bot.domain.vocabulary import SYSTEM_ACTOR, GrantAction

log = logging.getLogger(__name__)

STARTABLE_STATUS = "STOPPED"


class NotCovered(NotAllowed):
    """The requester's grants do not cover some ids (in this channel)."""

    def __init__(self, action: str, coverage: Coverage):
        self.action = action
        self.coverage = coverage
        super().__init__(f"You may not {action} " + ", ".join(coverage.uncovered))


class NothingToStart(UserError):
    """Every requested id was skipped; carries the lookup so the reply can say why."""

    def __init__(self, prepared: Prepared):
        self.prepared = prepared
        super().__init__("None of these instances can be started")


class DuplicatePending(UserError):
    """The same user already has a pending confirmation for exactly these ids."""

    def __init__(self, request: StartRequest):
        # Plain values, not the row: the transaction this is raised from rolls back and expires its objects.
        self.request_id = request.id
        self.channel_id = request.channel_id
        self.message_ts = request.message_ts
        super().__init__("You already have a pending confirmation for these instances")


BUSY_REASON = "already being started by another request"


@dataclass(frozen=True)
class MessageRef:
    """Where another request's confirmation (and thread) is, for the chat layer to turn into a link."""

    channel_id: str
    message_ts: str | None


@dataclass(frozen=True)
class Skipped:
    """An id that will not be started, and why; `busy_with` names the request already starting it."""

    instance_id: str
    reason: str
    status: str | None = None
    name: str | None = None
    busy_with: MessageRef | None = None


@dataclass
class Prepared:
    """The outcome of looking up a start: what can be started, what is skipped, and the pending request."""

    user_id: str = ""
    channel_id: str = ""
    ids: list[str] = field(default_factory=list)
    needs_approval: bool = False
    startable: list[InstanceInfo] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    request: StartRequest | None = None
    approvers: list[str] = field(default_factory=list)  # who can approve, when approval is needed


class Decision(enum.StrEnum):
    """What a click on a confirmation asks for."""

    START = "start"
    CANCEL = "cancel"
    APPROVE = "approve"
    REJECT = "reject"


class ClickOutcome(enum.StrEnum):
    """What happened to a click."""

    APPROVED = "approved"  # the request will now be started
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    NOT_REQUESTER = "not_requester"
    SELF_APPROVAL = "self_approval"
    NOT_APPROVER = "not_approver"
    NOT_ALLOWED = "not_allowed"  # the clicker's own start grants no longer cover the ids
    REQUESTER_NOT_ALLOWED = "requester_not_allowed"  # an approver clicked, but the requester lost the grant
    NEEDS_APPROVAL = "needs_approval"  # the requester's grants now require a second person
    BUSY = "busy"  # another request is starting some of the ids
    EXPIRED = "expired"
    ALREADY_DECIDED = "already_decided"
    LOOKUP_FAILED = "lookup_failed"  # grants by name, group or tag need Zenlayer, which did not answer
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ClickResult:
    """The outcome of a click and the request as it stands afterwards."""

    outcome: ClickOutcome
    request: StartRequest | None
    coverage: Coverage | None = None
    busy: list[str] = field(default_factory=list)


_REFUSALS_TO_AUDIT = frozenset(
    {
        ClickOutcome.NOT_REQUESTER,
        ClickOutcome.SELF_APPROVAL,
        ClickOutcome.NOT_APPROVER,
        ClickOutcome.REQUESTER_NOT_ALLOWED,
        ClickOutcome.NEEDS_APPROVAL,
        ClickOutcome.BUSY,
    }
)


class StartService:
    """Checks grants, prepares confirmations and decides clicks; the watcher does the starting."""

    def __init__(
        self,
        db: Database,
        vm: VmApi,
        *,
        confirm_ttl_seconds: float,
        approval_ttl_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.db = db
        self.vm = vm
        self.confirm_ttl_seconds = confirm_ttl_seconds
        self.approval_ttl_seconds = approval_ttl_seconds
        self.clock = clock

    def coverage(
        self,
        user_id: str,
        channel_id: str,
        ids: Sequence[str],
        *,
        action: GrantAction = GrantAction.START,
        instances: Mapping[str, InstanceInfo] | None = None,
    ) -> Coverage:
        """Return the user's coverage for ids in this channel (a read, quick enough to answer before the ack)."""
        with self.db.session(readonly=True) as session:
            return check_coverage(
                list_grants(session, user_id), ids, action=action, channel_id=channel_id, instances=instances
            )

    def may_use_here(self, user_id: str, channel_id: str, action: GrantAction = GrantAction.START) -> bool:
        """True when the user holds any `action` grant usable in this channel (else nothing can be covered)."""
        with self.db.session(readonly=True) as session:
            return any(
                g.action == action and g.channel_id in (ANY_CHANNEL, channel_id) for g in list_grants(session, user_id)
            )

    def record_denial(
        self, user_id: str, channel_id: str, coverage: Coverage, *, action: GrantAction = GrantAction.START
    ) -> None:
        """Write a refusal to the audit trail."""
        with self.db.session() as session:
            audit.record(
                session, "denied", actor=user_id, action=action, channel=channel_id, uncovered=coverage.uncovered
            )

    def check(
        self,
        user_id: str,
        channel_id: str,
        ids: Sequence[str],
        *,
        action: GrantAction = GrantAction.START,
        instances: Mapping[str, InstanceInfo] | None = None,
    ) -> Coverage:
        """Return the user's coverage for ids in this channel; raise NotCovered (and audit it) when incomplete."""
        coverage = self.coverage(user_id, channel_id, ids, action=action, instances=instances)
        if not coverage.ok:
            self.record_denial(user_id, channel_id, coverage, action=action)
            raise NotCovered(action, coverage)
        return coverage

    def resolve(self, user_id: str, channel_id: str, words: Sequence[str]) -> Resolution:
        """Resolve typed ids and names, refusing (NotCovered) anything the user may not start here.

        Namesakes are narrowed to those the user may start; a name with none left is refused like any uncovered
        word, so a reply never shows an instance its reader may not start.
        """
        resolution = inventory.resolve(self.vm, words)
        self.check(user_id, channel_id, resolution.ids, instances=resolution.instances)
        if resolution.ambiguous:
            candidates = {c.instance_id: c for group in resolution.ambiguous.values() for c in group}
            allowed = set(self.coverage(user_id, channel_id, list(candidates), instances=candidates).allowed)
            kept = {
                name: [c for c in group if c.instance_id in allowed] for name, group in resolution.ambiguous.items()
            }
            refused = [name for name, group in kept.items() if not group]
            if refused:
                coverage = Coverage(uncovered=refused)
                self.record_denial(user_id, channel_id, coverage)
                raise NotCovered(GrantAction.START, coverage)
            resolution.ambiguous = kept
        return resolution

    def prepare(self, user_id: str, channel_id: str, ids: Sequence[str]) -> Prepared:
        """Look the ids up and open the pending request, with skip reasons as they are (no links)."""
        return self.open_request(self.look_up(user_id, channel_id, ids))

    def look_up(
        self,
        user_id: str,
        channel_id: str,
        ids: Sequence[str],
        known: Mapping[str, InstanceInfo] | None = None,
    ) -> Prepared:
        """Check grants and duplicates, look the ids up, and decide what can start; nothing is written yet.

        `known` is what a name lookup already learnt (ids absent from it do not exist). Grants by name, group or
        tag are matched against those attributes, so the lookup comes first for a user who holds any; a user
        with id grants only is refused before Zenlayer is asked. Ids another request holds are skipped with
        `busy_with` set, so the chat layer can point at that request (by rewriting the reason) before
        `open_request` stores it.
        """
        with self.db.session(readonly=True) as session:
            attributes_needed = need_attributes(list_grants(session, user_id), GrantAction.START)
        if not attributes_needed and known is None:
            self.check(user_id, channel_id, ids)
        found = known if known is not None else self._describe(ids)
        coverage = self.check(user_id, channel_id, ids, instances=found)
        with self.db.session(readonly=True) as session:
            pending = _pending_duplicate(session, user_id, channel_id, ids, self.clock())
            busy = _ids_in_active_requests(session, ids)
        if pending is not None:
            raise DuplicatePending(pending)
        prepared = Prepared(user_id=user_id, channel_id=channel_id, ids=list(ids))
        for instance_id in ids:
            info = found.get(instance_id)
            if info is None:
                prepared.skipped.append(Skipped(instance_id, "not found"))
            elif instance_id in busy:
                other = MessageRef(busy[instance_id].channel_id, busy[instance_id].message_ts)
                prepared.skipped.append(Skipped(instance_id, BUSY_REASON, info.status, info.name, other))
            elif info.status != STARTABLE_STATUS:
                prepared.skipped.append(Skipped(instance_id, f"is {info.status}", info.status, info.name))
            else:
                prepared.startable.append(info)
        if not prepared.startable:
            raise NothingToStart(prepared)
        prepared.needs_approval = any(i.instance_id in coverage.needs_approval for i in prepared.startable)
        return prepared

    def _describe(self, ids: Sequence[str]) -> dict[str, InstanceInfo]:
        """Ask Zenlayer about ids; LookupFailed when it cannot answer."""
        try:
            return self.vm.describe_instances(ids)
        except VmError as exc:
            raise LookupFailed(exc) from exc

    def open_request(self, prepared: Prepared) -> Prepared:
        """Create the pending request a look-up allows; DuplicatePending when an identical one got there first."""
        user_id, channel_id, ids = prepared.user_id, prepared.channel_id, prepared.ids
        needs_approval = prepared.needs_approval
        instances = [
            NewInstance(i.instance_id, name=i.name, zone=i.zone, status=i.status) for i in prepared.startable
        ] + [
            NewInstance(s.instance_id, name=s.name, status=s.status, to_start=False, skip_reason=s.reason)
            for s in prepared.skipped
        ]
        with self.db.session() as session:
            prepared.request = lifecycle.create_request(
                session,
                requester_id=user_id,
                channel_id=channel_id,
                instances=instances,
                needs_approval=needs_approval,
                ttl_seconds=self.approval_ttl_seconds if needs_approval else self.confirm_ttl_seconds,
                now=self.clock(),
            )
            # Two identical commands can pass the check above together; the later row stands down here.
            earlier = _pending_duplicate(session, user_id, channel_id, ids, self.clock(), before=prepared.request.id)
            if earlier is not None:
                raise DuplicatePending(earlier)
            if needs_approval:
                prepared.approvers = approvers_for(
                    list_grants(session),
                    [i.instance_id for i in prepared.startable],
                    channel_id,
                    user_id,
                    {i.instance_id: i for i in prepared.startable},
                )
        return prepared

    def attach_message(self, request_id: int, message_ts: str) -> None:
        """Remember the confirmation message, which is also the thread everything else is posted under."""
        with self.db.session() as session:
            session.execute(
                update(StartRequest)
                .where(StartRequest.id == request_id, StartRequest.message_ts.is_(None))
                .values(message_ts=message_ts)
                .execution_options(synchronize_session=False)
            )

    def abandon(self, request_id: int, reason: str) -> None:
        """Cancel a request whose confirmation could not be posted."""
        with self.db.session() as session:
            now = self.clock()
            if lifecycle.transition(
                session,
                request_id,
                from_states=[State.PENDING],
                to=State.CANCELLED,
                now=now,
                finished_at=now,
                error=reason,
            ):
                audit.record(session, "abandoned", actor=SYSTEM_ACTOR, request_id=request_id, reason=reason)

    def decide(self, request_id: int, user_id: str, decision: Decision) -> ClickResult:
        """Apply a click: only the requester may start or cancel; grants are checked again at the click."""
        try:
            instances = self._attributes_for_click(request_id, user_id)
        except VmError as exc:
            log.warning("could not look up the instances of request %s at a click: %s", request_id, exc.describe())
            with self.db.session(readonly=True) as session:
                return ClickResult(ClickOutcome.LOOKUP_FAILED, lifecycle.get_request(session, request_id))
        now = self.clock()
        with self.db.session() as session:
            request = lifecycle.get_request(session, request_id)
            if request is None:
                return ClickResult(ClickOutcome.UNKNOWN, None)
            result = self._apply(session, request, user_id, decision, now, instances)
            if result.outcome in _REFUSALS_TO_AUDIT:
                audit.record(
                    session,
                    "click_refused",
                    actor=user_id,
                    request_id=request_id,
                    decision=decision.value,
                    outcome=result.outcome.value,
                    busy=result.busy,
                )
            session.expire_all()
            return ClickResult(result.outcome, lifecycle.get_request(session, request_id), result.coverage, result.busy)

    def needs_lookup_at_click(self, request_id: int, user_id: str) -> bool:
        """True when deciding this click needs the instances looked up at Zenlayer (grants by name, group or tag).

        A quick database read, so the chat layer can tell, before acknowledging, whether the click's decision can
        be made at once or must wait for Zenlayer.
        """
        return self._to_look_up(request_id, user_id) is not None

    def _to_look_up(self, request_id: int, user_id: str) -> list[str] | None:
        """Return the ids to look up for a click on a pending request, or None when its grants are all id globs."""
        with self.db.session(readonly=True) as session:
            request = lifecycle.get_request(session, request_id)
            if request is None or request.state != State.PENDING:
                return None
            involved = list_grants(session, request.requester_id)
            if user_id != request.requester_id:
                involved += list_grants(session, user_id)
            if not (need_attributes(involved, GrantAction.START) or need_attributes(involved, GrantAction.APPROVE)):
                return None
            return self._to_start(request)

    def _attributes_for_click(self, request_id: int, user_id: str) -> dict[str, InstanceInfo] | None:
        """Look the request's instances up again when the grants that decide the click select by attributes.

        Done before the click's transaction, so a slow Zenlayer never holds a database lock; None when only id
        grants are involved (then the click needs no Zenlayer call at all).
        """
        ids = self._to_look_up(request_id, user_id)
        if ids is None:
            return None
        return self.vm.describe_instances(ids) if ids else {}

    def _apply(
        self,
        session: Session,
        request: StartRequest,
        user_id: str,
        decision: Decision,
        now: datetime,
        instances: Mapping[str, InstanceInfo] | None = None,
    ) -> ClickResult:
        """Decide one click inside a transaction; the state change itself is a compare-and-set."""
        if request.state != State.PENDING:
            return ClickResult(
                ClickOutcome.EXPIRED if request.state == State.EXPIRED else ClickOutcome.ALREADY_DECIDED, None
            )
        is_requester = user_id == request.requester_id
        if decision == Decision.CANCEL or (decision == Decision.START and not request.needs_approval):
            if not is_requester:
                return ClickResult(ClickOutcome.NOT_REQUESTER, None)
            if decision == Decision.CANCEL:
                if lifecycle.cancel(session, request.id, by=user_id, now=now):
                    return ClickResult(ClickOutcome.CANCELLED, None)
                return ClickResult(self._lost_race(session, request.id), None)
        elif not request.needs_approval:
            # Approve / Reject belong to requests that asked for a second person, never to a plain confirmation.
            return ClickResult(ClickOutcome.NOT_REQUESTER, None)
        elif is_requester:
            return ClickResult(ClickOutcome.SELF_APPROVAL, None)
        elif decision == Decision.START:
            return ClickResult(ClickOutcome.NOT_REQUESTER, None)  # a forged Start is no way to approve
        else:
            approver = check_coverage(
                list_grants(session, user_id),
                self._to_start(request),
                action=GrantAction.APPROVE,
                channel_id=request.channel_id,
                instances=instances,
            )
            if not approver.ok:
                return ClickResult(ClickOutcome.NOT_APPROVER, None, approver)
            if decision == Decision.REJECT:
                if lifecycle.reject(session, request.id, by=user_id, now=now):
                    return ClickResult(ClickOutcome.REJECTED, None, approver)
                return ClickResult(self._lost_race(session, request.id), None)
        refusal = self._refuse_start(session, request, by_requester=is_requester, instances=instances)
        if refusal is not None:
            return refusal
        if lifecycle.approve(session, request.id, by=user_id, now=now):
            return ClickResult(ClickOutcome.APPROVED, None)
        return ClickResult(self._lost_race(session, request.id), None)

    def _refuse_start(
        self,
        session: Session,
        request: StartRequest,
        *,
        by_requester: bool,
        instances: Mapping[str, InstanceInfo] | None = None,
    ) -> ClickResult | None:
        """Check, at the moment of approval, that the request may still start; return the refusal, if any."""
        to_start = self._to_start(request)
        coverage = check_coverage(
            list_grants(session, request.requester_id),
            to_start,
            action=GrantAction.START,
            channel_id=request.channel_id,
            instances=instances,
        )
        if not coverage.ok:
            audit.record(
                session,
                "denied",
                actor=request.requester_id,
                request_id=request.id,
                action=GrantAction.START,
                uncovered=coverage.uncovered,
                at="click",
            )
            outcome = ClickOutcome.NOT_ALLOWED if by_requester else ClickOutcome.REQUESTER_NOT_ALLOWED
            return ClickResult(outcome, None, coverage)
        if by_requester and coverage.needs_approval:
            return ClickResult(ClickOutcome.NEEDS_APPROVAL, None, coverage)
        busy = [i for i, other in _ids_in_active_requests(session, to_start).items() if other.id != request.id]
        if busy:
            return ClickResult(ClickOutcome.BUSY, None, coverage, busy)
        return None

    @staticmethod
    def _to_start(request: StartRequest) -> list[str]:
        """Return the ids a request would start."""
        return [i.instance_id for i in request.instances if i.to_start]

    def _lost_race(self, session: Session, request_id: int) -> ClickOutcome:
        """Explain a compare-and-set that did not win: someone else decided first, or time ran out."""
        session.expire_all()
        current = lifecycle.get_request(session, request_id)
        if current is not None and current.state == State.PENDING:
            return ClickOutcome.EXPIRED  # still pending, so the CAS lost on the expiry condition
        if current is not None and current.state == State.EXPIRED:
            return ClickOutcome.EXPIRED
        return ClickOutcome.ALREADY_DECIDED


def _pending_duplicate(
    session: Session, user_id: str, channel_id: str, ids: Sequence[str], now: datetime, before: int | None = None
) -> StartRequest | None:
    """Return the user's unexpired pending request in this channel for exactly these ids (older than `before`)."""
    wanted = set(ids)
    query = (
        select(StartRequest)
        .where(
            StartRequest.requester_id == user_id,
            StartRequest.channel_id == channel_id,
            StartRequest.state == State.PENDING,
            StartRequest.expires_at > now,
        )
        .options(selectinload(StartRequest.instances))
        .order_by(StartRequest.id)
    )
    if before is not None:
        query = query.where(StartRequest.id < before)
    candidates = session.scalars(query)
    for request in candidates:
        if {i.instance_id for i in request.instances} == wanted:
            return request
    return None


def _ids_in_active_requests(session: Session, ids: Sequence[str]) -> dict[str, StartRequest]:
    """Map each id that another request is starting or watching to that request."""
    rows = session.execute(
        select(RequestInstance.instance_id, StartRequest)
        .join(StartRequest, RequestInstance.request_id == StartRequest.id)
        .where(
            RequestInstance.instance_id.in_(list(ids)),
            RequestInstance.to_start.is_(True),
            RequestInstance.outcome.is_(None),
            StartRequest.state.in_([s.value for s in ACTIVE_STATES]),
        )
    ).all()
    return {instance_id: request for instance_id, request in rows}
