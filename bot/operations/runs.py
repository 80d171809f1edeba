"""Time-boxed runs in SQL: a timer is a row, and every move of one is a compare-and-set on the database's clock.

A run is one instance a time-boxed start brought up. Its clock starts when the instance reaches RUNNING (not at the
click); its reminder is due RUN_REMINDER_SECONDS before the stop (at half-time for shorter runs); its stop is due at
stop_at. Extending and stopping race through the same row: whichever compare-and-set comes first wins. An auto-stop
that fails puts its run back to running, due again a while later (retry_delay); someone's stop that fails puts
it back to running with its stop time as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from sqlalchemy import ColumnElement, and_, bindparam, case, insert, select, update
from sqlalchemy.orm import Session

from bot.db.clock import db_shift, db_time
from bot.db.models import Operation, OperationInstance, Run
from bot.db.session import Database
from bot.db.sql import rowcount, table_of
from bot.delivery import outbox
from bot.domain.actions import Outcome
from bot.domain.vocabulary import SYSTEM_ACTOR
from bot.operations.records import EXTENSION_SECONDS, HomeRun, RunRecord, RunState, run_of

# A failed auto-stop is tried again this long after (doubling with each failure, at most STOP_RETRY_MAX_SECONDS): a
# VM must not run on for good because Zenlayer failed once, nor be called for every step while it keeps failing.
STOP_RETRY_SECONDS = 60.0
STOP_RETRY_MAX_SECONDS = 3600.0


def create(session: Session, operation_id: int) -> None:
    """Record the runs of a time-boxed start just approved (none for an untimed one), waiting for RUNNING."""
    operation = session.get(Operation, operation_id)
    if operation is None or operation.run_seconds is None or operation.action != "start":
        return
    included = select(OperationInstance.instance_id).where(
        OperationInstance.request_id == operation_id, OperationInstance.included.is_(True)
    )
    rows = [
        {
            "request_id": operation_id,
            "instance_id": instance_id,
            "requester_id": operation.requester_id,
            "channel_id": operation.channel_id,
            "state": RunState.WAITING.value,
            "duration_seconds": operation.run_seconds,
            "cap_seconds": operation.run_cap_seconds,
        }
        for instance_id in session.scalars(included)
    ]
    if rows:
        session.execute(insert(Run), rows)


def start(session: Session, request_id: int, instance_ids: Iterable[str], *, reminder_seconds: float) -> None:
    """Start the clocks of instances that just reached RUNNING: stop due after the run's duration, the reminder
    `reminder_seconds` before it (at half-time when the run is shorter than that)."""
    ids = list(instance_ids)
    if not ids:
        return
    lead = case(
        (Run.duration_seconds > reminder_seconds, Run.duration_seconds - reminder_seconds),
        else_=Run.duration_seconds / 2,
    )
    session.execute(
        update(Run)
        .where(Run.request_id == request_id, Run.instance_id.in_(ids), Run.state == RunState.WAITING.value)
        .values(
            state=RunState.RUNNING.value,
            started_at=db_time(),
            stop_at=db_time(Run.duration_seconds),
            remind_at=db_time(lead),
        )
        .execution_options(synchronize_session=False)
    )


def end(session: Session, condition: ColumnElement[bool], reason: str, *, to: RunState = RunState.ENDED) -> int:
    """Move the runs matching condition to a final state with its reason; return how many moved."""
    result = session.execute(
        update(Run)
        .where(condition, Run.state.in_([RunState.WAITING.value, RunState.RUNNING.value, RunState.STOPPING.value]))
        .values(state=to.value, ended_at=db_time(), ended_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def take_due_reminders(session: Session, *, limit: int = 1000) -> list[int]:
    """Mark the reminders that are due as sent (a compare-and-set: once); return their operations' ids."""
    due = select(Run.id).where(
        Run.state == RunState.RUNNING.value, Run.reminded_at.is_(None), Run.remind_at <= db_time()
    )
    taken = session.execute(
        update(Run)
        .where(Run.id.in_(due.limit(limit).scalar_subquery()), Run.reminded_at.is_(None))
        .values(reminded_at=db_time())
        .returning(Run.request_id)
        .execution_options(synchronize_session=False)
    )
    return sorted(set(taken.scalars()))


