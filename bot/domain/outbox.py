"""The delivery outbox: messages owed to Slack, recorded in the transaction of the change they report.

The domain only says *that* a request's thread or confirmation must be told something (a kind of message); the
sender (bot/slack/sender.py) renders it from the database when it sends it, so pending rows coalesce: one per kind
and request (`pending_key`). Sending is paced per channel by a slot every replica shares (slack_channels): one
compare-and-set UPDATE takes it, a GCRA with PACE_SECONDS between messages and a burst of BURST.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Float, String, Text, and_, case, cast, delete, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.db.models import OutboxMessage, RequestInstance, SlackChannel, StartRequest, UtcDateTime
from bot.domain import audit
from bot.domain.vocabulary import SYSTEM_ACTOR

# Slack allows about one message per second per channel "with short bursts": three at once, then one a second.
PACE_SECONDS = 1.0
BURST = 3
# A send is given this long before another replica may take its row (and the channel) over.
CLAIM_SECONDS = 30.0
# Transient failures are retried after 2, 4, 8 … s, at most MAX_BACKOFF_SECONDS apart, MAX_ATTEMPTS times in all.
MAX_BACKOFF_SECONDS = 300.0
MAX_ATTEMPTS = 12
# What Session.info carries when a transaction enqueued something (Database wakes its listeners on commit).
TOPIC = "outbox"


class Kind(enum.StrEnum):
    """What a row asks the sender to do."""

    PROGRESS = "progress"  # reply in the thread with the statuses not yet told
    FINAL = "final"  # reply in the thread with the outcome, and mark it told
    REFRESH = "refresh"  # re-render the confirmation message from the request's state


# Kinds whose content is re-rendered from the latest state: enqueueing again while pending bumps the version, so a
# send of an older version leaves the row pending for the newer one. A final outcome is told once.
_COALESCED = frozenset({Kind.PROGRESS, Kind.REFRESH})


@dataclass(frozen=True)
class Claimed:
    """A row this sender holds, with its channel: send it, then complete(), retry() or fail() it."""

    id: int
    request_id: int
    channel_id: str
    kind: Kind
    version: int
    attempts: int
    notify_user: str | None
    response_url: str | None


def pending_key(kind: Kind, request_id: int) -> str:
    """Return the key that keeps one pending row per kind and request."""
    return f"{kind.value}:{request_id}"


def enqueue(
    session: Session,
    request_id: int,
    kinds: Kind | Iterable[Kind],
    *,
    now: datetime,
    notify_user: str | None = None,
    response_url: str | None = None,
) -> None:
    """Record, in the caller's transaction, that a request's channel must be told (coalesced with pending rows)."""
    enqueue_many(session, [request_id], kinds, now=now, notify_user=notify_user, response_url=response_url)


def enqueue_many(
    session: Session,
    request_ids: Sequence[int],
    kinds: Kind | Iterable[Kind],
    *,
    now: datetime,
    notify_user: str | None = None,
    response_url: str | None = None,
) -> None:
    """Enqueue kinds for every request in request_ids: one INSERT … SELECT per kind, whatever their number."""
    kinds = [kinds] if isinstance(kinds, Kind) else list(kinds)
    if not kinds or not request_ids:
        return
    for kind in kinds:
        source = (
            select(
                StartRequest.id,
                StartRequest.channel_id,
                literal(kind.value, String()),
                literal(f"{kind.value}:", String()) + cast(StartRequest.id, String()),  # pending_key()
                literal(notify_user, String()),
                literal(response_url, Text()),
                literal(now, UtcDateTime()),
                literal(now, UtcDateTime()),
            )
            .where(StartRequest.id.in_(list(request_ids)))
            .order_by(StartRequest.id)
        )
        columns = [
            "request_id",
            "channel_id",
            "kind",
            "pending_key",
            "notify_user",
            "response_url",
            "created_at",
            "due_at",
        ]
        _upsert(session, kind, columns, source)
    session.info.setdefault("topics", set()).add(TOPIC)


def _upsert(session: Session, kind: Kind, columns: Sequence[str], source: object) -> None:
    """INSERT … SELECT with ON CONFLICT on pending_key: bump a coalesced row's version, leave a final one be."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(OutboxMessage).from_select(columns, source)
    if kind in _COALESCED:
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=["pending_key"],
            set_={
                "version": OutboxMessage.version + 1,
                # A decision's refresh keeps whom to tell if it fails, even when it joins a pending refresh.
                "notify_user": func.coalesce(excluded.notify_user, OutboxMessage.notify_user),
                "response_url": func.coalesce(excluded.response_url, OutboxMessage.response_url),
            },
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=["pending_key"])
    session.execute(statement)


