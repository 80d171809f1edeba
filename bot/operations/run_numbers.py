"""The time-boxed runs' metrics, read at a scrape, and what pruning keeps of them.

Runs active is a gauge; auto-stops, extensions, instance-hours and the hours early stops saved are counters, summed
over the runs there are plus run_totals, which holds the share of every run pruned away: `vm-bot db prune --audit`
deletes a run's row and adds its share in the same transaction, so no counter ever goes down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, literal, select, union_all
from sqlalchemy.orm import Session

from bot.db.clock import db_seconds_between
from bot.db.models import Run, RunTotal
from bot.db.sql import insert_for
from bot.operations.records import RunState

_STOPPED = and_(Run.state == RunState.STOPPED.value, Run.started_at.is_not(None))
_SAVED = and_(Run.state == RunState.STOPPED.value, Run.ended_reason == "early", Run.stop_at > Run.ended_at)
# A run's share of the counters: (stopped after RUNNING, seconds it ran, seconds of its box left unused, extensions).
_SHARE: tuple[ColumnElement[Any], ...] = (
    case((_STOPPED, 1), else_=0).label("stopped"),
    case((_STOPPED, db_seconds_between(Run.started_at, Run.ended_at)), else_=0.0).label("run_seconds"),
    case((_SAVED, db_seconds_between(Run.ended_at, Run.stop_at)), else_=0.0).label("unused_seconds"),
    Run.extensions.label("extensions"),
)
_ACTIVE = [RunState.RUNNING.value, RunState.STOPPING.value]


def numbers(session: Session) -> dict[str, float | dict[str, float]]:
    """The runs' metrics: runs active, auto-stops, extensions, instance-hours by how runs ended, and the hours early
    stops left unused (counters: pruned runs included)."""
    reason = func.coalesce(Run.ended_reason, "").label("reason")
    there = select(reason, *_SHARE, case((Run.state.in_(_ACTIVE), 1), else_=0).label("active"))
    pruned = select(
        RunTotal.ended_reason,
        RunTotal.stopped,
        RunTotal.run_seconds,
        RunTotal.unused_seconds,
        RunTotal.extensions,
        literal(0).label("active"),
    )
    both = union_all(there, pruned).subquery()
    # One statement: one snapshot, so a prune committing meanwhile is counted once, never twice.
    rows = session.execute(
        select(
            both.c.reason,
            *(func.sum(column).label(column.name) for column in both.c if column.name != "reason"),
        ).group_by(both.c.reason)
    ).all()
    return {
        "vmbot_runs_active": float(sum(r.active or 0 for r in rows)),
        "vmbot_run_auto_stops": float(sum(r.stopped or 0 for r in rows if r.reason == "auto")),
        "vmbot_run_extensions": float(sum(r.extensions or 0 for r in rows)),
        "vmbot_run_instance_hours": {r.reason: float(r.run_seconds) / 3600 for r in rows if r.reason and r.stopped},
        "vmbot_run_instance_hours_saved": sum(float(r.unused_seconds or 0) for r in rows) / 3600,
    }


def delete_keeping_totals(session: Session, request_ids: Sequence[int]) -> int:
    """Delete the runs of these operations, adding their share to run_totals in the same transaction; return how
    many went. Only the transaction that deleted a run gets its row back, so two prunes never count one twice."""
    if not request_ids:
        return 0
    gone = session.execute(
        delete(Run)
        .where(Run.request_id.in_(list(request_ids)))
        .returning(func.coalesce(Run.ended_reason, "").label("reason"), *_SHARE)
        .execution_options(synchronize_session=False)
    ).all()
    shares: dict[str, list[float]] = {}
    for reason, *share in gone:
        total = shares.setdefault(str(reason), [0.0, 0.0, 0.0, 0.0])
        for i, value in enumerate(share):
            total[i] += float(value or 0)
    if shares:
        rows = [
            {
                "ended_reason": reason,
                "stopped": round(total[0]),
                "run_seconds": total[1],
                "unused_seconds": total[2],
                "extensions": round(total[3]),
            }
            for reason, total in sorted(shares.items())
        ]
        statement = insert_for(session, RunTotal).values(rows)
        added = {name: getattr(RunTotal, name) + statement.excluded[name] for name in rows[0] if name != "ended_reason"}
        session.execute(statement.on_conflict_do_update(index_elements=["ended_reason"], set_=added))
    return len(gone)
