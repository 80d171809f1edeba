"""What the surfaces beyond messages are owed with an operation's change: App Homes and Workflow Builder steps.

Whoever changes an operation owes its channel a message (bot/delivery/outbox.py). The same change shows on the App
Homes of the people it concerns — its requester, and those who may approve it — and, when it ends the operation,
completes the Workflow Builder step that opened it. Both are outbox rows like any other, written in the same
transaction and sent through the gate of the Web API method Slack limits for them (not a channel's: a Home is per
person, and views.publish is limited per workspace). A person's pending Home row coalesces like a refresh: however
much changes, one views.publish carries the latest state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from sqlalchemy import String, cast, literal, select
from sqlalchemy.orm import Session

from bot.db.clock import db_time
from bot.db.models import AppHomeUser, FunctionRun, Operation, OutboxMessage
from bot.db.sql import insert_for
from bot.delivery.gate import FUNCTIONS, VIEWS_PUBLISH
from bot.delivery.kinds import TOPIC, Kind

# Every change of an operation's state owes one of these; a Home shows states, not each status a poll sees.
HOME_KINDS = frozenset({Kind.CONFIRM, Kind.REFRESH, Kind.FINAL})
# A move to a final state owes one of these (a decision only a refresh, an outcome a final reply too).
ENDING_KINDS = frozenset({Kind.REFRESH, Kind.FINAL})


def owed_with(session: Session, request_ids: Sequence[int], kinds: Iterable[Kind]) -> None:
    """Record, in the caller's transaction, what the Homes and steps concerned are owed with these operations'
    messages of these kinds."""
    wanted = set(kinds)
    if wanted & HOME_KINDS:
        enqueue_homes(session, people_of(session, request_ids))
    if wanted & ENDING_KINDS:
        _enqueue_steps(session, request_ids)


def people_of(session: Session, request_ids: Sequence[int]) -> list[str]:
    """Return whose Homes show these operations: their requesters and the people who may approve them."""
    people: set[str] = set()
    for requester, approvers in session.execute(
        select(Operation.requester_id, Operation.approvers).where(Operation.id.in_(list(request_ids)))
    ):
        people.add(requester)
        people.update(json.loads(approvers) if approvers else ())
    return sorted(people)


def enqueue_homes(session: Session, user_ids: Iterable[str]) -> None:
    """Owe a fresh App Home to each of these people who opened theirs (nobody else has a Home to keep up to date):
    one INSERT … SELECT, coalesced with a Home already pending."""
    users = sorted(set(user_ids))
    if not users:
        return
    source = (
        select(
            AppHomeUser.user_id,
            literal(VIEWS_PUBLISH, String()),
            literal(Kind.HOME.value, String()),
            literal(f"{Kind.HOME.value}:", String()) + AppHomeUser.user_id,
            db_time(),
            db_time(),
        )
        .where(AppHomeUser.user_id.in_(users))
        .order_by(AppHomeUser.user_id)
    )
    columns = ["user_id", "channel_id", "kind", "pending_key", "created_at", "due_at"]
    statement = insert_for(session, OutboxMessage).from_select(columns, source)
    statement = statement.on_conflict_do_update(
        index_elements=["pending_key"], set_={"version": OutboxMessage.version + 1}
    )
    session.execute(statement)
    session.info.setdefault("topics", set()).add(TOPIC)


def _enqueue_steps(session: Session, request_ids: Sequence[int]) -> None:
    """Owe the completion of the step that opened each of these operations that has now ended, once."""
    source = (
        select(
            FunctionRun.request_id,
            literal(FUNCTIONS, String()),
            literal(Kind.STEP.value, String()),
            literal(f"{Kind.STEP.value}:", String()) + cast(FunctionRun.request_id, String()),
            db_time(),
            db_time(),
        )
        .join(Operation, Operation.id == FunctionRun.request_id)
        .where(
            FunctionRun.request_id.in_(list(request_ids)),
            FunctionRun.completed_at.is_(None),
            Operation.finished_at.is_not(None),
        )
        .order_by(FunctionRun.request_id)
    )
    columns = ["request_id", "channel_id", "kind", "pending_key", "created_at", "due_at"]
    session.execute(
        insert_for(session, OutboxMessage)
        .from_select(columns, source)
        .on_conflict_do_nothing(index_elements=["pending_key"])
    )
