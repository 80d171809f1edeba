"""The start-request use cases: check grants, prepare a confirmation, and decide a click."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session, selectinload

from bot.db.group_commit import GroupCommit
from bot.db.models import ANY_CHANNEL, Click, StartRequest, utcnow
from bot.db.session import Database
from bot.domain import audit, inventory, lifecycle, outbox
from bot.domain.errors import NotAllowed, UserError
from bot.domain.grant_admin import approvers_for
from bot.domain.grant_cache import GrantCache
from bot.domain.grants import Coverage, GrantRule, check_coverage, grant_rules, list_grants, need_attributes
from bot.domain.inventory import LookupFailed, Resolution
from bot.domain.lifecycle import Holder, InstancesBusy, NewInstance, State
from bot.domain.ports import InstanceInfo, VmApi
from bot.domain.vm_errors import VmError
from bot.domain.vocabulary import SYSTEM_ACTOR, GrantAction

log = logging.getLogger(__name__)

STARTABLE_STATUS = "STOPPED"
# A click still undecided this long after it was recorded lost the process that acknowledged it (which decides it
# within milliseconds otherwise): another replica decides it. A restarted replica decides its predecessor's at once.
ORPHANED_CLICK = timedelta(seconds=20)
# A pending request whose confirmation was not posted within this long never will be (its poster crashed or
# failed): it no longer blocks the same command, which replaces it.
UNPOSTED_GRACE = timedelta(seconds=15)


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
    WITHDRAWN = "withdrawn"  # its confirmation was not known to be posted, so the request was withdrawn unclicked
    LOOKUP_FAILED = "lookup_failed"  # grants by name, group or tag need Zenlayer, which did not answer
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ClickResult:
    """The outcome of a click and the request as it stands afterwards."""

    outcome: ClickOutcome
    request: StartRequest | None
    coverage: Coverage | None = None
    busy: list[str] = field(default_factory=list)
    holders: dict[str, Holder] = field(default_factory=dict)  # for BUSY: which request holds each id


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


@dataclass(frozen=True)
class BeforeAck:
    """What the check before an acknowledgement found: the coverage, and whether any grant is usable here."""

    coverage: Coverage
    usable_here: bool


def _usable_here(rules: Sequence[GrantRule], channel_id: str, action: GrantAction) -> bool:
    """True when any of rules grants action in channel_id."""
    return any(g.action == action and g.channel_id in (ANY_CHANNEL, channel_id) for g in rules)


_SHOWN_IN_THE_CONFIRMATION = frozenset({ClickOutcome.APPROVED, ClickOutcome.CANCELLED, ClickOutcome.REJECTED})


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
        grant_cache: GrantCache | None = None,
    ):
        self.db = db
        self.vm = vm
        self.grant_cache = grant_cache
        self.confirm_ttl_seconds = confirm_ttl_seconds
        self.approval_ttl_seconds = approval_ttl_seconds
        self.clock = clock
        # Clicks arriving together are recorded in one transaction: each still waits for its own row's commit.
        self._clicks: GroupCommit[dict[str, object], int] = GroupCommit(self._insert_clicks)

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
        with self.db.reading() as connection:
            return check_coverage(
                grant_rules(connection, user_id), ids, action=action, channel_id=channel_id, instances=instances
            )

    def may_use_here(self, user_id: str, channel_id: str, action: GrantAction = GrantAction.START) -> bool:
        """True when the user holds any `action` grant usable in this channel (else nothing can be covered).

        "Yes" may come from the grant cache; "no" always comes from a read begun after this call.
        """
        if self.grant_cache is not None:
            found = self.grant_cache.lookup(user_id)
            if _usable_here(found.rules, channel_id, action):
                return True
            if found.fresh:
                return False
        return _usable_here(self._fresh_rules(user_id), channel_id, action)

    def check_before_ack(self, user_id: str, channel_id: str, ids: Sequence[str]) -> BeforeAck:
        """Return start coverage for the ack, and whether anything could be covered here; a refusal is fresh.

        "Allowed" may come from the grant cache (prepare() checks the database again before anything happens);
        otherwise both answers come from one read of the user's rules begun after this call.
        """
        if self.grant_cache is not None:
            found = self.grant_cache.lookup(user_id)
            coverage = check_coverage(found.rules, ids, action=GrantAction.START, channel_id=channel_id)
            if coverage.ok:
                return BeforeAck(coverage, usable_here=True)
            rules = found.rules if found.fresh else self.grant_cache.fresh_rules_for(user_id)
        else:
            rules = self._fresh_rules(user_id)
        coverage = check_coverage(rules, ids, action=GrantAction.START, channel_id=channel_id)
        return BeforeAck(coverage, usable_here=coverage.ok or _usable_here(rules, channel_id, GrantAction.START))

    def coverage_before_ack(self, user_id: str, channel_id: str, ids: Sequence[str]) -> Coverage:
        """Return start coverage for the ack: "allowed" may come from the grant cache, a refusal always is fresh."""
        return self.check_before_ack(user_id, channel_id, ids).coverage

    def _fresh_rules(self, user_id: str) -> list[GrantRule]:
        """Return the user's grant rules as of a read begun after this call (shared with concurrent callers)."""
        if self.grant_cache is not None:
            return self.grant_cache.fresh_rules_for(user_id)
        with self.db.reading() as connection:
            return grant_rules(connection, user_id)

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
            busy = lifecycle.holders(session, ids)
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
            # One new request per user at a time: two identical commands arriving together queue here, and the
            # second finds the first below.
            lifecycle.lock_requester(session, user_id)
            now = self.clock()
            self._supersede_unposted(session, user_id, channel_id, ids, now)
            earlier = _pending_duplicate(session, user_id, channel_id, ids, now)
            if earlier is not None:
                raise DuplicatePending(earlier)
            prepared.request = lifecycle.create_request(
                session,
                requester_id=user_id,
                channel_id=channel_id,
                instances=instances,
                needs_approval=needs_approval,
                ttl_seconds=self.approval_ttl_seconds if needs_approval else self.confirm_ttl_seconds,
                now=now,
            )
            if needs_approval:
                prepared.approvers = approvers_for(
                    list_grants(session),
                    [i.instance_id for i in prepared.startable],
                    channel_id,
                    user_id,
                    {i.instance_id: i for i in prepared.startable},
                )
        return prepared

    def _supersede_unposted(
        self, session: Session, user_id: str, channel_id: str, ids: Sequence[str], now: datetime
    ) -> None:
        """Cancel this user's identical pending requests whose confirmation was never posted: this one replaces them."""
        stale = [
            r
            for r in _pending_same_ids(session, user_id, channel_id, ids, now)
            if r.message_ts is None and r.created_at <= now - UNPOSTED_GRACE
        ]
        for request in stale:
            _abandon(session, request.id, "its confirmation was never posted; replaced by a new command", now)

    def instances_of(self, request_id: int) -> list[str]:
        """Return the instance ids of a start request, in its order (`/vm status --request N`); grants are checked
        by whoever shows them."""
        with self.db.session(readonly=True) as session:
            request = lifecycle.get_request(session, request_id)
            if request is None:
                raise UserError(f"There is no start request {request_id}.")
            return [i.instance_id for i in request.instances]

    def attach_message(self, request_id: int, message_ts: str) -> None:
        """Remember the confirmation message, which is also the thread everything else is posted under."""
        with self.db.session() as session:
            _attach_message(session, request_id, message_ts)

    def abandon(self, request_id: int, reason: str) -> bool:
        """Withdraw a pending request whose confirmation could not be posted (or may not have been); True iff this
        call withdrew it (False: a click on the confirmation decided it first)."""
        with self.db.session() as session:
            return _abandon(session, request_id, reason, self.clock())

    def record_click(
        self, request_id: int, user_id: str, decision: Decision, *, message_ts: str | None, replica: str
    ) -> int:
        """Record a click (one quick insert) before it is acknowledged, so no crash can lose it; return its id."""
        row: dict[str, object] = {
            "request_id": request_id,
            "user_id": user_id,
            "decision": decision.value,
            "message_ts": message_ts,
            "replica": replica,
            "created_at": self.clock(),
        }
        return self._clicks.submit(row)

    def _insert_clicks(self, rows: Sequence[dict[str, object]]) -> list[int]:
        """Insert clicks in one committed transaction; return their ids in the order of rows."""
        # One statement for the whole batch (insertmanyvalues), committed when it returns; someone waits for the ack.
        with self.db.writing(urgent=True) as connection:
            statement = insert(Click).returning(Click.id, sort_by_parameter_order=True)
            return list(connection.execute(statement, list(rows)).scalars())

    def decide_click(self, click_id: int, *, response_url: str | None = None) -> ClickResult | None:
        """Decide a recorded click; None when it was decided already (by recovery, or by another replica).

        `response_url` is where the clicker can be told privately if the confirmation cannot show the decision.
        """
        with self.db.session(readonly=True) as session:
            recorded = session.get(Click, click_id)
            if recorded is None or recorded.decided_at is not None:
                return None
            request_id, user_id = recorded.request_id, recorded.user_id
        instances, lookup_error = self._look_up_for_click(request_id, user_id)
        with self.db.session() as session:
            now = self.clock()
            taken = session.execute(
                update(Click)
                .where(Click.id == click_id, Click.decided_at.is_(None))
                .values(decided_at=now)
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                return None
            click = session.get(Click, click_id)
            assert click is not None
            if lookup_error is not None:
                # Decided as refused: the user is told to try again, so it must never be started later by recovery.
                result = ClickResult(ClickOutcome.LOOKUP_FAILED, lifecycle.get_request(session, click.request_id))
            else:
                decision = Decision(click.decision)
                result = self._decide(
                    session, click.request_id, click.user_id, decision, click.message_ts, instances, response_url
                )
            click.outcome = result.outcome.value
            return result

    def decide_orphaned_clicks(self, *, replica: str, owner: str) -> list[ClickResult]:
        """Decide clicks whose process died before deciding them: this replica's predecessor's at once, others late."""
        now = self.clock()
        with self.db.session(readonly=True) as session:
            orphans = list(
                session.scalars(
                    select(Click.id)
                    .where(
                        Click.decided_at.is_(None),
                        Click.replica != owner,
                        or_(
                            Click.replica.startswith(f"{replica}/", autoescape=True),
                            Click.created_at < now - ORPHANED_CLICK,
                        ),
                    )
                    .order_by(Click.id)
                )
            )
        results = [self.decide_click(click_id) for click_id in orphans]
        return [r for r in results if r is not None]

    def decide(self, request_id: int, user_id: str, decision: Decision, message_ts: str | None = None) -> ClickResult:
        """Apply a click at once (without recording it first): only the requester may start or cancel."""
        instances, lookup_error = self._look_up_for_click(request_id, user_id)
        with self.db.session() as session:
            if lookup_error is not None:
                return ClickResult(ClickOutcome.LOOKUP_FAILED, lifecycle.get_request(session, request_id))
            return self._decide(session, request_id, user_id, decision, message_ts, instances)

    def _decide(
        self,
        session: Session,
        request_id: int,
        user_id: str,
        decision: Decision,
        message_ts: str | None,
        instances: Mapping[str, InstanceInfo] | None = None,
        response_url: str | None = None,
    ) -> ClickResult:
        """Apply a click in one transaction; grants are checked again at the click.

        `message_ts` is where the clicked confirmation is: a quick click can beat the bot's own note of it.
        `instances` are the attributes looked up just before, when grants select by name, group or tag.
        """
        now = self.clock()
        if message_ts:
            _attach_message(session, request_id, message_ts)
        request = lifecycle.get_request(session, request_id)
        if request is None:
            return ClickResult(ClickOutcome.UNKNOWN, None)
        try:
            with session.begin_nested():  # an approval that cannot claim its instances is undone whole
                result = self._apply(session, request, user_id, decision, now, instances)
        except InstancesBusy as busy:
            result = ClickResult(ClickOutcome.BUSY, None, None, sorted(busy.holders), busy.holders)
        if result.outcome in _SHOWN_IN_THE_CONFIRMATION:
            # The confirmation shows the decision (sent by the outbox); the clicker hears if it cannot.
            outbox.enqueue(
                session, request_id, outbox.Kind.REFRESH, now=now, notify_user=user_id, response_url=response_url
            )
        elif result.outcome == ClickOutcome.WITHDRAWN:
            # Found after all (the click carries its ts, now noted): show it withdrawn rather than leave it live.
            outbox.enqueue(session, request_id, outbox.Kind.REFRESH, now=now)
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
        return ClickResult(
            result.outcome,
            lifecycle.get_request(session, request_id),
            result.coverage,
            result.busy,
            result.holders,
        )

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

    def _look_up_for_click(
        self, request_id: int, user_id: str
    ) -> tuple[dict[str, InstanceInfo] | None, VmError | None]:
        """Look the request's instances up again when the grants that decide the click select by attributes.

        Done before the click's transaction (clicks are decided after their ack), so a slow Zenlayer never holds
        a database lock. Returns (None, None) when only id grants are involved: then no Zenlayer call is made.
        """
        ids = self._to_look_up(request_id, user_id)
        if ids is None:
            return None, None
        try:
            return (self.vm.describe_instances(ids) if ids else {}), None
        except VmError as exc:
            log.warning("could not look up the instances of request %s at a click: %s", request_id, exc.describe())
            return None, exc

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
            if request.state == State.EXPIRED:
                return ClickResult(ClickOutcome.EXPIRED, None)
            if is_withdrawn(request):
                return ClickResult(ClickOutcome.WITHDRAWN, None)
            return ClickResult(ClickOutcome.ALREADY_DECIDED, None)
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
        return None  # whether another request holds an instance is decided by the claims approve() inserts

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


def is_withdrawn(request: StartRequest) -> bool:
    """True for a request withdrawn because its confirmation was not known to be posted (nobody decided it)."""
    return request.state == State.CANCELLED and request.decided_by is None


def _attach_message(session: Session, request_id: int, message_ts: str) -> None:
    """Record where a request's confirmation was posted, unless already known."""
    session.execute(
        update(StartRequest)
        .where(StartRequest.id == request_id, StartRequest.message_ts.is_(None))
        .values(message_ts=message_ts)
        .execution_options(synchronize_session=False)
    )


def _abandon(session: Session, request_id: int, reason: str, now: datetime) -> bool:
    """Cancel a pending request nobody should click (its confirmation is not known to be in Slack), and audit why;
    True iff this call did it."""
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
        return True
    return False


def _pending_same_ids(
    session: Session, user_id: str, channel_id: str, ids: Sequence[str], now: datetime
) -> list[StartRequest]:
    """Return the user's unexpired pending requests in this channel for exactly these ids, oldest first."""
    wanted = set(ids)
    candidates = session.scalars(
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
    return [r for r in candidates if {i.instance_id for i in r.instances} == wanted]


def _pending_duplicate(
    session: Session, user_id: str, channel_id: str, ids: Sequence[str], now: datetime
) -> StartRequest | None:
    """Return the pending request this command would duplicate: posted, or still within its time to be posted."""
    for request in _pending_same_ids(session, user_id, channel_id, ids, now):
        if request.message_ts is not None or request.created_at > now - UNPOSTED_GRACE:
            return request
    return None
