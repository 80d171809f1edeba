"""Every performance goal in one run: idle CPU, acks against the floor of the stack on SQLite and PostgreSQL,
time to RUNNING, how the watcher's tick grows from 100 to 5,000 instances, and time-boxed runs' timers (a quiet
engine step with 100 to 10,000 active runs, 1,000 runs falling due together).

Run from the repository root: ``python benchmarks/run_all.py [--quick]`` (about 12 minutes; --quick: two rounds
instead of three, run timers with 1,000 runs: about 5 minutes). PostgreSQL comes from ``.ci/postgres.sh`` (a
throwaway cluster, stopped at the end); without server binaries that part is skipped and said so. Exit code 0 when
every goal printed is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import run_timers
import served_apps
import watcher_calls
from ack_floor import compare_with_floor, floor_table
from shared import cpu_seconds, throwaway_postgres
from slack_sdk import WebClient

from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import free_port, stop_process
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.zenlayer.client import ZenlayerClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # the Socket Mode stand-in lives with the tests: it is not shipped
from tests.fake_socket_mode import FakeSocketMode  # noqa: E402

IDLE_SECONDS = 3.0
IDLE_GOAL = 0.01  # of a core


def idle_share(pid: int, seconds: float = IDLE_SECONDS) -> float:
    """Return the share of one core a process uses over `seconds` while nothing is asked of it."""
    before = cpu_seconds(pid)
    time.sleep(seconds)  # the measurement window itself
    return (cpu_seconds(pid) - before) / seconds


def idle_cpu(tmp: Path) -> tuple[list[str], bool]:
    """Measure idle CPU of `vm-bot run` in HTTP and in Socket Mode, and of the floor app, side by side."""
    key_id, key_secret = "AKIDBENCH", secrets.token_urlsafe(24)
    secret = secrets.token_urlsafe(16)
    database_url = f"sqlite:///{tmp / 'idle.db'}"
    lines, ok = [], True
    with (
        ZenlayerSimulator(access_key_id=key_id, access_key_secret=key_secret) as sim,
        FakeSlackWebApi() as fake,
        FakeSocketMode() as socket_mode,
        ExitStack() as stack,
    ):
        fake.socket_mode_url = socket_mode.url
        env = {
            **served_apps.stand_in_env(secret, fake.url, sim.url, key_id, key_secret, database_url),
            "POLL_INTERVAL_SECONDS": "5",
        }
        port = free_port()
        http = stack.enter_context(
            served_apps.served(
                "idle-http", [sys.executable, "-m", "bot", "run"], port, tmp, served_apps.bot_env(env, port)
            )
        )
        port = free_port()
        floor_argv = [sys.executable, str(served_apps.BENCH_DIR / "floor_app.py"), "--port", str(port)]
        floor_argv += ["--signing-secret", secret, "--slack-api-url", fake.url]
        floor = stack.enter_context(served_apps.served("idle-floor", floor_argv, port, tmp))
        socket_env = {
            **served_apps.bot_env(env, 0),
            "SLACK_APP_TOKEN": "xapp-1-A0001-1-bench",
            "SLACK_SIGNING_SECRET": "",
        }
        with (tmp / "idle-socket.log").open("w") as out:
            socket_bot = subprocess.Popen(
                [sys.executable, "-m", "bot", "run"], env=socket_env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT
            )
        stack.callback(stop_process, socket_bot)
        socket_mode.wait_connected(timeout=30)
        time.sleep(1.0)  # let start-up work (migrations, the first watcher tick) finish before measuring
        for name, pid in (
            ("vm-bot run, HTTP", http.process.pid),
            ("vm-bot run, Socket Mode", socket_bot.pid),
            ("floor app (same waitress)", floor.process.pid),
        ):
            share = idle_share(pid)
            met = share < IDLE_GOAL
            ok = ok and (met or name.startswith("floor"))
            verdict = "" if name.startswith("floor") else ("met" if met else "NOT MET")
            lines.append(
                f"idle CPU  {name:<26} {share * 100:6.2f} % of a core over {IDLE_SECONDS:g} s  "
                f"goal < {IDLE_GOAL * 100:g} %  {verdict}"
            )
    return lines, ok


def watcher_growth(tmp: Path) -> tuple[list[str], bool]:
    """Tick 100 to 5,000 watched instances and return the growth table."""
    key_id, key_secret = "AKIDBENCH", secrets.token_urlsafe(24)
    with (
        ZenlayerSimulator(boot_seconds=3600, access_key_id=key_id, access_key_secret=key_secret) as sim,
        FakeSlackWebApi() as fake,
        ZenlayerClient(sim.url, access_key_id=key_id, access_key_secret=key_secret, timeout=30) as client,
    ):
        web = WebClient(token="xoxb-benchmark", base_url=fake.url, timeout=30)  # noqa: S106 — the loopback fake
        return watcher_calls.growth_table(watcher_calls.growth(tmp, sim, client, web, fake))


def growth(tmp: Path, *, quick: bool, postgres: bool) -> tuple[list[str], bool]:
    """How the watcher's tick grows with instances, and the run timers with active runs (up to 1,000 when quick)."""
    lines, ok = watcher_growth(tmp)
    report = ["", "watcher tick CPU ms of the ticking thread [wall ms]", *lines]
    plan = run_timers.QUICK if quick else run_timers.FULL
    lines, met = run_timers.measure_all("both" if postgres else "sqlite", plan)
    report += ["", "run timers: a quiet engine step (CPU ms, median of 5) and runs falling due together", *lines]
    return report, ok and met


