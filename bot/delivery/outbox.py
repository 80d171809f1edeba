"""The delivery outbox: messages owed to Slack, recorded in the transaction of the change they report.

Whoever changes an operation only says *that* its channel must be told something (a kind of message); the courier
renders it from the database when it is sent, so pending rows coalesce: one per kind and operation
(`pending_key`). Sending goes through the channel gate (bot/delivery/gate.py). Every time here is the database's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Integer, String, Text, bindparam, case, cast, delete, func, literal, select, update
from sqlalchemy.orm import Session

from bot.db.clock import db_epoch, db_time
from bot.db.lease import Lease, Owner
from bot.db.models import Operation, OutboxMessage, SlackChannel
from bot.db.sql import insert_for, rowcount, table_of
from bot.delivery import gate, surfaces
from bot.delivery.kinds import TOPIC as TOPIC
from bot.delivery.kinds import Kind as Kind

# Transient failures are retried after 2, 4, 8 … s, at most MAX_BACKOFF_SECONDS apart, MAX_ATTEMPTS times in all.
MAX_BACKOFF_SECONDS = 300.0
MAX_ATTEMPTS = 12
# Delivered (or failed) rows are kept this long for inspection, then deleted.
KEEP_DONE_SECONDS = 7 * 24 * 3600.0
# Kinds whose content is rendered from the latest state: enqueueing again while pending bumps the version, so a
# send of an older version leaves the row pending for the newer one. A confirmation and a final outcome go once.
_COALESCED = frozenset({Kind.PROGRESS, Kind.REFRESH})


@dataclass(frozen=True)
class Claimed:
    """A row this sender holds, with its channel: deliver it, then complete(), retry() or hold() it."""

    id: int
    request_id: int | None  # None: a row of a person's, not an operation's (their App Home)
    channel_id: str
    kind: Kind
    version: int
    attempts: int
    notify_user: str | None
    response_url: str | None
    user_id: str | None = None  # whose App Home (kind home)

    @property
    def last_try(self) -> bool:
        """True when a transient failure of this attempt ends the row's tries."""
        return self.attempts + 1 >= MAX_ATTEMPTS


def enqueue(
    session: Session,
    request_ids: int | Sequence[int],
    kinds: Kind | Iterable[Kind],
    *,
    notify_user: str | None = None,
    response_url: str | None = None,
    after: float = 0.0,
) -> None:
    """Record, in the caller's transaction, what operations' channels must be told: one INSERT … SELECT per kind,
    coalesced with pending rows, however many operations. `after` makes the rows due that many seconds from now;
    a coalesced row is due at the sooner of the pending row's time and the new one's (news owed meanwhile joins a
    delayed row and goes out at once, in its latest version)."""
    ids = [request_ids] if isinstance(request_ids, int) else list(request_ids)
    kinds = [kinds] if isinstance(kinds, Kind) else list(kinds)
    if not kinds or not ids:
        return
    columns = ["request_id", "channel_id", "kind", "pending_key", "notify_user", "response_url", "created_at", "due_at"]
    for kind in kinds:
        source = (
            select(
                Operation.id,
                Operation.channel_id,
                literal(kind.value, String()),
                literal(f"{kind.value}:", String()) + cast(Operation.id, String()),  # one pending row per kind
                literal(notify_user, String()),
                literal(response_url, Text()),
                db_time(),
                db_time(after),
            )
            .where(Operation.id.in_(ids))
            .order_by(Operation.id)
        )
        session.execute(_joining_pending(insert_for(session, OutboxMessage).from_select(columns, source), kind))
    surfaces.owed_with(session, ids, kinds)
    session.info.setdefault("topics", set()).add(TOPIC)


def _joining_pending(statement: Any, kind: Kind) -> Any:
    """The INSERT of new rows of one kind, made to join a pending row of the same kind and operation: coalesced
    kinds bump its version (sent in their latest version), the others are owed once."""
    if kind not in _COALESCED:
        return statement.on_conflict_do_nothing(index_elements=["pending_key"])
    return statement.on_conflict_do_update(
        index_elements=["pending_key"],
        set_={
            "version": OutboxMessage.version + 1,
            "due_at": case(
                (statement.excluded.due_at < OutboxMessage.due_at, statement.excluded.due_at),
                else_=OutboxMessage.due_at,
            ),
            # A decision's refresh keeps whom to tell if it fails, even when it joins a pending refresh.
            "notify_user": func.coalesce(statement.excluded.notify_user, OutboxMessage.notify_user),
            "response_url": func.coalesce(statement.excluded.response_url, OutboxMessage.response_url),
        },
    )


