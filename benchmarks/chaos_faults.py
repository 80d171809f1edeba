"""Chaos, extended (issue 21): the faults `chaos.py` adds beside its SIGKILLs, and the checks they call for.

* **Clocks off by ±30 s** (PostgreSQL only): replica 1 runs 30 s ahead, replica 2 30 s behind, under libfaketime
  (`LD_PRELOAD`, Debian's `faketime` package). That proves more than an offset injected into vm-bot would: every
  clock read of the process is moved — Python's `time.time()` and `datetime.now()`, SQLAlchemy's defaults, httpx,
  slack-sdk, anything we did not think of — while an injected offset moves only the reads we routed through it,
  so it can only confirm what we already believed, and it needs a test-only hook in production code. Monotonic
  clocks are left alone (`FAKETIME_DONT_FAKE_MONOTONIC`), as NTP leaves them; `bot.devtools.faketime` also works
  around libfaketime's broken `time.sleep` for Python 3.11+ (without it every sleep of a skewed replica failed).
  SQLite runs no skew, on purpose: there the database's clock *is* each process's own (`strftime('now')` in the
  process), so faking a process's clock fakes its database clock too. On a real host every process reads the
  same clock, and SQLite is one host by construction (README: "SQLite's processes all read one host's clock"),
  so a skewed SQLite process is a configuration that cannot exist outside LD_PRELOAD; it would only show that
  two clocks disagree, which is why vm-bot needs one.
* **PostgreSQL restarted** mid-run as after a crash (`.ci/postgres.sh restart`: immediate shutdown and recovery),
  only on a cluster `.ci/postgres.sh` made (the URL's port must match the cluster's).
* **Slack taken away**: the Web API stand-in closes its port (connections refused), then comes back.
* **Zenlayer slow** (every call answered 5 s late, after doing the work) and **flaky** (HTTP 500 on a share of
  calls, work not done) for a while.

The checks that count what these could break: double calls, lost outcomes, wrong final messages, stuck requests.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from chaos_run_checks import RUN_CATEGORIES
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from bot.db.clock import db_time
from bot.db.models import Operation, OperationInstance, ZenlayerCall
from bot.db.session import Database
from bot.devtools import faketime
from bot.devtools.slack_web_api import FakeSlackWebApi

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

SKEW_SECONDS = 30.0
SLOW_SECONDS = 5.0  # how late a slow Zenlayer answers


@dataclass(frozen=True)
class Faults:
    """Which faults a mode adds, and for how long (seconds); each window starts at a share of the traffic's time."""

    skew_seconds: float
    postgres_restarts: int
    slack_outage_seconds: float
    slow_seconds: float
    flaky_seconds: float


FAULTS = {
    # Short mode stays cheap (CI runs it): every fault once, briefly.
    "short": Faults(
        skew_seconds=SKEW_SECONDS, postgres_restarts=1, slack_outage_seconds=5, slow_seconds=6, flaky_seconds=5
    ),
    "long": Faults(
        skew_seconds=SKEW_SECONDS, postgres_restarts=2, slack_outage_seconds=60, slow_seconds=40, flaky_seconds=40
    ),
}


# --- clocks ---------------------------------------------------------------------------------------------------------


def clock_offsets(backend: str, replicas: int, faults: Faults) -> list[float]:
    """Each replica's clock offset: +skew, -skew, then exact, on PostgreSQL; none on SQLite (see the docstring)."""
    if backend != "postgres" or faketime.library() is None:
        return [0.0] * replicas
    pattern = [faults.skew_seconds, -faults.skew_seconds, 0.0]
    return [pattern[n % len(pattern)] for n in range(replicas)]


def skewed_env(offset: float) -> dict[str, str]:
    """Environment that moves every wall-clock read of a process by `offset` seconds (nothing when 0)."""
    return faketime.skewed_env(offset)


def skew_note(backend: str, offsets: list[float]) -> str:
    """One line saying what the run does about clocks, and why."""
    if backend == "sqlite":
        return "clocks: no skew on SQLite (every process reads one host's clock; the database's clock is that clock)"
    if not any(offsets):
        return "clocks: libfaketime missing (Debian package faketime): replicas run without skew"
    return "clocks: replicas' offsets " + ", ".join(f"{o:+g} s" for o in offsets) + " (libfaketime)"


# --- PostgreSQL -----------------------------------------------------------------------------------------------------


def restartable_cluster(url: str, cluster_dir: str | None) -> str | None:
    """Return the .ci/postgres.sh cluster serving url, if that is what serves it (never restart anyone else's)."""
    if not cluster_dir:
        return None
    pid_file = Path(cluster_dir) / "data" / "postmaster.pid"
    if not (Path(cluster_dir) / ".vm-bot-postgres").is_file() or not pid_file.is_file():
        return None
    lines = pid_file.read_text().splitlines()
    port = make_url(url).port
    return cluster_dir if len(lines) > 3 and port is not None and lines[3].strip() == str(port) else None