def due_stops(session: Session, *, limit: int = 1000) -> list[tuple[int, int, str]]:
    """Return (run id, operation id, instance id) of the runs whose stop is due, oldest due first."""
    rows = session.execute(
        select(Run.id, Run.request_id, Run.instance_id)
        .where(Run.state == RunState.RUNNING.value, Run.stop_at <= db_time())
        .order_by(Run.stop_at, Run.id)
        .limit(limit)
    )
    return [(row.id, row.request_id, row.instance_id) for row in rows]


def take_for_stopping(session: Session, run_ids: Sequence[int], *, due_only: bool) -> list[tuple[int, int, str]]:
    """Move running runs to stopping (a compare-and-set: an extension or another replica may have got there first);
    `due_only` keeps only those whose stop is due now. Return (run id, operation id, instance id) of those moved."""
    if not run_ids:
        return []
    condition: list[ColumnElement[bool]] = [Run.id.in_(list(run_ids)), Run.state == RunState.RUNNING.value]
    if due_only:
        condition.append(Run.stop_at <= db_time())
    taken = session.execute(
        update(Run)
        .where(*condition)
        .values(state=RunState.STOPPING.value)
        .returning(Run.id, Run.request_id, Run.instance_id)
        .execution_options(synchronize_session=False)
    )
    return [(row.id, row.request_id, row.instance_id) for row in taken]


def link_stop(session: Session, stops: Mapping[int, int]) -> None:
    """Note which stop operation stops each run (run id → stop operation id): one executemany."""
    if stops:
        table = table_of(Run)
        session.execute(
            update(table).where(table.c.id == bindparam("run_id")).values(stop_request_id=bindparam("stop_id")),
            [{"run_id": run_id, "stop_id": stop_id} for run_id, stop_id in stops.items()],
        )


