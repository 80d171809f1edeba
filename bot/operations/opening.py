"""Opening an operation: resolve what the user typed, check grants, look the instances up, record the pending
operation and owe Slack its confirmation — all before anyone clicks anything."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from bot.db.session import Database
from bot.delivery import gate, outbox
from bot.domain.actions import START, Action
from bot.domain.durations import say_duration
from bot.domain.errors import UserError
from bot.domain.ports import InstanceInfo, VmApi
from bot.domain.vm_errors import VmError
from bot.domain.vocabulary import GrantAction
from bot.grants.authority import Authority, NotCovered, Question
from bot.grants.rules import Coverage
from bot.operations import claims, creation, inventory, repository
from bot.operations.inventory import LookupFailed, Resolution
from bot.operations.records import Holder


class NothingToDo(UserError):
    """Every requested id was skipped; carries the lookup so the reply can say why."""

    def __init__(self, prepared: Prepared):
        self.prepared = prepared
        super().__init__(f"None of these instances can be {prepared.action.words.done}")


class RunTooLong(UserError):
    """A time-boxed start asked for longer than the grants covering it allow."""

    def __init__(self, cap_seconds: float):
        self.cap_seconds = cap_seconds
        super().__init__(f"Your grants cap runs of these instances at {say_duration(cap_seconds)}")


class DuplicatePending(UserError):
    """The same user already has a pending confirmation for exactly these ids (posted, or on its way)."""

    def __init__(self, request_id: int, channel_id: str, message_ts: str | None):
        self.request_id = request_id
        self.channel_id = channel_id
        self.message_ts = message_ts
        super().__init__("You already have a pending confirmation for these instances")


@dataclass(frozen=True)
class Skipped:
    """An id that will not be acted on, and why; `busy_with` names the operation already holding it."""

    instance_id: str
    reason: str
    status: str | None = None
    name: str | None = None
    busy_with: Holder | None = None


@dataclass
class Prepared:
    """The outcome of looking up an operation: what can be acted on, what is skipped, and the pending operation."""

    action: Action
    user_id: str
    channel_id: str
    ids: list[str] = field(default_factory=list)
    needs_approval: bool = False
    ready: list[InstanceInfo] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    request_id: int | None = None
    wait_seconds: float = 0.0  # how long Slack makes the confirmation wait in this channel (429, pacing)
    run_seconds: float | None = None  # a time-boxed start's run length (asked for, or its grants' cap)
    run_cap_seconds: float | None = None  # the cap of the grants covering it (None: uncapped)


class Opening:
    """Resolves, checks and opens operations; the engine does the calling once someone confirms."""

    def __init__(
        self, db: Database, vm: VmApi, authority: Authority, *, confirm_ttl_seconds: float, approval_ttl_seconds: float
    ):
        self.db = db
        self.vm = vm
        self.authority = authority
        self.confirm_ttl_seconds = confirm_ttl_seconds
        self.approval_ttl_seconds = approval_ttl_seconds

    def resolve(
        self,
        user_id: str,
        channel_id: str,
        action: Action,
        words: Sequence[str],
        typed: Mapping[str, str] | None = None,
    ) -> Resolution:
        """Resolve typed ids and names, refusing (NotCovered) anything the user may not act on here.

        Namesakes are narrowed to those the user may act on; a name with none left is refused like any uncovered
        word, so a reply never shows an instance its reader may not act on. A refusal names what the user typed,
        never the id or name behind it (`typed` says what they typed for words the command added, e.g. a
        request's ids for `--request N`), so it cannot tell an instance they may not act on from no instance.
        """
        resolution = inventory.resolve(self.vm, words)
        resolution.typed.update(typed or {})
        question = Question(
            user_id, action.grant, resolution.ids, channel_id, resolution.instances, typed=resolution.typed
        )
        self.authority.require(question)
        if resolution.ambiguous:
            candidates = {c.instance_id: c for group in resolution.ambiguous.values() for c in group}
            allowed = set(
                self.authority.check(Question(user_id, action.grant, list(candidates), channel_id, candidates)).allowed
            )
            kept = {
                name: [c for c in group if c.instance_id in allowed] for name, group in resolution.ambiguous.items()
            }
            refused = [name for name, group in kept.items() if not group]
            if refused:
                coverage = Coverage(uncovered=refused)
                self.authority.record_denial(question, coverage)
                raise NotCovered(action.grant, coverage)
            resolution.ambiguous = kept
        return resolution

    def look_up(
        self,
        user_id: str,
        channel_id: str,
        action: Action,
        ids: Sequence[str],
        known: Mapping[str, InstanceInfo] | None = None,
        typed: Mapping[str, str] | None = None,
        run_seconds: float | None = None,
    ) -> Prepared:
        """Check grants and duplicates, look the ids up, and decide what can be acted on; nothing is written yet.

        `known` is what a name lookup already learnt (ids absent from it do not exist), `typed` what the user typed
        for each id (a refusal names only that). Grants by name, group or tag
        are matched against those attributes, so the lookup comes first for a user who holds any; a user with id
        grants only is refused before Zenlayer is asked. Ids another operation holds are skipped with `busy_with`
        set, so the chat layer can point at that operation (by rewriting the reason) before `open` stores it.
        A start that capped grants cover is time-boxed: to its cap when `run_seconds` is None, refused
        (RunTooLong) when it asks for more.
        """
        if known is None and not self.authority.needs_lookup([user_id], [action.grant]):
            self.authority.require(Question(user_id, action.grant, ids, channel_id, typed=typed))
        found = known if known is not None else self._describe(ids)
        coverage = self.authority.require(Question(user_id, action.grant, ids, channel_id, found, typed=typed))
        with self.db.session(readonly=True) as session:
            self._refuse_duplicate(session, user_id, channel_id, action, ids)
            busy = claims.holders(session, ids)
        prepared = Prepared(action, user_id, channel_id, list(ids))
        for instance_id in ids:
            info = found.get(instance_id)
            if info is None:
                prepared.skipped.append(Skipped(instance_id, "not found"))
            elif instance_id in busy:
                reason = f"already being {action.words.done} by another request"
                prepared.skipped.append(Skipped(instance_id, reason, info.status, info.name, busy[instance_id]))
            elif info.status != action.needs:
                prepared.skipped.append(Skipped(instance_id, f"is {info.status}", info.status, info.name))
            else:
                prepared.ready.append(info)
        if not prepared.ready:
            raise NothingToDo(prepared)
        prepared.run_seconds, prepared.run_cap_seconds = time_box(action, run_seconds, coverage, prepared.ready)
        prepared.needs_approval = any(i.instance_id in coverage.needs_approval for i in prepared.ready)
        return prepared

    def _describe(self, ids: Sequence[str]) -> dict[str, InstanceInfo]:
        """Ask Zenlayer about ids; LookupFailed when it cannot answer."""
        try:
            return self.vm.describe_instances(ids)
        except VmError as exc:
            raise LookupFailed(exc) from exc

    @staticmethod
    def _refuse_duplicate(session: object, user_id: str, channel_id: str, action: Action, ids: Sequence[str]) -> None:
        """Raise DuplicatePending when the user already has this very operation pending here."""
        earlier = repository.pending_same(session, user_id, channel_id, action, ids)  # type: ignore[arg-type]
        if earlier:
            raise DuplicatePending(earlier[0].id, earlier[0].channel_id, earlier[0].message_ts)

    def open(
        self,
        prepared: Prepared,
        *,
        response_url: str | None = None,
        also: Callable[[Session, int], None] | None = None,
    ) -> Prepared:
        """Record the pending operation a look-up allows and owe Slack its confirmation, in one transaction
        (DuplicatePending when an identical one got there first). The confirmation is then posted by the sender,
        through the channel's gate: a rate-limited channel delays it, never drops it. `also` records more in the
        same transaction, given the new operation's id (the Workflow Builder step that asked for it)."""
        instances = _new_instances(prepared)
        approvers: list[str] = []
        if prepared.needs_approval:
            ready = {i.instance_id: i for i in prepared.ready}
            question = Question(prepared.user_id, GrantAction.APPROVE, list(ready), prepared.channel_id)
            approvers = self.authority.approvers(question, requester_id=prepared.user_id, instances=ready)
        with self.db.session() as session:
            # One new operation per user at a time: two identical commands arriving together queue here, and the
            # second finds the first below.
            claims.lock_requester(session, prepared.user_id)
            self._refuse_duplicate(session, prepared.user_id, prepared.channel_id, prepared.action, prepared.ids)
            needs_approval = prepared.needs_approval
            prepared.request_id = creation.create(
                session,
                action=prepared.action,
                requester_id=prepared.user_id,
                channel_id=prepared.channel_id,
                instances=instances,
                needs_approval=needs_approval,
                ttl_seconds=self.approval_ttl_seconds if needs_approval else self.confirm_ttl_seconds,
                approvers=approvers,
                run_seconds=prepared.run_seconds,
                run_cap_seconds=prepared.run_cap_seconds,
            )
            if also is not None:
                also(session, prepared.request_id)
            outbox.enqueue(
                session,
                prepared.request_id,
                outbox.Kind.CONFIRM,
                notify_user=prepared.user_id,
                response_url=response_url,
            )
            prepared.wait_seconds = gate.wait_seconds(session, prepared.channel_id)
        return prepared

    def instances_of(self, request_id: int) -> list[str]:
        """Return the instance ids of an operation, in its order (`/vm status --request N`); grants are checked by
        whoever shows them."""
        with self.db.session(readonly=True) as session:
            record = repository.record(session, request_id)
        if record is None:
            raise UserError(f"There is no start request {request_id}.")
        return [i.instance_id for i in record.instances]


def _new_instances(prepared: Prepared) -> list[creation.NewInstance]:
    """The rows of a looked-up operation's instances: those it acts on, then those skipped with why."""
    return [creation.NewInstance(i.instance_id, name=i.name, zone=i.zone, status=i.status) for i in prepared.ready] + [
        creation.NewInstance(s.instance_id, name=s.name, status=s.status, included=False, skip_reason=s.reason)
        for s in prepared.skipped
    ]


def time_box(
    action: Action, asked: float | None, coverage: Coverage, ready: Sequence[InstanceInfo]
) -> tuple[float | None, float | None]:
    """Return a start's run length and cap: where any ready instance's grants cap runs, the run is time-boxed to
    the tightest of those caps unless asked for less (RunTooLong when asked for more); else what was asked."""
    if action != START:
        return None, None
    caps = [cap for i in ready if (cap := coverage.caps.get(i.instance_id)) is not None]
    cap = min(caps) if caps else None
    if cap is not None and asked is not None and asked > cap:
        raise RunTooLong(cap)
    return (cap if asked is None else asked), cap