def pending_count(session: Session) -> int:
    """Count the messages not yet delivered (nor given up)."""
    return int(session.scalar(select(func.count(OutboxMessage.id)).where(OutboxMessage.pending_key.is_not(None))) or 0)


def is_pending(session: Session, request_id: int, kind: Kind) -> bool:
    """True while a row of this kind for this operation is waiting to be delivered."""
    key = f"{kind.value}:{request_id}"
    return session.scalar(select(OutboxMessage.id).where(OutboxMessage.pending_key == key)) is not None


@dataclass(frozen=True)
class Ready:
    """What the sender may do now: channels with a row due and a free slot, and when to look again."""

    channels: list[str]  # oldest due row first
    wait_seconds: float | None  # until something else becomes due or a held channel frees up (None: nothing)


# The sender's statements, built once (building one costs several times what running it does, and the sender runs
# a few per message); every time in them is the database's, read when they run.
_OUTBOX = table_of(OutboxMessage)
_IS_DUE = OutboxMessage.due_at <= db_time()
# One row per channel (not the oldest `limit` rows overall): a backlog in one channel never hides another's.
_HEADS = (
    select(
        OutboxMessage.channel_id,
        func.min(case((_IS_DUE, OutboxMessage.id))).label("first_due"),
        func.min(OutboxMessage.due_at).label("due_at"),
        SlackChannel.tat,
        SlackChannel.claim_until,
        db_epoch().label("now"),
        db_time().label("now_time"),
    )
    .outerjoin(SlackChannel, SlackChannel.channel_id == OutboxMessage.channel_id)
    .where(OutboxMessage.pending_key.is_not(None))
    .group_by(OutboxMessage.channel_id, SlackChannel.tat, SlackChannel.claim_until)
    .limit(bindparam("limit", type_=Integer()))
)
# The oldest due row of each channel whose slot was just taken.
_FIRSTS = (
    select(*_OUTBOX.c)
    .where(
        _OUTBOX.c.id.in_(
            select(func.min(_OUTBOX.c.id))
            .where(
                _OUTBOX.c.channel_id.in_(bindparam("keys", expanding=True)),
                _OUTBOX.c.pending_key.is_not(None),
                _OUTBOX.c.due_at <= db_time(),
            )
            .group_by(_OUTBOX.c.channel_id)
        )
    )
    .order_by(_OUTBOX.c.id)
)
_CLAIM = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(claimed_by=bindparam("owner"), claim_until=db_time(bindparam("lease", type_=Float())))
)
_RENEW = (
    update(_OUTBOX)
    .where(_OUTBOX.c.channel_id.in_(bindparam("keys", expanding=True)), _OUTBOX.c.claimed_by == bindparam("owner"))
    .values(claim_until=db_time(bindparam("lease", type_=Float())))
)


def _completing(sent: bool) -> Any:
    """The UPDATE that ends a row's claim and its pending life (sent: when; else not sent, or failed for good), iff
    it is still the version sent."""
    return (
        update(_OUTBOX)
        .where(_OUTBOX.c.id == bindparam("row_id"), _OUTBOX.c.version == bindparam("row_version"))
        .values(
            pending_key=None,
            sent_at=db_time() if sent else None,
            error=bindparam("failure"),
            claimed_by=None,
            claim_until=None,
            response_url=None,
        )
    )


_COMPLETE = {sent: _completing(sent) for sent in (True, False)}


def ready(session: Session, *, busy: Iterable[str] = (), limit: int = 1000) -> Ready:
    """Find the channels whose oldest pending row is due and whose slot is free now (not in `busy`)."""
    skip = set(busy)
    heads = session.execute(_HEADS, {"limit": limit}).all()
    first: dict[str, int] = {}
    wait: float | None = None
    for head in heads:
        if head.channel_id in skip or (head.claim_until is not None and head.claim_until > head.now):
            continue  # a send is in flight there: its completion wakes the sender
        free_in = 0.0 if head.tat is None else head.tat - gate.pace_of(head.channel_id).tolerance - head.now
        due_in = 0.0 if head.first_due is not None else (head.due_at - head.now_time).total_seconds()
        at = max(due_in, free_in)
        if at <= 0:
            first[head.channel_id] = head.first_due
        else:
            wait = at if wait is None else min(wait, at)
    return Ready(channels=sorted(first, key=first.__getitem__), wait_seconds=wait)


