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

from dataclasses import dataclass

from sqlalchemy import Float, case, literal, or_, select, update
from sqlalchemy.orm import Session

from bot.db.clock import db_epoch
from bot.db.lease import Lease, Owner
from bot.db.models import SlackChannel
from bot.db.sql import insert_ignoring_conflicts, rowcount

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


def take(session: Session, channel_id: str, *, owner: Owner, lease: Lease) -> bool:
    """Take the channel's slot for one send (at most one in flight per channel, across replicas); True iff taken."""
    insert_ignoring_conflicts(session, SlackChannel, [{"channel_id": channel_id, "tat": 0.0}], ["channel_id"])
    now = db_epoch()
    pace = pace_of(channel_id)
    taken = session.execute(
        update(SlackChannel)
        .where(
            SlackChannel.channel_id == channel_id,
            SlackChannel.tat <= now + pace.tolerance,
            or_(SlackChannel.claim_until.is_(None), SlackChannel.claim_until < now),
        )
        .values(
            tat=case((SlackChannel.tat > now, SlackChannel.tat), else_=now) + pace.seconds,
            claimed_by=owner.name,
            claim_until=now + lease.seconds,
        )
        .execution_options(synchronize_session=False)
    )
    return rowcount(taken) == 1


def release(session: Session, channel_id: str, *, owner: Owner, unused: bool = False) -> None:
    """Let go of a channel this owner took; `unused` gives its pace back (nothing was sent)."""
    values = {"tat": SlackChannel.tat - pace_of(channel_id).seconds} if unused else {}
    session.execute(
        update(SlackChannel)
        .where(SlackChannel.channel_id == channel_id, SlackChannel.claimed_by == owner.name)
        .values(claimed_by=None, claim_until=None, **values)
        .execution_options(synchronize_session=False)
    )


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
    now = db_epoch()
    return set(
        session.scalars(
            update(SlackChannel)
            .where(
                SlackChannel.channel_id.in_(channel_ids),
                SlackChannel.claimed_by == owner.name,
                SlackChannel.claim_until >= now,
            )
            .values(claim_until=now + lease.seconds)
            .returning(SlackChannel.channel_id)
            .execution_options(synchronize_session=False)
        )
    )


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
