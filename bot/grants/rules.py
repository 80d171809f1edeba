"""Grants: who may do what to which instances, from which channel — stored rules and the coverage check."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection, and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.db.models import Grant
from bot.db.sql import rowcount
from bot.domain.errors import InvalidInput
from bot.domain.ids import is_slack_channel_id, is_slack_user_id
from bot.domain.ports import InstanceInfo
from bot.domain.vocabulary import ANY_CHANNEL, GrantAction
from bot.grants.selectors import Selector, SelectorKind, problem

ACTIONS = tuple(GrantAction)


class GrantRule(Protocol):
    """What the coverage check reads of a grant: a Grant row, or a plain result row with these columns."""

    @property
    def action(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def pattern(self) -> str: ...
    @property
    def channel_id(self) -> str: ...
    @property
    def needs_approval(self) -> bool: ...
    @property
    def max_run_seconds(self) -> float | None: ...


@dataclass(frozen=True)
class GrantRecord:
    """One grant as read from the database (what leaves a session: never the ORM row)."""

    user_id: str
    action: str
    kind: str
    pattern: str
    channel_id: str
    needs_approval: bool
    max_run_seconds: float | None
    granted_by: str
    created_at: datetime


@dataclass
class Coverage:
    """What a set of grants allows for some instance ids, for one action in one channel: the answer to "may this
    user do this here, and why not"."""

    allowed: list[str] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)
    channels_elsewhere: dict[str, list[str]] = field(default_factory=dict)
    needs_approval: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # id -> name, for the ids whose attributes were looked up
    usable_here: bool = False  # any grant for the action can be used in this channel (else nothing can be covered)
    caps: dict[str, float | None] = field(default_factory=dict)  # allowed id -> the most generous run cap (None: none)

    @property
    def ok(self) -> bool:
        """True when every id is covered."""
        return not self.uncovered

    def with_own_runs(self, own: set[str]) -> Coverage:
        """Return this coverage with the user's own running runs allowed too (stopping them needs no grant)."""
        if not own:
            return self
        return replace(
            self,
            allowed=[*self.allowed, *(i for i in self.uncovered if i in own)],
            uncovered=[i for i in self.uncovered if i not in own],
            channels_elsewhere={i: c for i, c in self.channels_elsewhere.items() if i not in own},
            usable_here=True,
        )

    @property
    def run_cap(self) -> float | None:
        """The longest run every allowed id may have (each id's most generous grant decides; None: no cap)."""
        capped = [cap for cap in self.caps.values() if cap is not None]
        return min(capped) if capped else None

    def as_typed(self, typed: Mapping[str, str]) -> Coverage:
        """Return this coverage with every id replaced by what the user typed for it (`typed`: id -> word) and no
        looked-up names: a refusal names only what its reader typed, never an id or a name behind it."""

        def word(instance_id: str) -> str:
            return typed.get(instance_id, instance_id)

        elsewhere: dict[str, list[str]] = {}
        for instance_id, channels in self.channels_elsewhere.items():
            elsewhere.setdefault(word(instance_id), channels)
        return Coverage(
            allowed=list(dict.fromkeys(map(word, self.allowed))),
            uncovered=list(dict.fromkeys(map(word, self.uncovered))),
            channels_elsewhere=elsewhere,
            needs_approval=list(dict.fromkeys(map(word, self.needs_approval))),
            usable_here=self.usable_here,
        )


def quote(value: str) -> str:
    """Quote a user-supplied value for a plain-text error message, shortened (the Slack layer escapes it)."""
    if len(value) > 60:
        value = value[:57] + "..."
    value = value.replace("`", "'")
    return f"`{value}`" if value else "an empty value"


def selector_of(grant: GrantRule) -> Selector:
    """Return a grant's selector."""
    return Selector(SelectorKind(grant.kind or SelectorKind.ID), grant.pattern)


