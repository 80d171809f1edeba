"""The one authorisation entry: may this user do this action on these instances here, and if not, why not.

Commands (before and after their ack), clicks, submits and timers all ask `Authority.check`. Only the check before an
acknowledgement may answer "yes" from the in-memory copy of the grants; every "no", and everything that acts, is
answered from a read of the database begun after the question was asked.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bot.db import audit
from bot.db.session import Database
from bot.domain.errors import NotAllowed
from bot.domain.ports import InstanceInfo
from bot.domain.vocabulary import ANY_CHANNEL, GrantAction
from bot.grants.admin import can_administer
from bot.grants.cache import GrantCache
from bot.grants.rules import Coverage, GrantRule, check_coverage, grant_rules, list_grants, need_attributes


class NotCovered(NotAllowed):
    """The user's grants do not cover some ids (in this channel) for the action."""

    def __init__(self, action: str, coverage: Coverage):
        self.action = action
        self.coverage = coverage
        super().__init__(f"You may not {action} " + ", ".join(coverage.uncovered))


@dataclass(frozen=True)
class Question:
    """Who asks to do what, on which instances, where."""

    user_id: str
    action: GrantAction
    ids: Sequence[str]
    channel_id: str
    instances: Mapping[str, InstanceInfo] | None = None  # looked-up attributes, for name, group and tag grants
    typed: Mapping[str, str] | None = None  # id -> what the user typed for it: a refusal names only these


# Which of these instances are in a running time-boxed run of this user's: (user id, instance ids) -> those ids.
RunOwner = Callable[[str, Sequence[str]], set[str]]


# Lists of instances remembered with the answer for one user's grants (type-ahead: one entry per person typing).
ALLOWED_MEMO_SIZE = 64


