"""Chaos check: several `vm-bot run` replicas on one database, random commands and clicks, SIGKILLs; then invariants.

Run: ``python benchmarks/chaos.py [--mode short|long] [--backend postgres|sqlite|both] [--seed N]`` (both: the two
scenarios side by side, as two processes).

On PostgreSQL three replicas share one throwaway database (from $VM_BOT_TEST_POSTGRES_URL when set, else a cluster
started with .ci/postgres.sh); on SQLite two processes share one file. Zenlayer is `vm-bot simulator` (a process);
Slack is the loopback stand-in in this process, which records every message. A bounded random mix of signed
commands and clicks goes to random replicas: overlapping requests from a small pool of instances, identical
commands at the same instant, two clicks on one confirmation at once, Cancel racing Start. Meanwhile a random
replica is SIGKILLed now and then: half the time restarted at once (same REPLICA_ID: it takes over at once), half
the time only after another replica has taken its work over (which waits out the lease). Afterwards every replica
runs until all work is done, and these are counted (a violation makes the exit code 1):

* accepted StartInstances per instance (at most 1: the traffic's instances are never stopped again, so a second
  accepted start would mean two requests, or one request twice, started it);
* acknowledged clicks that left no trace (the request still pending and no refusal recorded);
* approved requests not final, final outcomes not posted, final replies posted more than once or not in their
  own thread (a second one is counted apart, not as a violation, when a replica was killed between the two posts:
  posting and recording it are two steps, and delivery is at least once);
* StartInstances calls without a completed zenlayer_calls row, and open rows;
* requests left without an owner (active with a lapsed lease at the end);
* the longest takeover after a kill, by a restarted replica and by another replica.

Beside the kills it plays the faults of `chaos_faults.py` (issue 21's "chaos, extended"): replicas with clocks
±30 s off (PostgreSQL), a PostgreSQL restart, Slack away, Zenlayer slow and flaky; and it sums up the violations as
double calls, lost outcomes, wrong final messages and stuck requests, which must all be 0.

Time-boxed runs (`chaos_runs.py`, issue 19) play in the same scenario, under the same kills and faults: short
`/vm start run-NNN --for 10s..` runs (RUN_REMINDER_SECONDS and RUN_EXTEND_SECONDS made small), each played by its
requester: Extend or Stop now on the reminder, some right at the deadline racing the auto-stop, and replicas killed
right after those clicks and at the moments stops fall due. `chaos_run_checks.py` counts double stops (a second
StopInstances or a second stop operation for one run), missed stops (past the deadline by more than a lease, a
poll and 30 s, and not stopped), stops after an extension (an auto-stop accepted before the deadline an Extend
set), early auto-stops and stuck runs; all must be 0.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from chaos_checks import check, start_counts, wait_settled
from chaos_faults import (
    FAULTS,
    FaultSchedule,
    clock_offsets,
    skew_note,
    skewed_env,
    stuck_pending,
    tally_violations,
    wrong_finals,
)
from chaos_processes import SIGNING_SECRET, Replica, Simulator, postgres_url, replica_env, wait_serving
from chaos_run_checks import RunWorld, read_runs, run_grace, run_violations, stop_calls
from chaos_runs import RUN_MODES, RunPlayers, run_counts, run_settings
from chaos_traffic import USERS, Killer, Slack, Tally, play
from sqlalchemy import select

from bot.db.clock import db_time
from bot.db.migrate import upgrade
from bot.db.models import Run
from bot.db.session import Database
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import free_port
from bot.grants import rules as grants

MODES = {
    # seconds of random traffic, instances, kills, poll interval, seconds BOOTING and STOPPING at the simulator
    "short": {"seconds": 28, "instances": 36, "kills": 4, "poll": 0.5, "boot": 4.0, "stop": 2.0},
    "long": {"seconds": 300, "instances": 300, "kills": 24, "poll": 0.5, "boot": 4.0, "stop": 2.0},
}
LEASE_SECONDS = 15.0  # the replicas' LEASE_SECONDS (its default), of which the runs' grace is made


@dataclass
class Scenario:
    """One backend's database, stand-ins, replicas and players."""

    backend: str
    mode: str
    db: Database
    fake: FakeSlackWebApi
    simulator: Simulator
    replicas: list[Replica]
    slack: Slack
    killer: Killer
    players: RunPlayers
    tally: Tally

    @property
    def grace(self) -> float:
        return run_grace(LEASE_SECONDS, MODES[self.mode]["poll"])