def as_selectors(values: Sequence[str | Selector] | str) -> list[Selector]:
    """Treat plain strings as id globs (what a pattern always meant) and keep selectors as they are."""
    items = [values] if isinstance(values, str) else list(values)
    return [v if isinstance(v, Selector) else Selector(SelectorKind.ID, v) for v in items]


def user_problem(user_id: str) -> str | None:
    """Say why user_id is not a Slack member id, or return None when it is one."""
    return None if is_slack_user_id(user_id) else f"{quote(user_id)} is not a Slack member id (like U0123ABCD)"


def _validation_problems(
    user_id: str, selectors: Iterable[Selector], channels: Iterable[str], action: str | None
) -> list[str]:
    """Return one message per bad value (empty when everything is well-formed)."""
    problems = [p for p in (user_problem(user_id),) if p]
    problems.extend(p for p in (problem(s) for s in selectors) if p)
    for channel in channels:
        if channel != ANY_CHANNEL and not is_slack_channel_id(channel):
            problems.append(f"{quote(channel)} is not a Slack channel id (like C0123ABCD)")
    if action is not None and action not in ACTIONS:
        problems.append(f"{quote(action)} is not an action (one of {', '.join(ACTIONS)})")
    return problems


def _as_list(values: Sequence[str]) -> list[str]:
    """Return values as a list, treating a lone string as one value rather than as its characters."""
    return [values] if isinstance(values, str) else list(values)


def _raise_if_invalid(problems: list[str]) -> None:
    """Raise InvalidInput naming every problem, if there are any."""
    if problems:
        raise InvalidInput("; ".join(problems))


def add_grants(
    session: Session,
    user_id: str,
    patterns: Sequence[str | Selector] | str,
    *,
    action: GrantAction | str = GrantAction.START,
    channels: Sequence[str] = (),
    needs_approval: bool = False,
    max_run_seconds: float | None = None,
    granted_by: str,
) -> int:
    """Grant user_id `action` on each selector (a plain string: an id glob) from each channel; return rows added.

    `max_run_seconds` caps the runs a start grant allows (every start it covers is then time-boxed).
    """
    selectors, channels = as_selectors(patterns), _as_list(channels)
    problems = _validation_problems(user_id, selectors, channels, action)
    if not selectors:
        problems.append("give at least one instance pattern, name pattern, resource group or tag")
    if max_run_seconds is not None and action != GrantAction.START:
        problems.append("--max-run caps the runs of start grants only")
    _raise_if_invalid(problems)

    terms = {"needs_approval": needs_approval, "max_run_seconds": max_run_seconds}
    added = 0
    for selector in dict.fromkeys(selectors):
        for channel in dict.fromkeys(channels or (ANY_CHANNEL,)):
            added += _upsert(session, user_id, action, selector, channel, terms, granted_by)
    return added


def _upsert(
    session: Session,
    user_id: str,
    action: str,
    selector: Selector,
    channel: str,
    terms: dict[str, Any],
    granted_by: str,
) -> int:
    """Insert one grant or update its terms (needs_approval, max_run_seconds) on the identical one; return 1 if a row
    was inserted."""
    query = select(Grant).where(
        Grant.user_id == user_id,
        Grant.action == action,
        Grant.kind == selector.kind.value,
        Grant.pattern == selector.value,
        Grant.channel_id == channel,
    )
    existing = session.scalars(query).one_or_none()
    if existing is None:
        try:
            # A savepoint, so that losing an insert race to another writer does not undo this whole call.
            with session.begin_nested():
                session.add(
                    Grant(
                        user_id=user_id,
                        action=action,
                        kind=selector.kind.value,
                        pattern=selector.value,
                        channel_id=channel,
                        granted_by=granted_by,
                        **terms,
                    )
                )
            return 1
        except IntegrityError:
            existing = session.scalars(query).one()
    for name, value in terms.items():
        setattr(existing, name, value)
    return 0