def extend(session: Session, request_id: int, *, cap_seconds: float | None, seconds: float = EXTENSION_SECONDS) -> int:
    """Push the stop of a start's running runs `seconds` later, never past now + `cap_seconds` (the requester's
    cap as their grants say now), and owe a new reminder. A compare-and-set against the stop: a run already taken
    for stopping is not extended. Return how many runs were extended."""
    condition: list[ColumnElement[bool]] = [Run.request_id == request_id, Run.state == RunState.RUNNING.value]
    if cap_seconds is not None:
        condition.append(Run.stop_at <= db_time(cap_seconds - seconds))
    result = session.execute(
        update(Run)
        .where(*condition)
        .values(
            duration_seconds=Run.duration_seconds + seconds,
            stop_at=db_shift(Run.stop_at, seconds),
            remind_at=db_shift(Run.remind_at, seconds),
            reminded_at=None,
            extensions=Run.extensions + 1,
        )
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def owner_of(db: Database) -> Callable[[str, Sequence[str]], set[str]]:
    """Return the lookup Authority uses to let a requester stop their own runs (bot.grants.authority.RunOwner)."""

    def own(user_id: str, instance_ids: Sequence[str]) -> set[str]:
        with db.session(readonly=True) as session:
            return own_running(session, user_id, instance_ids)

    return own


def own_running(session: Session, user_id: str, instance_ids: Sequence[str]) -> set[str]:
    """Return which of these instances are in a run of this user's that is running (theirs to stop early)."""
    if not instance_ids:
        return set()
    rows = session.scalars(
        select(Run.instance_id).where(
            Run.requester_id == user_id,
            Run.state == RunState.RUNNING.value,
            Run.instance_id.in_(list(instance_ids)),
        )
    )
    return set(rows)


def records(session: Session, condition: ColumnElement[bool]) -> list[RunRecord]:
    """Read the runs matching condition, oldest first."""
    now = session.execute(select(db_time())).scalar_one()
    return [run_of(r, now) for r in session.scalars(select(Run).where(condition).order_by(Run.request_id, Run.id))]


def of_operation(request_id: int) -> ColumnElement[bool]:
    """SQL: the runs of one start."""
    return Run.request_id == request_id


def live_of(requester_id: str | None = None, channel_ids: Sequence[str] | None = None) -> ColumnElement[bool]:
    """SQL: the runs still running or stopping (one requester's, or in some channels, or everyone's)."""
    condition: list[ColumnElement[bool]] = [Run.state.in_([RunState.RUNNING.value, RunState.STOPPING.value])]
    if requester_id is not None:
        condition.append(Run.requester_id == requester_id)
    if channel_ids is not None:
        condition.append(Run.channel_id.in_(list(channel_ids)))
    return and_(*condition)


def on_approved(session: Session, operation_ids: Sequence[int]) -> None:
    """Operations were approved: a time-boxed start's runs are recorded; a stop's instances' running runs are
    being stopped by it (their own timers stand down)."""
    actions = session.execute(select(Operation.id, Operation.action).where(Operation.id.in_(list(operation_ids))))
    stops = []
    for operation_id, action in actions:
        if action == "start":
            create(session, operation_id)
        elif action == "stop":
            stops.append(operation_id)
    if not stops:
        return
    named = dict(
        session.execute(
            select(OperationInstance.instance_id, OperationInstance.request_id).where(
                OperationInstance.request_id.in_(stops), OperationInstance.included.is_(True)
            )
        ).all()
    )
    # By instance, the state checked here: a condition on state would have SQLite read every running run instead.
    found = session.execute(select(Run.id, Run.instance_id, Run.state).where(Run.instance_id.in_(sorted(named))))
    stopped_by = {run_id: named[i] for run_id, i, state in found if state == RunState.RUNNING.value}
    taken = [run_id for run_id, _, _ in take_for_stopping(session, list(stopped_by), due_only=False)]
    link_stop(session, {run_id: stopped_by[run_id] for run_id in taken})
    _refresh_starts(session, Run.id.in_(taken))


def on_final(session: Session, operation_ids: Sequence[int]) -> None:
    """Operations ended: a start's runs whose instance never reached RUNNING end; a stop's runs are stopped where
    its instance reached STOPPED (by their timer: "auto"; by someone's stop: "early"); where it did not, an
    auto-stop's run is due again later and someone's stop's run keeps its time box (its own stop time stands).
    A few statements however many operations."""
    ids = list(operation_ids)
    if not ids:
        return
    end(session, and_(Run.request_id.in_(ids), Run.state == RunState.WAITING.value), "never running")
    by_these = and_(Run.stop_request_id.in_(ids), Run.state == RunState.STOPPING.value)
    _refresh_starts(session, by_these)
    reached = (
        select(OperationInstance.id)
        .where(
            OperationInstance.request_id == Run.stop_request_id,
            OperationInstance.instance_id == Run.instance_id,
            OperationInstance.outcome == Outcome.REACHED.value,
        )
        .exists()
    )
    # An auto-stop is the timer's (decided by the system); a stop someone asked for or pressed is early.
    auto = select(Operation.id).where(Operation.id.in_(ids), Operation.decided_by == SYSTEM_ACTOR)
    stopped = and_(by_these, reached)
    end(session, and_(stopped, Run.stop_request_id.in_(auto)), "auto", to=RunState.STOPPED)
    end(session, stopped, "early", to=RunState.STOPPED)
    _back_to_running(session, by_these, Run.stop_request_id.in_(auto))


def retry_delay() -> ColumnElement[float]:
    """SQL: seconds until a run whose auto-stop just failed is due again (by how many failed before)."""
    doubling = [(Run.stop_failures == n, min(STOP_RETRY_MAX_SECONDS, STOP_RETRY_SECONDS * 2**n)) for n in range(6)]
    return case(*doubling, else_=STOP_RETRY_MAX_SECONDS)


def _back_to_running(session: Session, condition: ColumnElement[bool], by_timer: ColumnElement[bool]) -> None:
    """Put the runs whose stop failed back to running: an auto-stop's due again after retry_delay (the timer fires
    again), someone's stop's at its own stop time as it was (at once if that has passed), in one statement."""
    # Ending someone's instead (as before) left a VM running for good whenever a Stop now met a Zenlayer hiccup.
    session.execute(
        update(Run)
        .where(condition)
        .values(
            state=RunState.RUNNING.value,
            stop_at=case((by_timer, db_time(retry_delay())), else_=Run.stop_at),
            stop_request_id=None,
            stop_failures=Run.stop_failures + case((by_timer, 1), else_=0),
        )
        .execution_options(synchronize_session=False)
    )


def _refresh_starts(session: Session, condition: ColumnElement[bool]) -> None:
    """Owe a fresh rendering of the confirmations of the starts whose runs match (they show how their runs end)."""
    starts = sorted(set(session.scalars(select(Run.request_id).where(condition))))
    outbox.enqueue(session, starts, outbox.Kind.REFRESH)


class RunBook:
    """Reads runs for people: `/vm runs` (yours, or those an admin reaches) and the App Home, with their names."""

    def __init__(self, db: Database):
        self.db = db

    def running(self, requester_id: str | None = None) -> tuple[list[RunRecord], dict[str, str | None]]:
        """Return the runs still running or stopping (one requester's, or everyone's) and their instances' names."""
        with self.db.session(readonly=True) as session:
            found = records(session, live_of(requester_id))
            rows = session.execute(
                select(OperationInstance.instance_id, OperationInstance.name).where(
                    OperationInstance.request_id.in_(sorted({r.request_id for r in found}))
                )
            )
            names = {instance_id: name for instance_id, name in rows}
        return found, names

    def home_runs(self, requester_id: str, extend_seconds: float) -> list[HomeRun]:
        """One requester's running runs for their App Home: one line per start (its buttons act on the whole start,
        as the reminder's do), soonest stop first."""
        found, names = self.running(requester_id)
        with self.db.session(readonly=True) as session:
            rows = session.execute(
                select(Operation.id, Operation.message_ts).where(
                    Operation.id.in_(sorted({r.request_id for r in found}))
                )
            )
            threads = {request_id: message_ts for request_id, message_ts in rows}
        by_start: dict[int, list[RunRecord]] = {}
        for run in found:
            if run.state == RunState.RUNNING:
                by_start.setdefault(run.request_id, []).append(run)
        lines = [
            _home_run(group, names, threads.get(request_id), extend_seconds) for request_id, group in by_start.items()
        ]
        return sorted(lines, key=lambda line: line.seconds_left if line.seconds_left is not None else float("inf"))


def _home_run(
    group: Sequence[RunRecord], names: dict[str, str | None], message_ts: str | None, extend_seconds: float
) -> HomeRun:
    """Say one start's runs as one Home line: its first instance (and how many more), when the first one stops."""
    first = min(group, key=lambda r: r.stop_at or r.as_of)
    name = names.get(first.instance_id) or first.instance_id
    more = f" and {len(group) - 1} more" if len(group) > 1 else ""
    return HomeRun(
        request_id=first.request_id,
        instance_id=first.instance_id,
        name=f"{name}{more}",
        channel_id=first.channel_id,
        message_ts=message_ts,
        stop_at=first.stop_at,
        seconds_left=first.seconds_left,
        can_extend=all(r.can_extend(extend_seconds) for r in group),
    )
