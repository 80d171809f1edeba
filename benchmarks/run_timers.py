"""Time-boxed runs at scale: what a quiet engine step costs with 100 to 10,000 active runs, and how fast a burst
of runs falling due together is stopped and reported, on SQLite and PostgreSQL.

Run: ``python benchmarks/run_timers.py [--sizes 100,1000,5000,10000] [--due-at 100,10000] [--backend both]``.

Everything binds 127.0.0.1 only. In this process: the Zenlayer simulator (instances web-1…web-N, booting and
stopping at once, so the times below are vm-bot's own) and the Slack stand-in; per backend one database (a SQLite
file; a database on a throwaway PostgreSQL from .ci/postgres.sh, or on VM_BOT_TEST_POSTGRES_URL's server; skipped,
and said so, without server binaries).
Runs are made by production code only (benchmarks/run_stand.py): `/vm start web-… --for` of 10 instances each,
opened, confirmed by the real sender, clicked, started and polled to RUNNING by the engine; requests take turns
over --channels channels (Slack paces each channel to about one message a second: the burst below lands one due
start per channel). The sizes grow in one database; at a size in --due-at, --due of the runs just added (at most
all of them; those run for 1 h, the others for a day) fall due at once:

* ``quiet``: the median of five engine steps by hand with nothing due (the engine's timers, expiries, leases and
  claims; its jobs inline, so the stepping thread does all of it): CPU of that thread (time.thread_time), of the
  process (the sender and the stand-ins are idle then), and wall time. Goal at the largest size: < 50 ms of CPU.
* ``burst``: the reminders are given first (the database's clock moved to them; the outbox delivered), and the
  burst's runs get one stop time, the latest of theirs (runs started by one poll get stop times up to ~0.2 s apart:
  one statement per start; --as-started keeps them, and `spread` says over how long they fall due). Then
  `vm-bot run` starts as its own process on 127.0.0.1 (the real engine, workers, sender and courier; the default
  5 s poll interval) instead of the stand's sender, and the clock is moved to 7 s before the due time: the bot
  wakes for it by itself. Measured: StopInstances calls (goal ceil(due/100)), seconds from the due time to the
  last run stopped (the runs' ended_at, on the database's clock) and to the last "Stopped after" thread reply
  received by the Slack stand-in (goal < 5 s for both), every due instance in exactly one call and every start
  told exactly once, and the CPU the bot's process used meanwhile (from /proc; the stand-ins run in this one).

Exit code 1 when a goal is not met.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import served_apps
import shared
from run_stand import PER_REQUEST, Stand, stand, wait_for
from shared import cpu_seconds
from sqlalchemy import func, select, update

from bot.db.clock import db_time
from bot.db.models import Run
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import free_port
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.operations.records import RunState
from bot.zenlayer.client import ZenlayerClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # the clock-moving helper lives with the tests: it is not shipped
from tests.time_travel import travel  # noqa: E402

SIZES = (100, 1000, 5000, 10000)
DUE_AT = (100, 10000)
DUE = 1000
DUE_RUN_SECONDS, LONG_RUN_SECONDS = 3600.0, 86400.0
REMINDER_SECONDS = 900.0  # RUN_REMINDER_SECONDS's default (the stand's engines use it)
HEADROOM_SECONDS = 7.0  # the clock is moved to this long before the due time: more than a poll interval (5 s)
QUIET_STEPS = 5
QUIET_GOAL_SECONDS, REPORT_GOAL_SECONDS = 0.050, 5.0
BURST_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Quiet:
    """A quiet engine step with `active` runs: medians of CPU of the stepping thread, of the process, and wall."""

    active: int
    thread_cpu: float
    process_cpu: float
    wall: float


@dataclass(frozen=True)
class Burst:
    """Runs falling due together: how they were stopped and reported."""

    active: int
    due: int
    spread: float  # seconds from the first to the last of them falling due
    stop_calls: int
    stopped_ids: int  # instance ids sent in those calls
    stopped_once: bool  # each due instance in exactly one call
    stopped_seconds: float
    reported_seconds: float
    slack_calls: int  # every Slack call the bot made meanwhile
    replies: int  # "Stopped after" thread replies
    told_once: bool  # one in each due start's thread
    threads: int  # due starts
    process_cpu: float


def quiet(built: Stand, active: int) -> Quiet:
    """Step the engine by hand with nothing due, QUIET_STEPS times (after one to warm up); return the medians."""
    built.hand.step()
    samples = []
    for _ in range(QUIET_STEPS):
        wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
        built.hand.step()
        samples.append((time.thread_time() - thread, time.process_time() - process, time.perf_counter() - wall))
    return Quiet(active, *(statistics.median(s[i] for s in samples) for i in range(3)))


def due_times(built: Stand, request_ids: Sequence[int]) -> tuple[float, float]:
    """Seconds from now to the earliest and to the latest stop of these starts' runs, on the database's clock."""
    with built.db.session(readonly=True) as session:
        first, last, now = session.execute(
            select(func.min(Run.stop_at), func.max(Run.stop_at), db_time()).where(Run.request_id.in_(list(request_ids)))
        ).one()
    return float((first - now).total_seconds()), float((last - now).total_seconds())


def stopped_after(built: Stand, request_ids: Sequence[int]) -> float:
    """Seconds from the first stop of these starts' runs falling due to the last run stopped (the database's clock)."""
    with built.db.session(readonly=True) as session:
        due, last = session.execute(
            select(func.min(Run.stop_at), func.max(Run.ended_at)).where(Run.request_id.in_(list(request_ids)))
        ).one()
    return float((last - due).total_seconds())


def replies(built: Stand, first_call: int, threads: set[str]) -> list[tuple[str, float]]:
    """Each "Stopped after" reply in these threads: its thread and when it reached the Slack stand-in (monotonic)."""
    return [
        (str(c.args["thread_ts"]), c.at)
        for c in built.fake.calls[first_call:]
        if c.method == "chat.postMessage"
        and c.args.get("thread_ts") in threads
        and "Stopped after" in str(c.args.get("text", ""))
    ]


def align(built: Stand, request_ids: Sequence[int]) -> None:
    """Give these starts' runs one stop time, the latest of theirs: they fall due in the same tick."""
    ids = list(request_ids)
    latest = select(func.max(Run.stop_at)).where(Run.request_id.in_(ids)).scalar_subquery()
    with built.db.session() as session:
        session.execute(update(Run).where(Run.request_id.in_(ids)).values(stop_at=latest))


