"""What must hold of time-boxed runs after a chaos scenario, as functions of plain rows (so tests can feed them
made-up ones): no run stopped twice, none left running past its deadline, none auto-stopped before the deadline an
extension set, none stuck half-way.

Times: a run's deadline (stop_at), start and the end of the scenario are the database's clock; a StopInstances
call's time is the simulator's. Both are this host's clock (the PostgreSQL server and the simulator run here, never
under libfaketime; SQLite's clock is the host's), so they compare within TOLERANCE. The replicas' clocks, skewed
±30 s, are never used: the audit's created_at is one of them (written by the replica), so only its counts are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from bot.db.clock import as_utc, db_time
from bot.db.models import AuditEvent, Operation, OperationInstance, Run
from bot.db.session import Database
from bot.domain.vocabulary import SYSTEM_ACTOR

TOLERANCE = 1.0  # seconds between the host's clock read by the simulator and by the database, and rounding
ACTIVE = ("pending", "approved", "starting", "watching")
NOT_APPLIED = 500  # the simulator's HTTP 500 does no work (a flaky Zenlayer): that call stopped nothing
GAVE_UP = ("failed", "timed_out")  # stop operations that ended without stopping (an auto-stop's is made again)


@dataclass(frozen=True)
class RunRow:
    """One run as the database ended it, with its start's time box."""

    run_id: int
    request_id: int
    instance_id: str
    state: str
    run_seconds: float  # the time box asked for, before any extension
    extensions: int
    started_at: datetime | None
    stop_at: datetime | None
    ended_reason: str | None = None
    stop_request_id: int | None = None


@dataclass(frozen=True)
class StopOperation:
    """A stop operation: its parent start (a run's), its state, who decided it, every instance it names."""

    id: int
    parent_id: int | None
    state: str
    decided_by: str | None
    instance_ids: tuple[str, ...]


@dataclass(frozen=True)
class StopCall:
    """A StopInstances call the simulator answered."""

    instance_ids: tuple[str, ...]
    http_status: int
    code: str | None
    time: float  # Unix seconds, the host's clock

    @property
    def accepted(self) -> bool:
        return self.http_status == 200 and not self.code


@dataclass
class RunWorld:
    """Everything the run checks read, at the end of a scenario."""

    runs: list[RunRow]
    stops: list[StopOperation]
    calls: list[StopCall]
    statuses: dict[str, str]  # each instance's status at the simulator now
    now: datetime  # the database's clock now
    extend_seconds: float
    grace: float  # how late a due stop may be: see run_grace()
    extended: Counter[int] = field(default_factory=Counter)  # run_extended audit rows per start
    told_extended: Counter[int] = field(default_factory=Counter)  # Extend clicks whose clicker was told "Extended"
    active: frozenset[int] = frozenset()  # operations not final yet (the settle gave up on them)


def run_grace(lease_seconds: float, poll_seconds: float) -> float:
    """How long after its deadline a run's stop may be accepted: the promise is one lease plus one poll (a replica
    killed holding the stop's operation is taken over a lease later, the next step a poll after), and 30 s more for
    what the chaos adds on top: a restarted replica's start (2-6 s here), Zenlayer slow (5 s on the status lookup
    and 5 s on the stop), a call answered 500 and made again after a poll, PostgreSQL restarting."""
    return lease_seconds + poll_seconds + 30.0


def _stop_calls(world: RunWorld, instance_id: str) -> list[StopCall]:
    """The StopInstances calls for one instance that reached Zenlayer (accepted or refused), oldest first."""
    return sorted(
        (c for c in world.calls if instance_id in c.instance_ids and c.http_status != NOT_APPLIED),
        key=lambda c: c.time,
    )


def _first_accepted(world: RunWorld, instance_id: str) -> StopCall | None:
    return next((c for c in _stop_calls(world, instance_id) if c.accepted), None)