def run_scenario(
    backend: str,
    url: str,
    mode_name: str,
    seed: int,
    replicas_count: int,
    cluster_dir: str | None = None,
) -> list[str]:
    """Run one chaos scenario; print its counts and return the violations."""
    mode, run_mode = MODES[mode_name], RUN_MODES[mode_name]
    offsets = clock_offsets(backend, replicas_count, FAULTS[mode_name])
    print(f"chaos: {backend}: {skew_note(backend, offsets)}", flush=True)
    instances = [f"inst-{n:03d}" for n in range(mode["instances"])]
    upgrade(url)
    db = Database(url)
    with db.session() as session:
        for user in USERS:
            grants.add_grants(session, user, ["*"], granted_by="chaos")
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="vm-bot-chaos-") as tmp, ExitStack() as stack:
        log_dir = Path(tmp)
        fake = stack.enter_context(FakeSlackWebApi())
        runs_pool = [f"run-{k:03d}" for k in range(run_mode.runs)]
        simulator = Simulator(instances + runs_pool, mode["boot"], mode["stop"], log_dir)
        stack.callback(simulator.close)
        settings = {"POLL_INTERVAL_SECONDS": str(mode["poll"]), **run_settings(run_mode)}
        replicas = []
        for n in range(replicas_count):
            port = free_port()
            env = replica_env(
                n, slack_url=fake.url, zenlayer_url=simulator.url, database_url=url, settings=settings
            ) | {"PORT": str(port), **skewed_env(offsets[n])}  # kept across restarts: the host's clock
            replicas.append(Replica(f"replica-{n + 1}", port, env, log_dir))
        for replica in replicas:
            replica.start()
            stack.callback(replica.stop)
        for replica in replicas:
            wait_serving(replica)
        slack = Slack(replicas, fake, SIGNING_SECRET, tally)
        stack.callback(slack.close)
        killer = Killer(replicas, db, tally, seed + 7)  # its own random, so traffic and kills are each reproducible
        players = RunPlayers(slack, killer, db, run_mode, seed + 11)
        scenario = Scenario(backend, mode_name, db, fake, simulator, replicas, slack, killer, players, tally)
        violations = _play_and_check(scenario, instances, random.Random(seed), cluster_dir)
    db.close()
    return violations


def _play_and_check(scenario: Scenario, instances: list[str], rng: random.Random, cluster_dir: str | None) -> list[str]:
    """Play the traffic, the runs, the kills and the faults; let everything settle; return the violations."""
    mode, faults = MODES[scenario.mode], FAULTS[scenario.mode]
    chaos = threading.Thread(target=scenario.killer.run, args=(mode["seconds"], mode["kills"]), name="killer")
    chaos.start()
    schedule = FaultSchedule(
        faults=faults,
        seconds=mode["seconds"],
        fake=scenario.fake,
        simulator_url=scenario.simulator.url,
        cluster_dir=cluster_dir if scenario.backend == "postgres" else None,
        stop=threading.Event(),
    )
    schedule.start()
    scenario.players.start(mode["seconds"])
    play(scenario.slack, scenario.simulator, instances, mode["seconds"], rng)
    schedule.join(timeout=faults.slack_outage_seconds + 60)
    schedule.finish()
    scenario.killer.stop_event.set()
    chaos.join()
    settle_started = time.monotonic()
    scenario.players.join(timeout=300)  # the runs' last clicks and kills fall after the traffic
    for replica in scenario.replicas:
        replica.start()  # every one that is down
    for replica in scenario.replicas:
        wait_serving(replica)
    late = wait_settled(scenario.db, also=lambda: _runs_over(scenario.db, scenario.grace))
    settle_seconds = time.monotonic() - settle_started
    violations, counts = _judge(scenario)
    _print_counts(scenario, counts, settle_seconds, late + violations)
    print(json.dumps({"backend": scenario.backend, "faults": [w for _, w in schedule.log.events]}, indent=2))
    return late + violations