@contextmanager
def bot_running(built: Stand, env: dict[str, str], tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `vm-bot run` on 127.0.0.1 over the stand's database, instead of the stand's own sender."""
    built.stop_sending()
    port = free_port()
    try:
        argv = [sys.executable, "-m", "bot", "run"]
        with served_apps.served("vm-bot run", argv, port, tmp, served_apps.bot_env(env, port)) as served:
            yield served.process
    finally:
        built.start_sending()


def burst(built: Stand, due_ids: Sequence[int], active: int, plan: Plan, env: dict[str, str], tmp: Path) -> Burst:
    """Let the reminders of these starts be given, then their runs fall due (together, or as started) while
    `vm-bot run` runs; measure how they are stopped and reported, and what CPU that process used meanwhile."""
    travel(built.db, due_times(built, due_ids)[1] - REMINDER_SECONDS + 1)
    built.hand.step()  # the reminders: owed in one step, delivered by the sender
    built.drain()
    if not plan.as_started:
        align(built, due_ids)
    threads = {built.threads[request_id] for request_id in due_ids}
    due = built.count_runs(due_ids, RunState.RUNNING)
    built.sim.clear_calls()
    first_call = len(built.fake.calls)
    with bot_running(built, env, tmp) as process:
        travel(built.db, due_times(built, due_ids)[0] - HEADROOM_SECONDS)
        first, last = due_times(built, due_ids)
        due_at = time.monotonic() + first
        time.sleep(max(0.0, due_at - time.monotonic()))  # the bot wakes for the due time by itself
        cpu = cpu_seconds(process.pid)

        def done() -> bool:
            stopped = built.count_runs(due_ids, RunState.STOPPED) == due
            return stopped and len(replies(built, first_call, threads)) >= len(threads)

        wait_for("the burst stopped and reported", done, timeout=BURST_TIMEOUT_SECONDS, every=0.1)
        cpu = cpu_seconds(process.pid) - cpu
    stopped = [i for c in built.sim.calls if c.action == "StopInstances" for i in c.instance_ids]
    told = replies(built, first_call, threads)
    return Burst(
        active=active,
        due=due,
        spread=last - first,
        stop_calls=sum(1 for c in built.sim.calls if c.action == "StopInstances"),
        stopped_ids=len(stopped),
        stopped_once=len(stopped) == len(set(stopped)) == due,
        stopped_seconds=stopped_after(built, due_ids),
        reported_seconds=max(at for _, at in told) - due_at,
        slack_calls=len(built.fake.calls) - first_call,
        replies=len(told),
        told_once=len(told) == len({thread for thread, _ in told}) == len(threads),
        threads=len(threads),
        process_cpu=cpu,
    )


@dataclass(frozen=True)
class Plan:
    """What to measure: active runs growing through `sizes`, a burst of `due` at each size in `due_at`."""

    sizes: Sequence[int]
    due_at: Sequence[int]
    due: int
    channels: int
    as_started: bool = False


FULL = Plan(SIZES, DUE_AT, DUE, channels=100)
QUICK = Plan((1000,), (1000,), DUE, channels=100)  # run_all.py --quick: 1,000 runs falling due, no growth


def run_backend(database_url: str, plan: Plan, tmp: Path) -> tuple[list[Quiet], list[Burst], float]:
    """Grow the runs through `sizes` in one database; measure quiet steps at each, bursts where asked."""
    key_id, key_secret = "AKIDBENCH", secrets.token_urlsafe(24)
    secret = secrets.token_urlsafe(16)
    quiets: list[Quiet] = []
    bursts: list[Burst] = []
    started = time.monotonic()
    with (
        ZenlayerSimulator(boot_seconds=0, stop_seconds=0, access_key_id=key_id, access_key_secret=key_secret) as sim,
        FakeSlackWebApi() as fake,
        ZenlayerClient(sim.url, access_key_id=key_id, access_key_secret=key_secret, timeout=30) as client,
        stand(database_url, sim, client, fake, channels=plan.channels) as built,
    ):
        env = served_apps.stand_in_env(secret, fake.url, sim.url, key_id, key_secret, database_url)
        active = 0
        for size in plan.sizes:
            falls_due = min(size - active, plan.due) if size in plan.due_at else 0  # of the newest runs
            built.add_runs((size - active - falls_due) // PER_REQUEST, LONG_RUN_SECONDS)
            due_ids = built.add_runs(falls_due // PER_REQUEST, DUE_RUN_SECONDS)
            active = built.count_runs(None, RunState.RUNNING)
            built.drain()
            quiets.append(quiet(built, active))
            print(f"  {active:>6} active runs: quiet step {quiets[-1].thread_cpu * 1000:.1f} ms CPU", flush=True)
            if due_ids:
                bursts.append(burst(built, due_ids, active, plan, {**env, "REPLICA_ID": "bench-run"}, tmp))
                print(f"  {active:>6} active runs: burst of {bursts[-1].due} done", flush=True)
                active = built.count_runs(None, RunState.RUNNING)
    return quiets, bursts, time.monotonic() - started


def quiet_table(name: str, rows: Sequence[Quiet]) -> tuple[list[str], bool]:
    """The quiet-step rows and whether the goal holds at the largest size."""
    lines = []
    ok = True
    for row in rows:
        verdict = ""
        if row is rows[-1]:
            met = row.thread_cpu < QUIET_GOAL_SECONDS
            ok = met
            verdict = "met" if met else "NOT MET"
        lines.append(
            f"{name:<10} quiet  {row.active:>6}  {row.thread_cpu * 1000:8.1f}  {row.process_cpu * 1000:8.1f}  "
            f"{row.wall * 1000:8.1f}  goal < {QUIET_GOAL_SECONDS * 1000:.0f} ms CPU at {rows[-1].active}  {verdict}"
        )
    if len(rows) > 1 and rows[0].thread_cpu > 0:
        lines.append(
            f"{name:<10} quiet growth {rows[0].active} -> {rows[-1].active} runs: "
            f"{rows[-1].thread_cpu / rows[0].thread_cpu:.1f}x thread CPU, {rows[-1].wall / rows[0].wall:.1f}x wall"
        )
    return lines, ok


def burst_table(name: str, rows: Sequence[Burst]) -> tuple[list[str], bool]:
    """The burst rows and whether every goal holds in each."""
    lines = []
    ok = True
    for row in rows:
        calls_goal = math.ceil(row.due / 100)
        met = (
            row.stop_calls <= calls_goal
            and row.stopped_once
            and row.told_once
            and row.stopped_seconds < REPORT_GOAL_SECONDS
            and row.reported_seconds < REPORT_GOAL_SECONDS
        )
        ok = ok and met
        lines.append(
            f"{name:<10} burst  {row.active:>6}  {row.due:>5}  {row.spread * 1000:6.0f}  "
            f"{row.stop_calls:>4}/{calls_goal:<4} {row.stopped_ids:>7}  "
            f"{row.stopped_seconds:6.2f}  {row.reported_seconds:6.2f}  {row.replies:>4}/{row.threads:<4} "
            f"{row.slack_calls:>5} {row.process_cpu:6.2f}  {'met' if met else 'NOT MET'}"
        )
    return lines, ok


def report(name: str, quiets: Sequence[Quiet], bursts: Sequence[Burst], seconds: float) -> tuple[list[str], bool]:
    """Both tables for one backend."""
    q_lines, q_ok = quiet_table(name, quiets)
    b_lines, b_ok = burst_table(name, bursts)
    return [
        f"{'backend':<10} step   {'active':>6}  {'thr ms':>8}  {'proc ms':>8}  {'wall ms':>8}",
        *q_lines,
        f"{'backend':<10} burst  {'active':>6}  {'due':>5}  {'spread':>6}  {'Stop/goal':<9} {'stopped':>7}  "
        f"{'stop s':>6}  {'told s':>6}  {'told':>9} {'slack':>5} {'cpu s':>6}  goal (< {REPORT_GOAL_SECONDS:g} s)",
        *b_lines,
        f"{name:<10} took {seconds:.0f} s (building the runs included)",
    ], q_ok and b_ok


def main(argv: Sequence[str] | None = None) -> int:
    """Measure on each backend and print the tables; return 1 when a goal is not met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="active runs, growing (100,...,10000)")
    parser.add_argument("--due-at", default=",".join(map(str, DUE_AT)), help="sizes with a burst (100,10000)")
    parser.add_argument("--due", type=int, default=DUE, help="runs falling due in a burst (1000)")
    parser.add_argument("--channels", type=int, default=100, help="channels the requests take turns over (100)")
    parser.add_argument("--as-started", action="store_true", help="bursts fall due as their clocks were started")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args(argv)
    plan = Plan(
        [int(s) for s in args.sizes.split(",") if s.strip()],
        [int(s) for s in args.due_at.split(",") if s.strip()],
        args.due,
        args.channels,
        args.as_started,
    )
    if not plan.sizes or plan.sizes != sorted(plan.sizes) or min(plan.sizes) < 10 or max(plan.sizes) > 20000:
        parser.error("--sizes must grow, each 10..20000")
    if any(s % PER_REQUEST for s in [*plan.sizes, plan.due]) or not set(plan.due_at) <= set(plan.sizes):
        parser.error("--sizes and --due must be multiples of 10, --due-at among --sizes")
    if args.channels < 1:
        parser.error("--channels must be at least 1")
    logging.basicConfig(level=logging.ERROR)
    lines, ok = measure_all(args.backend, plan, os.environ.get("VM_BOT_TEST_POSTGRES_URL", "").strip() or None)
    print("\n".join(lines))
    return 0 if ok else 1