def claim(session: Session, channel_ids: Sequence[str], *, owner: Owner, lease: Lease) -> list[Claimed]:
    """Take each channel's slot and its oldest due row, in one transaction and a few statements however many
    channels; return the rows claimed, oldest first (a channel whose slot or row is taken is left out)."""
    taken = gate.take_many(session, channel_ids, owner=owner, lease=lease)
    if not taken:
        return []
    rows = session.execute(_FIRSTS, {"keys": sorted(taken)}).all()
    for channel_id in sorted(taken - {row.channel_id for row in rows}):  # sent meanwhile by another replica
        gate.release(session, channel_id, owner=owner, unused=True)
    if rows:
        session.execute(_CLAIM, {"ids": [row.id for row in rows], "owner": owner.name, "lease": lease.seconds})
    return [
        Claimed(
            row.id,
            row.request_id,
            row.channel_id,
            Kind(row.kind),
            row.version,
            row.attempts,
            row.notify_user,
            row.response_url,
            row.user_id,
        )
        for row in rows
    ]


def complete(session: Session, row: Claimed, *, owner: Owner, error: str | None = None, sent: bool = True) -> bool:
    """Mark a row sent (or failed for good, with error; or, not sent, with nothing left to say) and free its channel.

    Returns True iff the row is no longer pending: one enqueued again while it was being sent (a newer version)
    stays pending, so its latest state goes out too. A row not sent gives its channel's pace back.
    """
    gate.release(session, row.channel_id, owner=owner, unused=not sent)
    completing = _COMPLETE[sent and error is None]
    done = session.execute(completing, {"row_id": row.id, "row_version": row.version, "failure": error})
    if rowcount(done) == 1:
        return True
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == row.id)
        .values(claimed_by=None, claim_until=None, attempts=0)
        .execution_options(synchronize_session=False)
    )
    return False


def renew(session: Session, channel_ids: Iterable[str], *, owner: Owner, lease: Lease) -> set[str]:
    """Extend this sender's claims on channels (and their rows) it is sending to; return the channels it holds.

    Called before each send and by the sender's heartbeat, so a slow send is never taken over while in flight; a
    sender that lost a claim (paused past it) must not send.
    """
    held = gate.renew(session, list(channel_ids), owner=owner, lease=lease)
    if held:
        session.execute(_RENEW, {"keys": sorted(held), "owner": owner.name, "lease": lease.seconds})
    return held


def retry(session: Session, row: Claimed, *, owner: Owner, error: str) -> None:
    """A transient failure: free the channel and try the row again after an exponential backoff (2, 4, 8 … s)."""
    attempts = row.attempts + 1
    gate.release(session, row.channel_id, owner=owner)
    delay = min(MAX_BACKOFF_SECONDS, 2.0 ** min(attempts, 30))
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == row.id)
        .values(claimed_by=None, claim_until=None, attempts=attempts, due_at=db_time(delay), error=error)
        .execution_options(synchronize_session=False)
    )


def hold(session: Session, row: Claimed, *, owner: Owner, seconds: float) -> None:
    """Slack said 429: hold the whole channel back for its Retry-After (nothing sleeps); the row stays first."""
    gate.hold(session, row.channel_id, owner=owner, seconds=seconds)
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


def take_over_predecessor(session: Session, *, owner: Owner) -> int:
    """Free the rows and channels an earlier process of this replica was sending when it stopped; return how many.

    That process is gone, so its sends resume now instead of after a lease (at worst one message repeats).
    """
    freed = session.execute(
        update(OutboxMessage)
        .where(owner.predecessor(OutboxMessage.claimed_by))
        .values(claimed_by=None, claim_until=None)
        .execution_options(synchronize_session=False)
    )
    gate.take_over_predecessor(session, owner=owner)
    return rowcount(freed)


def prune(session: Session, *, older_than_seconds: float = KEEP_DONE_SECONDS) -> int:
    """Delete delivered or failed rows older than that (pending ones are kept whatever their age)."""
    result = session.execute(
        delete(OutboxMessage)
        .where(OutboxMessage.pending_key.is_(None), OutboxMessage.created_at < db_time(-older_than_seconds))
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)