def restart_postgres(cluster_dir: str) -> float:
    """Restart the cluster as after a crash; return how long it was away."""
    started = time.monotonic()
    subprocess.run([str(ROOT / ".ci/postgres.sh"), "restart", cluster_dir], check=True, capture_output=True)  # noqa: S603
    return time.monotonic() - started


def patient(read: Callable[[], T], timeout: float = 60.0) -> T:
    """Run a read of the chaos check's own, retrying while the database is restarting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# --- the schedule ---------------------------------------------------------------------------------------------------


@dataclass
class FaultLog:
    """What the schedule did, with monotonic times."""

    events: list[tuple[float, str]] = field(default_factory=list)
    postgres_away: list[float] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))
        print(f"chaos: {what}", flush=True)


class FaultSchedule(threading.Thread):
    """Plays the mode's faults during the traffic, one window after another, and always ends them."""

    def __init__(
        self,
        *,
        faults: Faults,
        seconds: float,
        fake: FakeSlackWebApi,
        simulator_url: str,
        cluster_dir: str | None,
        stop: threading.Event,
    ):
        super().__init__(name="fault-schedule", daemon=True)
        self.faults = faults
        self.seconds = seconds
        self.fake = fake
        self.simulator_url = simulator_url
        self.cluster_dir = cluster_dir
        self.stop_event = stop
        self.log = FaultLog()

    def run(self) -> None:
        plan: list[tuple[float, Callable[[], None]]] = [
            (0.10, self._flaky),
            (0.30, self._slow),
            (0.50, self._slack_away),
        ]
        restarts = self.faults.postgres_restarts if self.cluster_dir else 0
        plan += [(0.20 + 0.60 * (n + 1) / (restarts + 1), self._restart_postgres) for n in range(restarts)]
        started = time.monotonic()
        for share, fault in sorted(plan, key=lambda p: p[0]):
            if self.stop_event.wait(max(0.0, started + share * self.seconds - time.monotonic())):
                return
            fault()

    def _simulator(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        import httpx

        httpx.request(method, f"{self.simulator_url}/_simulator/{path}", json=body, timeout=10).raise_for_status()

    def _flaky(self) -> None:
        """Zenlayer answers HTTP 500 (work not done) to about a third of the calls for a while."""
        self.log.note(f"Zenlayer flaky (500s) for {self.faults.flaky_seconds:g} s")
        until = time.monotonic() + self.faults.flaky_seconds
        while time.monotonic() < until and not self.stop_event.is_set():
            self._simulator("POST", "faults", {"action": "*", "times": 1, "status": 500, "code": "INTERNAL_ERROR"})
            time.sleep(0.3)
        self._simulator("DELETE", "faults")
        self.log.note("Zenlayer answers normally again")

    def _slow(self) -> None:
        """Every Zenlayer call is carried out, then answered SLOW_SECONDS late, for a while."""
        self.log.note(f"Zenlayer slow ({SLOW_SECONDS:g} s a call) for {self.faults.slow_seconds:g} s")
        spec = {"action": "*", "times": 1_000_000, "status": 200, "hang_seconds": SLOW_SECONDS}
        self._simulator("POST", "faults", spec)
        self.stop_event.wait(self.faults.slow_seconds)
        self._simulator("DELETE", "faults")
        self.log.note("Zenlayer fast again")

    def _slack_away(self) -> None:
        """The Slack Web API refuses connections for a while, then comes back."""
        self.log.note(f"Slack away for {self.faults.slack_outage_seconds:g} s")
        self.fake.go_away()
        try:
            self.stop_event.wait(self.faults.slack_outage_seconds)
        finally:
            self.fake.come_back()
        self.log.note("Slack back")

    def _restart_postgres(self) -> None:
        assert self.cluster_dir is not None
        self.log.note("PostgreSQL restarting (immediate shutdown, recovery)")
        away = restart_postgres(self.cluster_dir)
        self.log.postgres_away.append(away)
        self.log.note(f"PostgreSQL back after {away:.1f} s")

    def finish(self) -> None:
        """Stop the schedule and make sure every fault has ended."""
        self.stop_event.set()
        self.join(timeout=self.faults.slack_outage_seconds + 60)
        self._simulator("DELETE", "faults")


# --- what the faults could break ------------------------------------------------------------------------------------

FINAL_KINDS = {"done": ":white_check_mark: All", "failed": ":x: Not every", "timed_out": ":alarm_clock: Stopped"}
_LISTED = re.compile(r"^• `([^`]+)`", re.MULTILINE)


def wrong_finals(
    db: Database, fake: FakeSlackWebApi, calls: list[dict[str, Any]], statuses: dict[str, str]
) -> list[str]:
    """Final replies that say something untrue: a kind that is not the request's state, "All RUNNING" while an
    instance is not, or an instance named as not started that this very request's call did start."""
    started_by_call = {c["requestId"]: c for c in calls if c["action"] == "StartInstances" and c["httpStatus"] == 200}
    accepted = {i: c["requestId"] for c in started_by_call.values() for i in c["instanceIds"]}
    with db.session(readonly=True) as session:
        finished = list(
            session.scalars(
                select(Operation).where(Operation.state.in_(list(FINAL_KINDS)), Operation.action == "start")
            )
        )
        stopped_since = _stopped(session)  # time-boxed runs' instances: stopped after their start said all RUNNING
        included = {
            (row.request_id, row.instance_id)
            for row in session.scalars(select(OperationInstance).where(OperationInstance.included.is_(True)))
        }
        own_calls: dict[int, list[ZenlayerCall]] = {}
        for call in session.scalars(select(ZenlayerCall)):
            own_calls.setdefault(call.request_id, []).append(call)
    wrong: list[str] = []
    for operation in finished:
        finals = [m.text for m in fake.thread(operation.channel_id, operation.message_ts or "") if is_final(m.text)]
        if not finals:
            continue  # not told: counted as a lost outcome
        said = finals[-1]
        if FINAL_KINDS[operation.state] not in said:
            wrong.append(f"request {operation.id}: {operation.state}, but its final reply says {said[:60]!r}")
            continue
        ids = sorted(i for r, i in included if r == operation.id)
        if operation.state == "done":
            not_up = [i for i in ids if statuses.get(i) != "RUNNING" and i not in stopped_since]
            if not_up:
                wrong.append(f"request {operation.id}: says all RUNNING, but {not_up} are not")
            continue
        mine = {c.zenlayer_request_id for c in own_calls.get(operation.id, []) if c.zenlayer_request_id}
        unknown = {
            i for c in own_calls.get(operation.id, []) if c.outcome == "unknown" for i in json.loads(c.instance_ids)
        }
        for instance in _LISTED.findall(said):
            by = accepted.get(instance)
            if by is not None and (by in mine or (instance in unknown and by not in _recorded(own_calls))):
                wrong.append(f"request {operation.id}: says {instance} did not start, but its own call started it")
    return wrong


def _stopped(session: Session) -> set[str]:
    """Every instance a stop operation names."""
    stops = select(OperationInstance.instance_id).join(Operation, Operation.id == OperationInstance.request_id)
    return set(session.scalars(stops.where(Operation.action == "stop")))


def _recorded(own_calls: dict[int, list[ZenlayerCall]]) -> set[str]:
    """Every Zenlayer requestId some request recorded."""
    return {c.zenlayer_request_id for calls in own_calls.values() for c in calls if c.zenlayer_request_id}


# A run's stop reports in its start's thread: one that failed says "Not every instance stopped", one that timed out
# "Stopped watching …; not STOPPED yet". Neither is the start's own outcome.
_STOP_REPORTS = ("Not every instance stopped", "not STOPPED yet")


def is_final(text_: str) -> bool:
    """True for a start's own final reply (all RUNNING, not every one started, stopped watching), not a run's stop."""
    return any(kind in text_ for kind in FINAL_KINDS.values()) and not any(r in text_ for r in _STOP_REPORTS)


def stuck_pending(db: Database) -> list[str]:
    """Confirmations still pending 10 s after their expiry by the database's clock (a timer that never fired)."""
    with db.session(readonly=True) as session:
        late = session.scalars(
            select(Operation.id).where(Operation.state == "pending", Operation.expires_at < db_time(-10))
        ).all()
    return [f"request {request_id}: pending past its expiry" for request_id in late]


CATEGORIES = {
    "double calls": ("accepted StartInstances",),
    "lost outcomes": ("acknowledged but not taken", "but not told", " 0 final replies", "final replies posted for"),
    "wrong final messages": (
        "final reply says",
        "says all RUNNING",
        "did not start, but",
        "final replies in its thread",
    ),
    "stuck requests": ("approved but still", "without an owner", "pending past its expiry", "did not settle"),
    **RUN_CATEGORIES,  # time-boxed runs' (issue 19): double stops, missed stops, stops after an extension, …
}


def tally_violations(violations: list[str]) -> dict[str, int]:
    """Count the violations in the categories issues 19 and 21 name (and the rest as bookkeeping)."""
    counts: Counter[str] = Counter({name: 0 for name in CATEGORIES})
    for line in violations:
        name = next((n for n, marks in CATEGORIES.items() if any(m in line for m in marks)), "other (bookkeeping)")
        counts[name] += 1
    return dict(counts)