def _runs_over(db: Database, grace: float) -> bool:
    """True when no run still runs that may yet be stopped in time (one past its deadline and the grace is a
    missed stop to count, not one to wait for)."""
    with db.session(readonly=True) as session:
        live = select(Run.id).where(Run.state == "running", Run.stop_at > db_time(-grace)).limit(1)
        return session.scalar(live) is None


def _judge(scenario: Scenario) -> tuple[list[str], dict[str, object]]:
    """Every broken invariant, and the counts, of a settled scenario."""
    calls = scenario.simulator.calls()
    statuses = scenario.simulator.statuses()
    violations = check(scenario.db, scenario.fake, calls, scenario.tally)
    violations += wrong_finals(scenario.db, scenario.fake, calls, statuses) + stuck_pending(scenario.db)
    runs, stops, extended, active, now = read_runs(scenario.db)
    world = RunWorld(
        runs=runs,
        stops=stops,
        calls=stop_calls(calls),
        statuses=statuses,
        now=now,
        extend_seconds=RUN_MODES[scenario.mode].extend_seconds,
        grace=scenario.grace,
        extended=extended,
        told_extended=scenario.players.told_extended(),
        active=active,
    )
    violations += run_violations(world)
    counts = {**start_counts(scenario.db, scenario.tally, calls), **run_counts(scenario.db, world, scenario.players)}
    return violations, counts


def _print_counts(scenario: Scenario, counts: dict[str, object], settle_seconds: float, violations: list[str]) -> None:
    """Print the counts of one scenario."""
    report = {
        "backend": scenario.backend,
        "replicas": len(scenario.replicas),
        **counts,
        "seconds to settle after the traffic": round(settle_seconds, 2),
        **tally_violations(violations),
        "violations": len(violations),
    }
    print(json.dumps(report, indent=2))
    for violation in violations:
        print(f"VIOLATION: {violation}")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios; exit 1 on any violation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="short")
    parser.add_argument("--backend", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    if args.backend == "both":
        return _side_by_side(args.mode, seed)
    print(f"chaos: mode {args.mode}, seed {seed}", flush=True)
    violations: list[str] = []
    if args.backend == "postgres":
        with postgres_url() as (url, cluster_dir):
            if url is None:
                print("chaos: no PostgreSQL server on this machine; skipping the PostgreSQL scenario")
            else:
                violations += run_scenario("postgres", url, args.mode, seed, 3, cluster_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="vm-bot-chaos-db-") as tmp:
            violations += run_scenario("sqlite", f"sqlite:///{tmp}/vm-bot.db", args.mode, seed + 1, 2)
    print(f"chaos: {'FAILED, ' + str(len(violations)) + ' violation(s)' if violations else 'all invariants held'}")
    return 1 if violations else 0


def _side_by_side(mode: str, seed: int) -> int:
    """Run the PostgreSQL and the SQLite scenario at once, as two processes (they share nothing, and mostly wait:
    one after the other took CI over two minutes); print each one's report whole; exit 1 if either failed."""
    started = time.monotonic()
    children = {
        backend: subprocess.Popen(  # noqa: S603 — our own interpreter and fixed arguments
            [sys.executable, __file__, "--mode", mode, "--backend", backend, "--seed", str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for backend in ("postgres", "sqlite")
    }
    failed = []
    for backend, child in children.items():
        output, _ = child.communicate()
        print(output, end="", flush=True)
        if child.returncode != 0:
            failed.append(backend)
    took = time.monotonic() - started
    print(f"chaos: both backends side by side in {took:.0f} s; {'FAILED: ' + ', '.join(failed) if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
