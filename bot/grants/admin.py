"""Managing grants from chat: who may do it, parsing `/vm grant|revoke`, and what a caller may do."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from bot.db import audit
from bot.db.session import Database
from bot.domain.durations import parse_duration
from bot.domain.errors import InvalidInput, NotAllowed
from bot.domain.vocabulary import ANY_CHANNEL, GrantAction
from bot.grants import rules as grants
from bot.grants.rules import GrantRecord, GrantRule
from bot.grants.selectors import KIND_OF_OPTION, Selector, SelectorKind, problem, within
from bot.grants.selectors import pattern_within as pattern_within

_USER_MENTION_RE = re.compile(r"^<@([UW][A-Z0-9]{2,20})(?:\|[^>]*)?>$")
_CHANNEL_MENTION_RE = re.compile(r"^<#([CG][A-Z0-9]{2,20})(?:\|[^>]*)?>$")

SELECTOR_USAGE = "[PATTERN ...] [--instances PATTERN] [--names PATTERN] [--resource-group ID_OR_NAME] [--tag KEY=VALUE]"
GRANT_USAGE = (
    f"`/vm grant @user {SELECTOR_USAGE} [--channel #channel ...] [--action {'|'.join(GrantAction)}] "
    "[--needs-approval] [--max-run DURATION]`"
)
REVOKE_USAGE = f"`/vm revoke @user {SELECTOR_USAGE} [--channel #channel ...] [--action {'|'.join(GrantAction)}]`"


@dataclass
class GrantArgs:
    """The parsed arguments of `/vm grant` or `/vm revoke`."""

    user_id: str
    patterns: list[str] = field(default_factory=list)  # id globs
    channels: list[str] = field(default_factory=list)
    action: str | None = None
    needs_approval: bool = False
    names: list[str] = field(default_factory=list)  # name globs
    groups: list[str] = field(default_factory=list)  # resource group ids or names
    tags: list[str] = field(default_factory=list)  # KEY=VALUE
    max_run_seconds: float | None = None  # caps the runs a start grant allows

    @property
    def selectors(self) -> list[Selector]:
        """Every selector given, id globs first, without duplicates."""
        pairs = (
            (SelectorKind.ID, self.patterns),
            (SelectorKind.NAME, self.names),
            (SelectorKind.GROUP, self.groups),
            (SelectorKind.TAG, self.tags),
        )
        return list(dict.fromkeys(Selector(kind, value) for kind, values in pairs for value in values))

    def add(self, kind: SelectorKind, value: str) -> None:
        """Add one selector value of a kind."""
        {
            SelectorKind.ID: self.patterns,
            SelectorKind.NAME: self.names,
            SelectorKind.GROUP: self.groups,
            SelectorKind.TAG: self.tags,
        }[kind].append(value)


def parse_grant_args(words: Sequence[str], *, revoking: bool) -> GrantArgs:
    """Parse `@user PATTERN ... --channel #c --action a --needs-approval --max-run 4h`; raise InvalidInput naming
    every problem."""
    usage = REVOKE_USAGE if revoking else GRANT_USAGE
    if not words:
        raise InvalidInput(f"Usage: {usage}")
    mention = _USER_MENTION_RE.match(words[0])
    parsed = GrantArgs(user_id=mention.group(1) if mention else words[0])
    valued = {"--channel", "--action", *KIND_OF_OPTION} | (set() if revoking else {"--max-run"})
    problems: list[str] = []
    rest = list(words[1:])
    while rest:
        word = rest.pop(0)
        # Phones turn "--" into a dash; accept "-channel" and "--channel" alike.
        option = "--" + word.lstrip("-") if word.startswith("-") else None
        if option == "--needs-approval" and not revoking:
            parsed.needs_approval = True
        elif option in valued:
            if not rest:
                problems.append(f"{option} needs a value")
                break
            _take(parsed, option, rest.pop(0), problems)
        elif option is not None:
            problems.append(f"unknown option {grants.quote(word)}")
        else:
            parsed.patterns.append(word)
    # Checked here, before anything is decided: a refused grant is audited with its subject, and a subject is an id.
    problems.extend(p for p in (grants.user_problem(parsed.user_id), *map(problem, parsed.selectors)) if p)
    if not revoking and not parsed.selectors:
        problems.append("name at least one instance pattern (or --names, --resource-group, --tag)")
    if problems:
        raise InvalidInput("; ".join(problems) + f". Usage: {usage}")
    return parsed


def _take(parsed: GrantArgs, option: str, value: str, problems: list[str]) -> None:
    """Apply one option and its value to the parsed arguments (a bad value is added to problems)."""
    if option == "--action":
        parsed.action = value.lower()
    elif option == "--channel":
        channel = _CHANNEL_MENTION_RE.match(value)
        parsed.channels.append(channel.group(1) if channel else value)
    elif option == "--max-run":
        try:
            parsed.max_run_seconds = parse_duration(value, what="--max-run")
        except InvalidInput as exc:
            problems.append(str(exc))
    else:
        parsed.add(KIND_OF_OPTION[option], value)


def can_administer(
    admin_grants: Sequence[GrantRule],
    channel_id: str,
    selectors: Sequence[Selector | str],
    target_channels: Sequence[str] = (),
) -> bool:
    """True when admin grants usable here reach every selector in every target channel (no targets: any channel).

    No selectors means "all of a user's grants", which only an admin for `*` may touch. A plain string is an id glob.
    """
    usable = [g for g in admin_grants if g.action == GrantAction.ADMIN and g.channel_id in (ANY_CHANNEL, channel_id)]
    wanted = grants.as_selectors(list(selectors)) or [Selector(SelectorKind.ID, "*")]
    targets = list(target_channels) or [ANY_CHANNEL]
    # A channel-scoped admin may only manage grants scoped to that same channel; "any channel" needs an unscoped one.
    return all(
        any(within(s, grants.selector_of(g)) and g.channel_id in (ANY_CHANNEL, t) for g in usable)
        for s in wanted
        for t in targets
    )


def _other_selectors(args: GrantArgs) -> dict[str, Any]:
    """Return the name, resource-group and tag selectors for an audit record (only the kinds given)."""
    given = {"names": args.names, "resource_groups": args.groups, "tags": args.tags}
    return {key: list(dict.fromkeys(values)) for key, values in given.items() if values}


def add_audited(session: Session, actor: str, args: GrantArgs) -> int:
    """Add the grants args describe and write the audit event; return rows added (the CLI and chat share this)."""
    action = args.action or GrantAction.START
    added = grants.add_grants(
        session,
        args.user_id,
        args.selectors,
        action=action,
        channels=args.channels,
        needs_approval=args.needs_approval,
        max_run_seconds=args.max_run_seconds,
        granted_by=actor,
    )
    audit.record(
        session,
        "grant_added",
        actor=actor,
        subject=args.user_id,
        action=action,
        patterns=list(dict.fromkeys(args.patterns)),
        **_other_selectors(args),
        channels=list(dict.fromkeys(args.channels)) or [ANY_CHANNEL],
        needs_approval=args.needs_approval,
        **_cap(args),
        added=added,
    )
    return added


def _cap(args: GrantArgs) -> dict[str, Any]:
    """Return the run cap for an audit record (nothing when the grant has none)."""
    return {} if args.max_run_seconds is None else {"max_run_seconds": args.max_run_seconds}


def revoke_audited(session: Session, actor: str, args: GrantArgs) -> int:
    """Remove the grants args select and write the audit event; return rows removed."""
    removed = grants.revoke_grants(
        session, args.user_id, patterns=args.selectors, channels=args.channels, action=args.action
    )
    audit.record(
        session,
        "grant_revoked",
        actor=actor,
        subject=args.user_id,
        action=args.action,
        patterns=args.patterns,
        **_other_selectors(args),
        channels=args.channels,
        removed=removed,
    )
    return removed


def _require_admin(db: Database, admin_id: str, channel_id: str, args: GrantArgs) -> None:
    """Raise NotAllowed unless admin_id may manage these grants from this channel; a refusal is audited first."""
    with db.session(readonly=True) as session:
        allowed = can_administer(grants.list_grants(session, admin_id), channel_id, args.selectors, args.channels)
    if allowed:
        return
    with db.session() as session:  # its own transaction, so the refusal stays on record
        audit.record(
            session,
            "denied",
            actor=admin_id,
            action=GrantAction.ADMIN,
            subject=args.user_id,
            patterns=args.patterns,
            **_other_selectors(args),
            channels=args.channels,
        )
    raise NotAllowed(
        "You need an admin grant that covers those selectors, in every channel they apply to, to manage them."
    )


class GrantService:
    """Grant look-ups and chat-driven grant changes, each in its own transaction."""

    def __init__(self, db: Database, *, on_change: Callable[[], None] = lambda: None):
        self.db = db
        self.on_change = on_change  # e.g. GrantCache.invalidate

    def grants_of(self, user_id: str) -> list[GrantRecord]:
        """Return one user's grants."""
        with self.db.session(readonly=True) as session:
            return grants.list_grants(session, user_id)

    def grant(self, admin_id: str, channel_id: str, args: GrantArgs) -> int:
        """Add grants on an admin's behalf; return rows added."""
        _require_admin(self.db, admin_id, channel_id, args)
        with self.db.session() as session:
            added = add_audited(session, admin_id, args)
        self.on_change()
        return added

    def revoke(self, admin_id: str, channel_id: str, args: GrantArgs) -> int:
        """Remove grants on an admin's behalf; return rows removed."""
        _require_admin(self.db, admin_id, channel_id, args)
        with self.db.session() as session:
            removed = revoke_audited(session, admin_id, args)
        self.on_change()
        return removed