def _selected(selectors: Sequence[Selector]) -> ColumnElement[bool]:
    """Return a condition matching grants with any of these selectors (kind and value)."""
    return or_(*(and_(Grant.kind == s.kind.value, Grant.pattern == s.value) for s in selectors))


def revoke_grants(
    session: Session,
    user_id: str,
    *,
    patterns: Sequence[str | Selector] | str = (),
    channels: Sequence[str] = (),
    action: str | None = None,
) -> int:
    """Delete user_id's grants matching every selector given (all their grants when none); return rows removed."""
    selectors, channels = as_selectors(patterns), _as_list(channels)
    _raise_if_invalid(_validation_problems(user_id, selectors, channels, action))
    statement = delete(Grant).where(Grant.user_id == user_id)
    if selectors:
        statement = statement.where(_selected(selectors))
    if channels:
        statement = statement.where(Grant.channel_id.in_(list(channels)))
    if action is not None:
        statement = statement.where(Grant.action == action)
    return rowcount(session.execute(statement.execution_options(synchronize_session="fetch")))


def list_grants(
    session: Session, user_id: str | None = None, *, selectors: Sequence[Selector] = ()
) -> list[GrantRecord]:
    """Return grants (one user's, or everyone's; only those with the selectors given) in a stable order."""
    query = select(Grant).order_by(Grant.user_id, Grant.action, Grant.kind, Grant.pattern, Grant.channel_id, Grant.id)
    if user_id is not None:
        query = query.where(Grant.user_id == user_id)
    if selectors:
        query = query.where(_selected(selectors))
    return [
        GrantRecord(
            g.user_id,
            g.action,
            g.kind,
            g.pattern,
            g.channel_id,
            g.needs_approval,
            g.max_run_seconds,
            g.granted_by,
            g.created_at,
        )
        for g in session.scalars(query)
    ]


def grant_rules(connection: Connection, user_id: str) -> list[GrantRule]:
    """Return what the coverage check needs of one user's grants, as plain rows (a quarter of the ORM's cost)."""
    query = select(
        Grant.action, Grant.kind, Grant.pattern, Grant.channel_id, Grant.needs_approval, Grant.max_run_seconds
    ).where(Grant.user_id == user_id)
    return list(connection.execute(query).all())


def need_attributes(grants: Iterable[GrantRule], action: str) -> bool:
    """True when deciding coverage for `action` needs the instances' looked-up attributes."""
    return any(g.action == action and (g.kind or SelectorKind.ID) != SelectorKind.ID for g in grants)


def check_coverage(
    grants: Iterable[GrantRule],
    ids: Iterable[str],
    *,
    action: str,
    channel_id: str,
    instances: Mapping[str, InstanceInfo] | None = None,
) -> Coverage:
    """Sort ids into allowed and uncovered for `action` in channel_id, given a user's grants.

    `instances` holds the looked-up attributes that name, resource-group and tag grants match; an id without
    them is covered only by id grants.
    """
    relevant = [(grant, selector_of(grant)) for grant in grants if grant.action == action]
    known = instances or {}
    coverage = Coverage(usable_here=any(g.channel_id in (ANY_CHANNEL, channel_id) for g, _ in relevant))
    for instance_id in dict.fromkeys(ids):
        info = known.get(instance_id)
        if info is not None and info.name:
            coverage.names[instance_id] = info.name
        matching = [g for g, selector in relevant if selector.matches(instance_id, info)]
        here = [g for g in matching if g.channel_id in (ANY_CHANNEL, channel_id)]
        if here:
            coverage.allowed.append(instance_id)
            caps = [g.max_run_seconds for g in here]
            coverage.caps[instance_id] = None if None in caps else max(c for c in caps if c is not None)
            if all(g.needs_approval for g in here):
                coverage.needs_approval.append(instance_id)
            continue
        coverage.uncovered.append(instance_id)
        elsewhere = sorted({g.channel_id for g in matching})
        if elsewhere:
            coverage.channels_elsewhere[instance_id] = elsewhere
    return coverage
