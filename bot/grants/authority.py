"""The one authorisation entry: may this user do this action on these instances here, and if not, why not.

Commands (before and after their ack), clicks, submits and timers all ask `Authority.check`. Only the check before an
acknowledgement may answer "yes" from the in-memory copy of the grants; every "no", and everything that acts, is
answered from a read of the database begun after the question was asked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bot.db import audit
from bot.db.session import Database
from bot.domain.errors import NotAllowed
from bot.domain.ports import InstanceInfo
from bot.domain.vocabulary import GrantAction
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


class Authority:
    """Answers every "may they?" from the grants table (and, for a quick "yes" before an ack, the GrantCache).

    One rule is not a grant: the requester of a time-boxed run may always stop that run early (`run_owner` says
    whose runs are running).
    """

    def __init__(self, db: Database, cache: GrantCache | None = None, *, run_owner: RunOwner | None = None):
        self.db = db
        self.cache = cache
        self.run_owner = run_owner

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
