"""Where a burst of runs falling due spends its time: the same burst as run_timers.py, stepped by hand phase by
phase, with CPU, SQL statements and commits counted for each (the numbers behind run_timers.py's reading).

Run: ``python benchmarks/burst_phases.py [--active 1000] [--due 1000] [--backend sqlite|postgres|both]
[--profile N]``.

Runs are built by production code (benchmarks/run_stand.py), their reminders given and their stop times aligned
as run_timers.py does; then, in this process, with the stand's sender stopped:

* ``stop_due``: `Timers.stop_due()` (the stop operations of one firing made and approved);
* ``engine``: engine steps by hand (jobs inline: the StopInstances calls, then the poll that sees STOPPED) until
  every due run is stopped;
* ``sender``: the outbox delivered by the production Sender + SlackCourier, in this thread: what a send thread
  runs (claim, then deliver and settle each row), one row after the other.

`cpu s` is this thread's CPU (vm-bot's own work: the simulator and the Slack stand-in answer from threads of their
own), `proc s` the whole process's; statements and commits are counted with SQLAlchemy events on every engine of
the database. `--profile N` prints the N functions with the most cumulative time in each phase (cProfile);
`--statements N` the N statements run most.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import run_timers
import shared
from run_stand import PER_REQUEST, Stand, stand
from slack_sdk import WebClient
from sqlalchemy import Engine, event

from bot.delivery import outbox
from bot.delivery.sender import Sender
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.operations.records import RunState
from bot.slack.courier import SlackCourier
from bot.zenlayer.client import ZenlayerClient
from tests.time_travel import travel


@dataclass
class Counts:
    """Statements and commits seen on a database's engines, and how often each statement's text was run."""

    statements: int = 0
    commits: int = 0
    texts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Phase:
    """One phase of the burst: its CPU, wall time, statements, commits, Slack and Zenlayer calls."""

    name: str
    cpu: float
    process_cpu: float
    wall: float
    statements: int
    commits: int
    slack_calls: int
    zenlayer_calls: int
    profile: str = ""
    texts: dict[str, int] = field(default_factory=dict)


def engines_of(built: Stand) -> list[Engine]:
    """Every SQLAlchemy engine of the stand's database."""
    found = [built.db.engine, built.db.read_engine, built.db._statement_engine]
    unique: list[Engine] = []
    for engine in found:
        if all(engine is not e for e in unique):
            unique.append(engine)
    return unique


@contextmanager
def counting(built: Stand) -> Iterator[Counts]:
    """Count statements and commits on the stand's database while the block runs."""
    counts = Counts()
    lock = threading.Lock()

    def statement(_connection: object, _cursor: object, text: str, *_: object) -> None:
        with lock:
            counts.statements += 1
            shape = " ".join(text.split())[:110]
            counts.texts[shape] = counts.texts.get(shape, 0) + 1

    def commit(*_: object) -> None:
        with lock:
            counts.commits += 1

    engines = engines_of(built)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", statement)
        event.listen(engine, "commit", commit)
    try:
        yield counts
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", statement)
            event.remove(engine, "commit", commit)


def phase(built: Stand, name: str, work: Callable[[], None], profile: int) -> Phase:
    """Run one phase and measure it."""
    slack, zenlayer = len(built.fake.calls), len(built.sim.calls)
    profiler = cProfile.Profile() if profile else None
    with counting(built) as counts:
        wall, cpu, process = time.perf_counter(), time.thread_time(), time.process_time()
        if profiler is not None:
            profiler.enable()
        work()
        if profiler is not None:
            profiler.disable()
        cpu, process, wall = time.thread_time() - cpu, time.process_time() - process, time.perf_counter() - wall
    text = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(profile)
        text = out.getvalue()
    return Phase(
        name,
        cpu,
        process,
        wall,
        counts.statements,
        counts.commits,
        len(built.fake.calls) - slack,
        len(built.sim.calls) - zenlayer,
        text,
        counts.texts,
    )