class Authority:
    """Answers every "may they?" from the grants table (and, for a quick "yes" before an ack, the GrantCache).

    One rule is not a grant: the requester of a time-boxed run may always stop that run early (`run_owner` says
    whose runs are running).
    """

    def __init__(self, db: Database, cache: GrantCache | None = None, *, run_owner: RunOwner | None = None):
        self.db = db
        self.cache = cache
        self.run_owner = run_owner
        self._allowed: OrderedDict[tuple[object, ...], tuple[Sequence[InstanceInfo], list[InstanceInfo]]]
        self._allowed = OrderedDict()
        self._allowed_lock = threading.Lock()

    def check(self, question: Question, *, quick: bool = False) -> Coverage:
        """Return what the user's grants allow for the question (a stop of their own runs needs none); `quick`
        lets a "yes" come from memory."""
        coverage = self._check(question, quick=quick)
        if coverage.ok or question.action != GrantAction.STOP or self.run_owner is None:
            return coverage
        return coverage.with_own_runs(self.run_owner(question.user_id, coverage.uncovered))

    def _check(self, question: Question, *, quick: bool) -> Coverage:
        """Return what the user's grants alone allow."""
        if quick and self.cache is not None:
            found = self.cache.lookup(question.user_id)
            coverage = self._cover(found.rules, question)
            if coverage.ok and coverage.usable_here:  # a "yes" from memory; never a "no"
                return coverage
            return coverage if found.fresh else self._cover(self.cache.fresh_rules_for(question.user_id), question)
        return self._cover(self._fresh_rules(question.user_id), question)

    def check_all(self, questions: Sequence[Question]) -> list[Coverage]:
        """Answer several questions from one fresh read of each asker's grants (an App Home asks one per request)."""
        rules = {user: self._fresh_rules(user) for user in dict.fromkeys(q.user_id for q in questions)}
        return [self._cover(rules[q.user_id], q) for q in questions]

    def allowed_among(
        self, user_id: str, action: GrantAction, channel_id: str, instances: Sequence[InstanceInfo]
    ) -> list[InstanceInfo]:
        """Return, in their order, the instances the user may act on in the channel: from one fresh read of their
        grants, the answer remembered for exactly those grants and this very list (type-ahead asks it again of the
        same 20,000 instances at every letter typed; a changed grant is a new question). For offering only:
        whatever acts asks `check`."""
        rules = self._fresh_rules(user_id)
        grants = tuple((r.action, r.kind, r.pattern, r.channel_id) for r in rules)
        key: tuple[object, ...] = (user_id, action, channel_id, id(instances), grants)
        with self._allowed_lock:
            known = self._allowed.get(key)
            if known is not None and known[0] is instances:
                self._allowed.move_to_end(key)
                return known[1]
        found = {info.instance_id: info for info in instances}
        coverage = self._cover(rules, Question(user_id, action, list(found), channel_id, found))
        allowed = [found[i] for i in coverage.allowed]
        with self._allowed_lock:
            self._allowed[key] = (instances, allowed)
            while len(self._allowed) > ALLOWED_MEMO_SIZE:
                self._allowed.popitem(last=False)
        return allowed

    def require(self, question: Question) -> Coverage:
        """Return the coverage when the user may act on every id; else audit the refusal (with the ids) and raise
        NotCovered (naming what the user typed, when the question says)."""
        coverage = self.check(question)
        if not coverage.ok:
            self.record_denial(question, coverage)
            raise NotCovered(question.action, coverage if question.typed is None else coverage.as_typed(question.typed))
        return coverage

    def record_denial(self, question: Question, coverage: Coverage, **detail: object) -> None:
        """Write a refusal to the audit trail."""
        audit.write(
            self.db,
            "denied",
            actor=question.user_id,
            action=question.action,
            channel=question.channel_id,
            uncovered=coverage.uncovered,
            **detail,
        )

    def needs_lookup(self, user_ids: Sequence[str], actions: Sequence[GrantAction]) -> bool:
        """True when deciding for these users and actions needs the instances' looked-up attributes."""
        with self.db.session(readonly=True) as session:
            involved = [g for user in dict.fromkeys(user_ids) for g in list_grants(session, user)]
        return any(need_attributes(involved, action) for action in actions)

    def approvers(
        self, question: Question, *, requester_id: str, instances: Mapping[str, InstanceInfo] | None = None
    ) -> list[str]:
        """Return the users other than the requester whose approve grants cover every id in the channel."""
        with self.db.session(readonly=True) as session:
            everyone = list_grants(session)
        by_user: dict[str, list[GrantRule]] = {}
        for grant in everyone:
            if grant.action == GrantAction.APPROVE and grant.user_id != requester_id:
                by_user.setdefault(grant.user_id, []).append(grant)
        wanted = Question(requester_id, GrantAction.APPROVE, question.ids, question.channel_id, instances)
        return sorted(user for user, rules in by_user.items() if self._cover(rules, wanted).ok)

    def admin_reach(self, user_id: str) -> Callable[[str, Sequence[str]], bool]:
        """Return whether the user's admin grants (read now) reach given instances in a given channel: an admin may
        extend or stop anyone's runs there, and sees them in `/vm runs --all`."""
        rules = self._fresh_rules(user_id)
        return lambda channel_id, instance_ids: can_administer(rules, channel_id, list(instance_ids), [channel_id])

    def run_terms(self, user_id: str, channel_id: str | None) -> tuple[bool, float | None]:
        """Return whether the user holds a start grant usable in the channel (any channel: None), and the longest
        run such grants allow (the most generous: None when one of them is uncapped)."""
        usable = [
            g
            for g in self._fresh_rules(user_id)
            if g.action == GrantAction.START and (channel_id is None or g.channel_id in (ANY_CHANNEL, channel_id))
        ]
        caps = [g.max_run_seconds for g in usable]
        return bool(usable), (None if not caps or None in caps else max(c for c in caps if c is not None))

    def _fresh_rules(self, user_id: str) -> list[GrantRule]:
        """Return the user's grant rules as of a read begun after this call (shared with concurrent callers)."""
        if self.cache is not None:
            return self.cache.fresh_rules_for(user_id)
        with self.db.reading() as connection:
            return grant_rules(connection, user_id)

    @staticmethod
    def _cover(rules: Sequence[GrantRule], question: Question) -> Coverage:
        """Apply the pure coverage check to one user's rules."""
        return check_coverage(
            rules, question.ids, action=question.action, channel_id=question.channel_id, instances=question.instances
        )