def pending_count(session: Session) -> int:
    """Count the messages not yet delivered (nor given up)."""
    return int(session.scalar(select(func.count(OutboxMessage.id)).where(OutboxMessage.pending_key.is_not(None))) or 0)


@dataclass(frozen=True)
class Ready:
    """What the sender may do now: the first due row of each channel whose slot is free, and when to look again."""

    rows: list[tuple[int, str]]  # (row id, channel id), oldest first
    next_at: datetime | None  # the earliest moment something else becomes due or a held channel frees up


def ready(session: Session, *, now: datetime, busy: Iterable[str] = (), limit: int = 1000) -> Ready:
    """Find each channel's oldest pending row that is due, in channels free to send now (not in `busy`)."""
    epoch = now.timestamp()
    skip = set(busy)
    is_due = OutboxMessage.due_at <= now
    # One row per channel (not the oldest `limit` rows overall): a backlog in one channel never hides another's.
    heads = session.execute(
        select(
            OutboxMessage.channel_id,
            func.min(case((is_due, OutboxMessage.id))).label("first_due"),
            func.min(OutboxMessage.due_at).label("due_at"),
        )
        .where(OutboxMessage.pending_key.is_not(None))
        .group_by(OutboxMessage.channel_id)
        .limit(limit)
    ).all()
    channels = {h.channel_id for h in heads}
    slots = {
        c.channel_id: c
        for c in session.execute(
            select(SlackChannel.channel_id, SlackChannel.tat, SlackChannel.claim_until).where(
                SlackChannel.channel_id.in_(channels)
            )
        )
    }
    first: dict[str, int] = {}
    next_at: float | None = None
    for head in heads:
        if head.channel_id in skip:
            continue
        slot = slots.get(head.channel_id)
        if slot is not None and slot.claim_until is not None and slot.claim_until > epoch:
            continue  # a send is in flight there: its completion wakes the sender
        free = epoch if slot is None else slot.tat - _tolerance()
        due = epoch if head.first_due is not None else head.due_at.timestamp()
        at = max(due, free)
        if at <= epoch:
            first[head.channel_id] = head.first_due
        else:
            next_at = at if next_at is None else min(next_at, at)
    return Ready(
        rows=[(row_id, channel) for channel, row_id in sorted(first.items(), key=lambda item: item[1])],
        next_at=None if next_at is None else datetime.fromtimestamp(next_at, now.tzinfo),
    )


def _tolerance() -> float:
    """How far ahead of now a channel's theoretical arrival time may be and still send: the burst allowance."""
    return (BURST - 1) * PACE_SECONDS


