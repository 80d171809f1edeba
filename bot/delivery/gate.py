"""The one channel gate: each Slack channel's send slot, shared by every replica, paced and held in the database.

Slack allows about one message per second per channel "with short bursts". A channel's slot is a GCRA theoretical
arrival time (`tat`, Unix seconds on the database's clock): one compare-and-set UPDATE takes it when `tat` is at
most the burst tolerance ahead of now and nobody is sending there, moves it one pace on and claims the channel for
one lease. A 429 moves it to Retry-After. Everything Slack is told in a channel — confirmations, thread replies,
edits — passes through here, so no replica and no kind of message can outrun another.

A key may also name a Web API method that Slack limits per workspace rather than per channel (`views.publish` for
App Homes, the `functions.*` that complete Workflow Builder steps): those keys have their own pace (`pace_of`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Float, bindparam, case, literal, or_, select, update
from sqlalchemy.orm import Session

from bot.db.clock import db_epoch
from bot.db.lease import Lease, Owner
from bot.db.models import SlackChannel
from bot.db.sql import insert_ignoring_conflicts, table_of

PACE_SECONDS = 1.0
BURST = 3
# How far ahead of now a channel's theoretical arrival time may be and still send: the burst allowance.
TOLERANCE_SECONDS = (BURST - 1) * PACE_SECONDS


@dataclass(frozen=True)
class Pace:
    """How often a key may send: one message per `seconds`, with bursts of `burst`."""

    seconds: float
    burst: int

    @property
    def tolerance(self) -> float:
        """How far ahead of now the key's theoretical arrival time may be and still send."""
        return (self.burst - 1) * self.seconds


CHANNEL_PACE = Pace(PACE_SECONDS, BURST)
# Keys for Web API methods Slack limits per workspace (Tier 4: "100+ per minute", bursts tolerated). A person's App
# Home is published with views.publish, which Slack does not limit per channel: one workspace-wide key is what a 429
# from Slack then holds back, every Home at once, as Slack does.
VIEWS_PUBLISH = "@views.publish"
FUNCTIONS = "@functions"
_KEY_PACES = {VIEWS_PUBLISH: Pace(0.5, 20), FUNCTIONS: Pace(0.5, 20)}


def pace_of(key: str) -> Pace:
    """Return the pace of a gate key (a channel's, unless the key names a workspace-limited method)."""
    return _KEY_PACES.get(key, CHANNEL_PACE)


# The sender's statements, built once (building one costs several times what running it does, and the sender runs
# a few per message); every time in them is the database's, read when they run.
_CHANNELS = table_of(SlackChannel)
_NOW = db_epoch()
# Take each slot that is free: tat at most the burst tolerance ahead of now, nobody sending there.
_TAKE = (
    update(_CHANNELS)
    .where(
        _CHANNELS.c.channel_id.in_(bindparam("keys", expanding=True)),
        _CHANNELS.c.tat <= _NOW + bindparam("tolerance", type_=Float()),
        or_(_CHANNELS.c.claim_until.is_(None), _CHANNELS.c.claim_until < _NOW),
    )
    .values(
        tat=case((_CHANNELS.c.tat > _NOW, _CHANNELS.c.tat), else_=_NOW) + bindparam("pace", type_=Float()),
        claimed_by=bindparam("owner"),
        claim_until=_NOW + bindparam("lease", type_=Float()),
    )
    .returning(_CHANNELS.c.channel_id)
)
# Let go of a slot this owner holds, giving back `give_back` seconds of its pace (nothing was sent: one pace).
_RELEASE = (
    update(_CHANNELS)
    .where(_CHANNELS.c.channel_id == bindparam("key"), _CHANNELS.c.claimed_by == bindparam("owner"))
    .values(claimed_by=None, claim_until=None, tat=_CHANNELS.c.tat - bindparam("give_back", type_=Float()))
)
# Extend the claims this owner still holds (not those that lapsed: another replica may have them now).
_RENEW = (
    update(_CHANNELS)
    .where(
        _CHANNELS.c.channel_id.in_(bindparam("keys", expanding=True)),
        _CHANNELS.c.claimed_by == bindparam("owner"),
        _CHANNELS.c.claim_until >= _NOW,
    )
    .values(claim_until=_NOW + bindparam("lease", type_=Float()))
    .returning(_CHANNELS.c.channel_id)
)


def take(session: Session, channel_id: str, *, owner: Owner, lease: Lease) -> bool:
    """Take the channel's slot for one send (at most one in flight per channel, across replicas); True iff taken."""
    return channel_id in take_many(session, [channel_id], owner=owner, lease=lease)


def take_many(session: Session, channel_ids: Sequence[str], *, owner: Owner, lease: Lease) -> set[str]:
    """Take the slots of several channels for one send each: one compare-and-set UPDATE per pace, each channel
    taken only when its own slot is free; return the channels taken."""
    keys = sorted(set(channel_ids))
    if not keys:
        return set()
    insert_ignoring_conflicts(session, SlackChannel, [{"channel_id": key, "tat": 0.0} for key in keys], ["channel_id"])
    by_pace: dict[Pace, list[str]] = {}
    for key in keys:
        by_pace.setdefault(pace_of(key), []).append(key)
    taken: set[str] = set()
    for pace, group in by_pace.items():
        found = session.execute(
            _TAKE,
            {
                "keys": group,
                "tolerance": pace.tolerance,
                "pace": pace.seconds,
                "owner": owner.name,
                "lease": lease.seconds,
            },
        )
        taken.update(found.scalars())
    return taken


def release(session: Session, channel_id: str, *, owner: Owner, unused: bool = False) -> None:
    """Let go of a channel this owner took; `unused` gives its pace back (nothing was sent)."""
    give_back = pace_of(channel_id).seconds if unused else 0.0
    session.execute(_RELEASE, {"key": channel_id, "owner": owner.name, "give_back": give_back})


def hold(session: Session, channel_id: str, *, owner: Owner, seconds: float) -> None:
    """Slack said 429: let go of the channel and keep it closed for Retry-After seconds (nothing sleeps)."""
    until = db_epoch() + literal(seconds + pace_of(channel_id).tolerance, Float())
    session.execute(
        update(SlackChannel)
        .where(SlackChannel.channel_id == channel_id, SlackChannel.claimed_by == owner.name)
        .values(claimed_by=None, claim_until=None, tat=case((SlackChannel.tat > until, SlackChannel.tat), else_=until))
        .execution_options(synchronize_session=False)
    )


def renew(session: Session, channel_ids: list[str], *, owner: Owner, lease: Lease) -> set[str]:
    """Extend this owner's claims on channels it is sending to; return the channels it still holds."""
    if not channel_ids:
        return set()
    found = session.execute(_RENEW, {"keys": list(channel_ids), "owner": owner.name, "lease": lease.seconds})
    return set(found.scalars())


def wait_seconds(session: Session, channel_id: str) -> float:
    """Return how long until the channel's slot frees up (0 when a message could go out now)."""
    row = session.execute(
        select(SlackChannel.tat - pace_of(channel_id).tolerance - db_epoch()).where(
            SlackChannel.channel_id == channel_id
        )
    ).scalar_one_or_none()
    return max(0.0, float(row or 0.0))


def take_over_predecessor(session: Session, *, owner: Owner) -> None:
    """Free the channels an earlier process of this replica was sending to when it stopped."""
    session.execute(
        update(SlackChannel)
        .where(owner.predecessor(SlackChannel.claimed_by))
        .values(claimed_by=None, claim_until=None)
        .execution_options(synchronize_session=False)
    )