def main(argv: Sequence[str] | None = None) -> int:
    """Run every part and print one report; return 1 when a goal is not met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds per case, not 3; run timers with 1,000 runs")
    parser.add_argument("--sizes", default="1,20,100,200", help="concurrent requests per burst (1,20,100,200)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL comparison")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or max(sizes) > 500:
        parser.error("--sizes must be 1..500 each")
    rounds = 2 if args.quick else 3
    logging.basicConfig(level=logging.ERROR)
    started = time.monotonic()
    report: list[str] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="vm-bot-bench-") as tmp_name:
        tmp = Path(tmp_name)
        lines, met = idle_cpu(tmp)
        print("\n".join(lines), flush=True)
        report += lines
        ok = ok and met

        runs = []
        (tmp / "sqlite").mkdir()
        runs.append(
            compare_with_floor(
                f"sqlite:///{tmp / 'sqlite' / 'vm-bot.db'}", "SQLite", sizes=sizes, rounds=rounds, tmp=tmp / "sqlite"
            )
        )
        print(f"SQLite done after {time.monotonic() - started:.0f} s", flush=True)
        if not args.no_postgres:
            with throwaway_postgres() as url:
                if url is None:
                    report.append("PostgreSQL: no server binaries found (.ci/postgres.sh); skipped")
                else:
                    (tmp / "pg").mkdir()
                    runs.append(compare_with_floor(url, "PostgreSQL", sizes=sizes, rounds=rounds, tmp=tmp / "pg"))
                    print(f"PostgreSQL done after {time.monotonic() - started:.0f} s", flush=True)
        lines, met = floor_table(runs)
        report += [
            "",
            f"p99 ack latency, ms: median [min-max] over {rounds} rounds; ratio = vm-bot / floor "
            "(bolt's default runner), ratio pbr = vm-bot / floor with process_before_response",
            *lines,
        ]
        ok = ok and met

        lines, met = growth(tmp, quick=args.quick, postgres=not args.no_postgres)
        report += lines
        ok = ok and met
    print("\n".join(report))
    print(f"\n{'every goal met' if ok else 'some goals NOT MET'}; took {time.monotonic() - started:.0f} s")
    print(f"rounds per case: {rounds}; machine load while running: {os.getloadavg()[0]:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
