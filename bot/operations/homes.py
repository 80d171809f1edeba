"""The App Home in SQL: who keeps one, the sentence shown at its top, and the operations it shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, selectinload

from bot.db.clock import db_time
from bot.db.models import AppHomeUser, Operation, Run
from bot.db.sql import insert_for, insert_ignoring_conflicts
from bot.delivery import surfaces
from bot.operations.records import OperationRecord, RunRecord, record_of, run_of
from bot.operations.repository import database_now
from bot.operations.states import State

RECENT = 10  # "Your recent requests"
# Pending approvals read to decide which the reader may see (their grants decide each); far more than a Home shows.
CANDIDATES = 200
NOTICE_SECONDS = 600.0  # how long a notice stays at the top of a Home
# Opening a Home published this recently publishes nothing: every change since was published by itself, and Slack
# keeps showing the last Home published (only its "in 3 h" and "Updated" lines age).
FRESH_SECONDS = 60.0


@dataclass(frozen=True)
class HomeRows:
    """What the database holds for one person's Home, read at `as_of` (the database's time)."""

    recent: tuple[OperationRecord, ...]
    pending_approvals: tuple[OperationRecord, ...]  # others' requests waiting for a second person, newest first
    notice: str | None
    as_of: datetime


def opened(session: Session, user_ids: Sequence[str]) -> None:
    """Note that these people opened their Homes (from now on each is kept up to date) and owe a fresh one to each
    whose Home was not published in the last FRESH_SECONDS."""
    rows = [{"user_id": user_id, "opened_at": db_time()} for user_id in dict.fromkeys(user_ids)]
    insert_ignoring_conflicts(session, AppHomeUser, rows, ["user_id"])
    stale = session.scalars(
        select(AppHomeUser.user_id).where(
            AppHomeUser.user_id.in_(list(user_ids)),
            or_(AppHomeUser.published_at.is_(None), AppHomeUser.published_at < db_time(-FRESH_SECONDS)),
        )
    ).all()
    surfaces.enqueue_homes(session, stale)


def published(session: Session, user_id: str) -> None:
    """Note that someone's Home was just published."""
    session.execute(
        update(AppHomeUser)
        .where(AppHomeUser.user_id == user_id)
        .values(published_at=db_time())
        .execution_options(synchronize_session=False)
    )


def refresh(session: Session, user_id: str) -> None:
    """Owe someone a fresh Home, if they keep one."""
    surfaces.enqueue_homes(session, [user_id])


def tell(session: Session, user_id: str, notice: str) -> None:
    """Show one sentence (mrkdwn of ours) at the top of someone's Home for a while, and owe them a fresh Home."""
    statement = insert_for(session, AppHomeUser).values(
        user_id=user_id, opened_at=db_time(), notice=notice, notice_at=db_time()
    )
    session.execute(
        statement.on_conflict_do_update(index_elements=["user_id"], set_={"notice": notice, "notice_at": db_time()})
    )
    surfaces.enqueue_homes(session, [user_id])


def read(session: Session, user_id: str) -> HomeRows:
    """Read someone's recent requests, the requests waiting for approval they might see, and their notice."""
    now = database_now(session)
    recent = session.scalars(
        select(Operation)
        # A run's stop reports in its start's thread, and the start's line shows how the run ended.
        .where(Operation.requester_id == user_id, Operation.parent_id.is_(None))
        .options(selectinload(Operation.instances))
        .order_by(Operation.id.desc())
        .limit(RECENT)
    ).all()
    pending = session.scalars(
        select(Operation)
        .where(
            Operation.state == State.PENDING.value,
            Operation.needs_approval.is_(True),
            Operation.expires_at > db_time(),
            Operation.requester_id != user_id,
        )
        .options(selectinload(Operation.instances))
        .order_by(Operation.id.desc())
        .limit(CANDIDATES)
    ).all()
    notice = session.execute(
        select(AppHomeUser.notice).where(
            AppHomeUser.user_id == user_id,
            AppHomeUser.notice.is_not(None),
            AppHomeUser.notice_at > db_time(-NOTICE_SECONDS),
        )
    ).scalar_one_or_none()
    its_runs: dict[int, list[RunRecord]] = {}
    for run in session.scalars(select(Run).where(Run.request_id.in_([r.id for r in recent])).order_by(Run.id)):
        its_runs.setdefault(run.request_id, []).append(run_of(run, now))
    return HomeRows(
        recent=tuple(record_of(r, now, tuple(its_runs.get(r.id, ()))) for r in recent),
        pending_approvals=tuple(record_of(r, now) for r in pending),
        notice=notice,
        as_of=now,
    )