def double_stops(world: RunWorld) -> list[str]:
    """A run stopped more than once: more than one StopInstances reached Zenlayer for its instance (a second one is
    refused as not running, or accepted if it ran again), or more than one stop operation under its start that did
    not fail names it.
    Each run's instance is in no other run (the scenario gives every run an instance of its own)."""
    found: list[str] = []
    for run in world.runs:
        calls = _stop_calls(world, run.instance_id)
        if len(calls) > 1:
            said = ", ".join(str(c.code or c.http_status) for c in calls)
            found.append(f"run {run.run_id} ({run.instance_id}): StopInstances for one run {len(calls)} times ({said})")
        # A failed auto-stop is made again later (a second child then follows a failed one): two not failed is double.
        children = [
            s.id
            for s in world.stops
            if s.parent_id == run.request_id and run.instance_id in s.instance_ids and s.state not in GAVE_UP
        ]
        if len(children) > 1:
            found.append(f"run {run.run_id} ({run.instance_id}): {len(children)} child stop operations {children}")
    return found


def missed_stops(world: RunWorld) -> list[str]:
    """A run whose deadline (the latest any record gives it) passed more than the grace ago while its instance is
    neither stopped nor stopping, or whose first StopInstances reached Zenlayer more than the grace after it. A stop
    that reached Zenlayer on time and failed there (500s) is made again later: accepted late, it is not missed."""
    found: list[str] = []
    for run in world.runs:
        if run.stop_at is None or run.started_at is None:
            continue  # never RUNNING: no clock ran
        deadline = promised_deadline(world, run)
        overdue = (world.now - deadline).total_seconds()
        if overdue <= world.grace:
            continue
        attempts = [c for c in world.calls if run.instance_id in c.instance_ids]
        first = min((c.time for c in attempts), default=None)
        status = world.statuses.get(run.instance_id, "gone")
        if _first_accepted(world, run.instance_id) is None and status not in ("STOPPED", "STOPPING"):
            why = f"{run.state}" + (f", {run.ended_reason}" if run.ended_reason else "")
            found.append(
                f"run {run.run_id} ({run.instance_id}): {overdue:.0f} s past its deadline, still {status} ({why})"
            )
        elif first is not None and first - deadline.timestamp() > world.grace:
            late = first - deadline.timestamp()
            found.append(f"run {run.run_id} ({run.instance_id}): first StopInstances {late:.0f} s past its deadline")
    return found


def _extensions(world: RunWorld, run: RunRow) -> int:
    """How many extensions any record counts for a run: its row, the audit, its clickers' "Extended" replies (one
    run per start here)."""
    return max(run.extensions, world.extended[run.request_id], world.told_extended[run.request_id])


def promised_deadline(world: RunWorld, run: RunRow) -> datetime:
    """A run's deadline as its start and every extension any record counts make it (not its row's stop_at, which a
    failed auto-stop moves to the retry)."""
    assert run.started_at is not None
    extended = run.started_at.timestamp() + run.run_seconds + _extensions(world, run) * world.extend_seconds
    return datetime.fromtimestamp(extended, UTC)


def _deadline(world: RunWorld, run: RunRow) -> tuple[datetime, int]:
    """The latest deadline any record gives a run: its row's stop_at or its promised deadline; and how many
    extensions the records count."""
    assert run.stop_at is not None
    return max(run.stop_at, promised_deadline(world, run)), _extensions(world, run)


def early_auto_stops(world: RunWorld) -> list[str]:
    """An auto-stop (the timer's stop, decided by the system) whose StopInstances was accepted before the run's
    deadline: before the deadline an acknowledged Extend had moved it to (a stop after an extension), or before
    its deadline at all."""
    by_system = {s.id for s in world.stops if s.decided_by == SYSTEM_ACTOR}
    found: list[str] = []
    for run in world.runs:
        if run.stop_request_id not in by_system or run.stop_at is None or run.started_at is None:
            continue
        first = _first_accepted(world, run.instance_id)
        if first is None:
            continue
        deadline, extensions = _deadline(world, run)
        early = deadline.timestamp() - first.time
        if early <= TOLERANCE:
            continue
        if extensions:
            found.append(f"run {run.run_id}: auto-stopped {early:.1f} s before the deadline {extensions} Extend set")
        else:
            found.append(f"run {run.run_id}: auto-stopped {early:.1f} s before its deadline")
    return found