def measure_all(backend: str, plan: Plan, postgres_url: str | None = None) -> tuple[list[str], bool]:
    """Run on SQLite and/or PostgreSQL (a fresh database on postgres_url's server, else on a throwaway one)."""
    lines = [
        f"run timers: requests of {PER_REQUEST} over {plan.channels} channels, made by production code; bursts fall "
        + ("due as their clocks were started" if plan.as_started else "due together (one stop time)")
    ]
    ok = True
    with tempfile.TemporaryDirectory(prefix="vm-bot-bench-") as tmp, ExitStack() as stack:
        urls: list[tuple[str, str | None]] = []
        if backend in ("sqlite", "both"):
            urls.append(("SQLite", f"sqlite:///{Path(tmp) / 'runs.db'}"))
        if backend in ("postgres", "both"):
            server = postgres_url or stack.enter_context(shared.throwaway_postgres())
            urls.append(("PostgreSQL", stack.enter_context(shared.fresh_database(server)) if server else None))
        for name, url in urls:
            if url is None:
                lines.append(f"{name}: no server binaries found (.ci/postgres.sh); skipped")
                continue
            print(f"{name}: growing to {', '.join(map(str, plan.sizes))} active runs", flush=True)
            backend_lines, met = report(name, *run_backend(url, plan, Path(tmp)))
            lines += backend_lines
            ok = ok and met
    return lines, ok


if __name__ == "__main__":
    raise SystemExit(main())