def claim(session: Session, channel_id: str, *, owner: str, now: datetime) -> Claimed | None:
    """Take the channel's send slot and its oldest due row, in one transaction; None when either is taken.

    The slot is one compare-and-set UPDATE (GCRA): allowed while its theoretical arrival time is at most the burst
    tolerance ahead of now and no live claim holds the channel; it moves the time one pace on and claims the
    channel, so each channel has at most one send in flight across replicas, in row order.
    """
    epoch = now.timestamp()
    _ensure_channel(session, channel_id)
    taken = session.execute(
        update(SlackChannel)
        .where(
            SlackChannel.channel_id == channel_id,
            SlackChannel.tat <= epoch + _tolerance(),
            or_(SlackChannel.claim_until.is_(None), SlackChannel.claim_until < epoch),
        )
        .values(
            tat=case((SlackChannel.tat > epoch, SlackChannel.tat), else_=literal(epoch, Float())) + PACE_SECONDS,
            claimed_by=owner,
            claim_until=epoch + CLAIM_SECONDS,
        )
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = session.execute(
        select(OutboxMessage)
        .where(
            OutboxMessage.channel_id == channel_id,
            OutboxMessage.pending_key.is_not(None),
            OutboxMessage.due_at <= now,
        )
        .order_by(OutboxMessage.id)
        .limit(1)
    ).scalar_one_or_none()
    if row is None:  # another replica sent it meanwhile: give the channel back (its slot moved on: a rare race)
        _release_channel(session, channel_id, owner)
        return None
    row.claimed_by = owner
    row.claim_until = now + timedelta(seconds=CLAIM_SECONDS)
    return Claimed(
        row.id,
        row.request_id,
        row.channel_id,
        Kind(row.kind),
        row.version,
        row.attempts,
        row.notify_user,
        row.response_url,
    )


def _ensure_channel(session: Session, channel_id: str) -> None:
    """Create a channel's slot row the first time it is used."""
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(
        module.insert(SlackChannel).values(channel_id=channel_id, tat=0.0).on_conflict_do_nothing(),
    )


def _release_channel(session: Session, channel_id: str, owner: str, **values: object) -> None:
    """Let go of a channel this sender claimed (and set its slot, e.g. after a 429)."""
    session.execute(
        update(SlackChannel)
        .where(SlackChannel.channel_id == channel_id, SlackChannel.claimed_by == owner)
        .values(claimed_by=None, claim_until=None, **values)
        .execution_options(synchronize_session=False)
    )


def complete(
    session: Session, row: Claimed, *, owner: str, now: datetime, error: str | None = None, sent: bool = True
) -> bool:
    """Mark a row sent (or failed for good, with error; or, not sent, with nothing left to say) and free its channel.

    Returns True iff the row is no longer pending: one enqueued again while it was being sent (a newer version)
    stays pending, so its latest state goes out too. A row not sent gives its channel's slot back.
    """
    _release_channel(session, row.channel_id, owner, **({} if sent else {"tat": SlackChannel.tat - PACE_SECONDS}))
    done = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == row.id, OutboxMessage.version == row.version)
        .values(
            pending_key=None,
            sent_at=now if sent and error is None else None,
            error=error,
            claimed_by=None,
            claim_until=None,
            response_url=None,
        )
        .execution_options(synchronize_session=False)
    )
    if done.rowcount == 1:  # type: ignore[attr-defined]
        return True
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == row.id)
        .values(claimed_by=None, claim_until=None, attempts=0)
        .execution_options(synchronize_session=False)
    )
    return False


def renew(session: Session, channel_ids: Iterable[str], *, owner: str, now: datetime) -> set[str]:
    """Extend this sender's claims on channels it is sending to; return the channels it still holds.

    Called before each send and by the sender's heartbeat, so a slow send is never taken over by another replica
    while it is in flight; a sender that lost a claim (paused past it) must not send.
    """
    channels = list(channel_ids)
    if not channels:
        return set()
    epoch = now.timestamp()
    held = set(
        session.scalars(
            update(SlackChannel)
            .where(
                SlackChannel.channel_id.in_(channels),
                SlackChannel.claimed_by == owner,
                SlackChannel.claim_until >= epoch,
            )
            .values(claim_until=epoch + CLAIM_SECONDS)
            .returning(SlackChannel.channel_id)
            .execution_options(synchronize_session=False)
        )
    )
    if held:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.channel_id.in_(list(held)), OutboxMessage.claimed_by == owner)
            .values(claim_until=now + timedelta(seconds=CLAIM_SECONDS))
            .execution_options(synchronize_session=False)
        )
    return held


def retry(session: Session, row: Claimed, *, owner: str, now: datetime, error: str) -> None:
    """A transient failure: free the channel and try the row again after an exponential backoff (2, 4, 8 … s)."""
    attempts = row.attempts + 1
    _release_channel(session, row.channel_id, owner)
    delay = min(MAX_BACKOFF_SECONDS, 2.0 ** min(attempts, 30))
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == row.id)
        .values(
            claimed_by=None, claim_until=None, attempts=attempts, due_at=now + timedelta(seconds=delay), error=error
        )
        .execution_options(synchronize_session=False)
    )