def measure(database_url: str, active: int, due: int, channels: int, profile: int) -> list[Phase]:
    """Build `active` runs (the newest `due` falling due together), then stop and report them phase by phase."""
    key_id, key_secret = "AKIDBENCH", secrets.token_urlsafe(24)
    with (
        ZenlayerSimulator(boot_seconds=0, stop_seconds=0, access_key_id=key_id, access_key_secret=key_secret) as sim,
        FakeSlackWebApi() as fake,
        ZenlayerClient(sim.url, access_key_id=key_id, access_key_secret=key_secret, timeout=30) as client,
        stand(database_url, sim, client, fake, channels=channels) as built,
    ):
        built.add_runs((active - due) // PER_REQUEST, run_timers.LONG_RUN_SECONDS)
        due_ids = built.add_runs(due // PER_REQUEST, run_timers.DUE_RUN_SECONDS)
        built.drain()
        travel(built.db, run_timers.due_times(built, due_ids)[1] - run_timers.REMINDER_SECONDS + 1)
        built.hand.step()
        built.drain()
        run_timers.align(built, due_ids)
        travel(built.db, run_timers.due_times(built, due_ids)[1] + 0.01)
        built.stop_sending()
        engine = built.hand
        count = built.count_runs(due_ids, RunState.STOPPING) + built.count_runs(due_ids, RunState.RUNNING)

        def fire() -> None:
            engine.timers.stop_due()

        phases = [phase(built, "stop_due", fire, profile)]

        def steps() -> None:
            for _ in range(10):
                engine.step()
                if built.count_runs(due_ids, RunState.STOPPED) == count:
                    return
            raise TimeoutError("the due runs were not all stopped in 10 steps")

        phases.append(phase(built, "engine", steps, profile))

        phases.append(phase(built, "sender", send_inline(built), profile))
        return phases


def send_inline(built: Stand) -> Callable[[], None]:
    """Deliver the outbox in this thread, one claimed row at a time, as the sender's threads would."""
    web = WebClient(token="xoxb-benchmark", base_url=built.fake.url, timeout=30)  # noqa: S106 — the loopback fake
    sender = Sender(
        built.db,
        SlackCourier(built.db, web, owner=built.owner, lease=built.lease),
        owner=built.owner,
        lease=built.lease,
    )

    def send() -> None:
        while built.pending():
            with built.db.session(readonly=True) as session:
                found = outbox.ready(session)
            if not found.channels:
                time.sleep(0.01)
            with built.db.session() as session:
                claimed = outbox.claim(session, found.channels, owner=built.owner, lease=built.lease)
            for row in claimed:
                sender._send(row)

    return send


def table(name: str, phases: Sequence[Phase], due: int) -> list[str]:
    """One backend's phases."""
    lines = [
        f"{'backend':<10} {'phase':<9} {'cpu s':>6} {'proc s':>6} {'wall s':>6} {'stmts':>6} {'commits':>7} "
        f"{'slack':>5} {'zl':>3}"
    ]
    for p in [*phases, total(phases)]:
        lines.append(
            f"{name:<10} {p.name:<9} {p.cpu:6.2f} {p.process_cpu:6.2f} {p.wall:6.2f} {p.statements:>6} {p.commits:>7} "
            f"{p.slack_calls:>5} {p.zenlayer_calls:>3}"
        )
    starts = due // PER_REQUEST
    whole = total(phases)
    lines.append(
        f"{name:<10} per stopped start: {whole.statements / starts:.1f} statements, {whole.commits / starts:.1f} "
        f"commits, {whole.slack_calls / starts:.1f} Slack calls, {whole.cpu / starts * 1000:.1f} ms CPU"
    )
    return lines


def total(phases: Sequence[Phase]) -> Phase:
    """The phases added up."""
    return Phase(
        "total",
        sum(p.cpu for p in phases),
        sum(p.process_cpu for p in phases),
        sum(p.wall for p in phases),
        sum(p.statements for p in phases),
        sum(p.commits for p in phases),
        sum(p.slack_calls for p in phases),
        sum(p.zenlayer_calls for p in phases),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Measure on each backend and print the phases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--active", type=int, default=1000, help="active runs (1000)")
    parser.add_argument("--due", type=int, default=1000, help="of which fall due together (1000)")
    parser.add_argument("--channels", type=int, default=100, help="channels the requests take turns over (100)")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest functions of each phase")
    parser.add_argument("--statements", type=int, default=0, help="print the N statements run most in each phase")
    args = parser.parse_args(argv)
    if args.due > args.active or args.due % PER_REQUEST or args.active % PER_REQUEST:
        parser.error("--due and --active must be multiples of 10, --due at most --active")
    logging.basicConfig(level=logging.ERROR)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vm-bot-phases-") as tmp, ExitStack() as stack:
        urls: list[tuple[str, str | None]] = []
        if args.backend in ("sqlite", "both"):
            urls.append(("SQLite", f"sqlite:///{Path(tmp) / 'runs.db'}"))
        if args.backend in ("postgres", "both"):
            server = os.environ.get("VM_BOT_TEST_POSTGRES_URL", "").strip() or stack.enter_context(
                shared.throwaway_postgres()
            )
            urls.append(("PostgreSQL", stack.enter_context(shared.fresh_database(server)) if server else None))
        for name, url in urls:
            if url is None:
                lines.append(f"{name}: no server binaries found (.ci/postgres.sh); skipped")
                continue
            phases = measure(url, args.active, args.due, args.channels, args.profile)
            lines += table(name, phases, args.due)
            for p in phases:
                if p.profile:
                    print(f"--- {name} {p.name} ---\n{p.profile}")
                if args.statements:
                    print(f"--- {name} {p.name}: the statements run most ---")
                    for text, count in sorted(p.texts.items(), key=lambda t: -t[1])[: args.statements]:
                        print(f"{count:>6}  {text}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