def stuck_runs(world: RunWorld) -> list[str]:
    """A run left waiting or stopping although the operation that should move it on is over (or gone)."""
    stops = {s.id: s for s in world.stops}
    found: list[str] = []
    for run in world.runs:
        if run.state == "waiting" and run.request_id not in world.active:
            found.append(f"run {run.run_id} ({run.instance_id}): left waiting after its start ended")
        if run.state == "stopping":
            owner = stops.get(run.stop_request_id) if run.stop_request_id is not None else None
            if owner is None or owner.id not in world.active:
                said = "no stop operation" if owner is None else f"its stop {owner.id} is {owner.state}"
                found.append(f"run {run.run_id} ({run.instance_id}): left stopping, {said}")
    return found


def bookkeeping(world: RunWorld) -> list[str]:
    """Extensions counted the same on the run, in the audit and in what clickers were told."""
    found: list[str] = []
    for run in world.runs:
        audited, told = world.extended[run.request_id], world.told_extended[run.request_id]
        if told > audited:
            found.append(f"run {run.run_id}: Extend click acknowledged but not taken ({told} told, {audited} audited)")
        if run.extensions != audited:
            found.append(f"run {run.run_id}: {run.extensions} extensions on its row, {audited} in the audit")
    return found


def run_violations(world: RunWorld) -> list[str]:
    """Every broken promise of runs, one line each."""
    return double_stops(world) + missed_stops(world) + early_auto_stops(world) + stuck_runs(world) + bookkeeping(world)


RUN_CATEGORIES = {
    "double stops": ("StopInstances for one run", "child stop operations"),
    "missed stops": ("past its deadline",),
    "stops after an extension": ("Extend set",),
    "early auto-stops": ("before its deadline",),
    "stuck runs": ("left waiting", "left stopping"),
}


def stop_calls(calls: Iterable[dict[str, Any]]) -> list[StopCall]:
    """The simulator's StopInstances calls (its /_simulator/calls rows)."""
    return [
        StopCall(tuple(c["instanceIds"]), int(c["httpStatus"]), c.get("code"), float(c["time"]))
        for c in calls
        if c["action"] == "StopInstances"
    ]


def read_runs(db: Database) -> tuple[list[RunRow], list[StopOperation], Counter[int], frozenset[int], datetime]:
    """The runs, the stop operations, run_extended audit rows per start, the operations still active, and the
    database's clock now."""
    with db.session(readonly=True) as session:
        boxes = dict(
            session.execute(select(Operation.id, Operation.run_seconds).where(Operation.run_seconds.is_not(None)))
            .tuples()
            .all()
        )
        runs = [
            RunRow(
                r.id,
                r.request_id,
                r.instance_id,
                r.state,
                boxes.get(r.request_id) or 0.0,
                r.extensions,
                r.started_at,
                r.stop_at,
                r.ended_reason,
                r.stop_request_id,
            )
            for r in session.scalars(select(Run).order_by(Run.id))
        ]
        named: dict[int, list[str]] = {}
        for request_id, instance_id in session.execute(
            select(OperationInstance.request_id, OperationInstance.instance_id)
            .join(Operation, Operation.id == OperationInstance.request_id)
            .where(Operation.action == "stop")
        ):
            named.setdefault(request_id, []).append(instance_id)
        stops = [
            StopOperation(o.id, o.parent_id, o.state, o.decided_by, tuple(named.get(o.id, ())))
            for o in session.scalars(select(Operation).where(Operation.action == "stop"))
        ]
        extended = Counter(
            dict(
                session.execute(
                    select(AuditEvent.request_id, func.count(AuditEvent.id))
                    .where(AuditEvent.event == "run_extended")
                    .group_by(AuditEvent.request_id)
                )
                .tuples()
                .all()
            )
        )
        active = frozenset(session.scalars(select(Operation.id).where(Operation.state.in_(ACTIVE))))
        now = as_utc(session.execute(select(db_time())).scalar_one())
    return runs, stops, extended, active, now