def hold(session: Session, row: Claimed, *, owner: str, now: datetime, seconds: float) -> None:
    """Slack said 429: hold the whole channel back for its Retry-After (nothing sleeps), the row stays first."""
    epoch = now.timestamp()
    until = epoch + seconds + _tolerance()
    _release_channel(
        session,
        row.channel_id,
        owner,
        tat=case((SlackChannel.tat > until, SlackChannel.tat), else_=literal(until, Float())),
    )
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == row.id)
        .values(claimed_by=None, claim_until=None)
        .execution_options(synchronize_session=False)
    )


def forget_notify(session: Session, row_id: int) -> None:
    """The person to tell was told (a decision's edit failed once): do not tell them again."""
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == row_id)
        .values(notify_user=None, response_url=None)
        .execution_options(synchronize_session=False)
    )


def take_over_predecessor(session: Session, *, replica: str, owner: str) -> int:
    """Free the rows and channels an earlier process of this replica was sending when it stopped; return how many.

    That process is gone, so its sends resume now instead of after CLAIM_SECONDS (at worst one message repeats).
    """
    mine = and_(OutboxMessage.claimed_by.startswith(f"{replica}/", autoescape=True), OutboxMessage.claimed_by != owner)
    rows = session.execute(update(OutboxMessage).where(mine).values(claimed_by=None, claim_until=None)).rowcount  # type: ignore[attr-defined]
    session.execute(
        update(SlackChannel)
        .where(SlackChannel.claimed_by.startswith(f"{replica}/", autoescape=True), SlackChannel.claimed_by != owner)
        .values(claimed_by=None, claim_until=None)
    )
    return int(rows or 0)


def prune(session: Session, *, before: datetime) -> int:
    """Delete delivered or failed rows older than before (pending ones are kept whatever their age)."""
    result = session.execute(
        delete(OutboxMessage)
        .where(OutboxMessage.pending_key.is_(None), OutboxMessage.created_at < before)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def untold_finals(session: Session, request_ids: Sequence[int]) -> list[int]:
    """Return the requests among request_ids that ended, are not marked told and have no final row pending."""
    pending = select(OutboxMessage.id).where(
        OutboxMessage.request_id == StartRequest.id,
        OutboxMessage.kind == Kind.FINAL.value,
        OutboxMessage.pending_key.is_not(None),
    )
    return list(
        session.scalars(
            select(StartRequest.id).where(
                StartRequest.id.in_(list(request_ids)),
                StartRequest.state.in_(_REPORTED_FINAL),
                StartRequest.outcome_posted_at.is_(None),
                ~pending.exists(),
            )
        )
    )


# The final states whose outcome is told in the thread (lifecycle.REPORTED_FINAL_STATES; lifecycle imports us).
_REPORTED_FINAL = ("done", "failed", "timed_out", "expired")


def mark_reported(session: Session, shown: dict[int, str | None]) -> None:
    """Record the statuses a progress reply showed (request_instances row id → status), in the row's transaction."""
    if shown:
        session.execute(
            update(RequestInstance).execution_options(synchronize_session=False),
            [{"id": row_id, "reported_status": status} for row_id, status in shown.items()],
        )


def mark_told(session: Session, request: StartRequest, *, now: datetime, delivery_error: str | None = None) -> bool:
    """Record that a request's outcome was told (or can never be), with its `finished` audit event; True iff now."""
    result = session.execute(
        update(StartRequest)
        .where(StartRequest.id == request.id, StartRequest.outcome_posted_at.is_(None))
        .values(outcome_posted_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    audit.record(
        session,
        "finished",
        actor=SYSTEM_ACTOR,
        request_id=request.id,
        outcome=request.state,
        instances={i.instance_id: i.outcome or i.skip_reason for i in request.instances},
        **({"delivery_error": delivery_error} if delivery_error else {}),
    )
    return True
