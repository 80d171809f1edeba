"""Measure how fast the bot acknowledges bursts of concurrent `/vm start` commands and button clicks.

Run: ``python benchmarks/ack_latency.py [--sizes 20,50,100] [--hang-seconds 2] [--max-wait 120]
[--idle-connections 100]``.

Everything runs in this process on 127.0.0.1: the Zenlayer simulator, the Slack Web API fake, a temporary SQLite
database and the bot itself, served over real HTTP by waitress exactly as `vm-bot run` serves it. Each request is
a new connection (no keep-alive), signed like Slack's. For every burst size N, with N requests released together:

1. N `/vm start ID` (one new instance id each): the HTTP response time is the acknowledgement Slack needs within
   3 s; the follow-up is the time until all N confirmations are in the channel;
2. N Start clicks on those confirmations: follow-up until every confirmation was edited (buttons gone);
3. N more `/vm start` (a second sample, and the confirmations for step 5);
4. N `/vm start` while the simulator delays every DescribeInstances by --hang-seconds (the lookups run after
   the ack, so acks must stay fast; the follow-up shows how long the confirmations take);
5. right after step 4's acks, N Start clicks on step 3's confirmations, while step 4's lookups still run.

Finally one `/vm start` is sent while --idle-connections TCP connections are held open without sending anything.
At most 5 x sum(sizes) + 2 requests are sent; every wait stops after --max-wait seconds. The exit code is 1 when
any acknowledgement failed or took longer than 3 s.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import math
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.app import create_app
from bot.config import Settings, load_settings
from bot.db.migrate import upgrade
from bot.db.session import Database
from bot.devtools.slack_driver import Confirmation, SlackConversation, SlackDriver, has_buttons
from bot.devtools.slack_messages import Message, message_text
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import free_port
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.grants import rules as grants
from bot.server import RunningBot
from bot.slack import action_ids

USER = "U0BENCH01"
SLACK_DEADLINE = 3.0


@dataclass
class Burst:
    """One burst: its HTTP latencies, how many failed, and how long until its follow-up work was visible."""

    name: str
    latencies: list[float]
    failures: int
    follow_up: str = ""
    follow_up_seconds: float | None = None


def percentile(ordered: Sequence[float], q: float) -> float:
    """Return the nearest-rank q-th percentile (0 < q <= 100) of an ascending sequence."""
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def fire(n: int, send: Callable[[int], httpx.Response]) -> tuple[list[float], int, float]:
    """Call send(0..n-1) from n threads released together; return latencies, failures and the monotonic start."""
    barrier = threading.Barrier(n + 1)

    def one(i: int) -> tuple[float, bool]:
        barrier.wait()
        started = time.perf_counter()
        try:
            ok = send(i).status_code == 200
        except httpx.HTTPError:
            ok = False
        return time.perf_counter() - started, ok

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        t0 = time.monotonic()
        barrier.wait()
        results = [f.result() for f in futures]
    return [r[0] for r in results], sum(1 for r in results if not r[1]), t0


def confirmations(fake: FakeSlackWebApi, channel: str) -> list[Message]:
    """Return the top-level messages with buttons in a channel."""
    return [m for m in fake.channel_messages(channel) if has_buttons(m)]


def last_post_at(fake: FakeSlackWebApi, channel: str) -> float:
    """Return the monotonic time of the latest top-level chat.postMessage in a channel."""
    return max(
        c.at
        for c in fake.calls_to("chat.postMessage")
        if c.args.get("channel") == channel and not c.args.get("thread_ts")
    )


def all_updated_at(fake: FakeSlackWebApi, posted: Sequence[Confirmation], since: float) -> float:
    """Return when the last of the messages got its first chat.update after `since` (monotonic)."""
    first: dict[str, float] = {}
    for call in fake.calls_to("chat.update"):
        ts = str(call.args.get("ts"))
        if call.at >= since and ts not in first:
            first[ts] = call.at
    return max(first[c.ts] for c in posted)


def command_burst(
    name: str, driver: SlackDriver, fake: FakeSlackWebApi, channel: str, ids: Sequence[str], max_wait: float
) -> tuple[Burst, list[Confirmation]]:
    """Send one `/vm start ID` per id at once; wait until every confirmation is in the channel."""
    burst, t0 = send_commands(name, driver, channel, ids)
    return burst, wait_confirmations(burst, t0, fake, channel, len(ids), max_wait)


def send_commands(name: str, driver: SlackDriver, channel: str, ids: Sequence[str]) -> tuple[Burst, float]:
    """Send one `/vm start ID` per id at once; return the burst and its monotonic start."""
    latencies, failures, t0 = fire(len(ids), lambda i: driver.command(f"start {ids[i]}", user=USER, channel=channel)[0])
    return Burst(name, latencies, failures, "all confirmations posted"), t0


def wait_confirmations(
    burst: Burst, t0: float, fake: FakeSlackWebApi, channel: str, n: int, max_wait: float
) -> list[Confirmation]:
    """Wait until n confirmations are in the channel, note when the last was posted, and return them."""
    try:
        fake.wait_for(lambda: len(confirmations(fake, channel)) >= n, max_wait, what="every confirmation")
        burst.follow_up_seconds = last_post_at(fake, channel) - t0
    except TimeoutError:
        pass
    return [Confirmation(channel, m.ts, int(_request_id(m))) for m in confirmations(fake, channel)]


def click_burst(
    name: str, driver: SlackDriver, fake: FakeSlackWebApi, posted: Sequence[Confirmation], max_wait: float
) -> Burst:
    """Click Start on every confirmation at once; wait until every one was edited to show the approval."""
    latencies, failures, t0 = fire(len(posted), lambda i: driver.click(posted[i], action_ids.START, user=USER)[0])
    burst = Burst(name, latencies, failures, "all confirmations updated")
    if not posted:
        return burst

    def all_approved() -> bool:
        return all(not has_buttons(fake.messages[(c.channel, c.ts)]) for c in posted)

    try:
        fake.wait_for(all_approved, max_wait, what="every confirmation to lose its buttons")
        burst.follow_up_seconds = all_updated_at(fake, posted, t0) - t0
    except TimeoutError:
        pass
    return burst


def _request_id(message: Message) -> str:
    """Return the request id carried by a confirmation's buttons."""
    for block in message.blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if "value" in element:
                return str(element["value"])
    raise ValueError("message has no buttons")


def print_row(burst: Burst) -> bool:
    """Print one table row for a burst; return True when every ack arrived within 3 s."""
    ordered = sorted(burst.latencies)
    ms = [x * 1000 for x in (ordered[0], statistics.median(ordered), percentile(ordered, 95), ordered[-1])]
    over = sum(1 for x in ordered if x > SLACK_DEADLINE)
    follow = "timed out" if burst.follow_up_seconds is None else f"{burst.follow_up_seconds:7.2f} s"
    print(
        f"{burst.name:<36} {len(ordered):>4} {ms[0]:>8.1f} {ms[1]:>8.1f} {ms[2]:>8.1f} {ms[3]:>8.1f} "
        f"{over:>5} {burst.failures:>5}  {follow:>10}  {burst.follow_up}",
        flush=True,
    )
    return over == 0 and burst.failures == 0


def stand_in_env(
    signing_secret: str, slack_url: str, zenlayer_url: str, key_id: str, key_secret: str, database_url: str
) -> dict[str, str]:
    """Return the settings that point vm-bot at the loopback fakes and a database."""
    return {
        "SLACK_BOT_TOKEN": "xoxb-benchmark",
        "SLACK_SIGNING_SECRET": signing_secret,
        "SLACK_API_URL": slack_url,
        "ZENLAYER_ACCESS_KEY_ID": key_id,
        "ZENLAYER_ACCESS_KEY_SECRET": key_secret,
        "ZENLAYER_API_URL": zenlayer_url,
        "DATABASE_URL": database_url,
    }


def bench_settings(database_url: str, slack_url: str, zenlayer_url: str, key_id: str, key_secret: str) -> Settings:
    """Return settings pointing the bot at the loopback fakes."""
    return load_settings(
        {
            **stand_in_env(secrets.token_urlsafe(16), slack_url, zenlayer_url, key_id, key_secret, database_url),
            "POLL_INTERVAL_SECONDS": "1",
            "START_TIMEOUT_SECONDS": "900",
            "CONFIRM_TTL_SECONDS": "600",
            "COMMANDS_PER_MINUTE": "0",  # the bursts come from one user on purpose
        }
    )


def fresh_http() -> httpx.Client:
    """Return a client that opens a new connection per request and keeps none idle, as many Slack senders do."""
    return httpx.Client(timeout=30, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))


def idle_connection_probe(running: RunningBot, driver: SlackDriver, idle: int, instance_id: str) -> tuple[str, bool]:
    """Hold `idle` silent TCP connections open, time one `/vm start`; return a verdict and whether it met 3 s."""
    assert running.http is not None
    host, port = running.http.url.removeprefix("http://").rsplit(":", 1)
    sockets = [socket.create_connection((host, int(port)), timeout=5) for _ in range(idle)]
    probe = httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0))
    saved, driver.http = driver.http, probe
    started = time.perf_counter()
    status = 0
    try:
        status = driver.command(f"start {instance_id}", user=USER, channel="C0IDLE")[0].status_code
        outcome = f"HTTP {status}"
    except httpx.HTTPError as exc:
        outcome = f"no answer ({type(exc).__name__})"
    finally:
        elapsed = time.perf_counter() - started
        driver.http = saved
        probe.close()
        for sock in sockets:
            sock.close()
    ok = status == 200 and elapsed <= SLACK_DEADLINE
    return f"one /vm start with {idle} idle connections open: {outcome} after {elapsed * 1000:.0f} ms", ok


def main(argv: Sequence[str] | None = None) -> int:
    """Start the fakes and the bot on loopback, run every burst, print a table; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20,50,100", help="comma-separated burst sizes (default 20,50,100)")
    parser.add_argument("--hang-seconds", type=float, default=2.0, help="Zenlayer lookup delay in the slow bursts")
    parser.add_argument("--max-wait", type=float, default=120.0, help="seconds to wait for follow-up work at most")
    parser.add_argument(
        "--idle-connections", type=int, default=100, help="idle sockets held open for the last probe (0: skip)"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or max(sizes) > 500 or args.hang_seconds < 0 or args.max_wait <= 0:
        parser.error("--sizes must be 1..500 each, --hang-seconds not negative, --max-wait positive")
    if not 0 <= args.idle_connections <= 500:
        parser.error("--idle-connections must be 0..500")
    logging.basicConfig(level=logging.ERROR)

    phases = ("a", "b", "slow")
    ids = {(p, n): [f"ack-{p}-{n}-{i:04d}" for i in range(n)] for p in phases for n in sizes}
    instances = {i: "STOPPED" for group in ids.values() for i in group}
    instances.update({"ack-warmup": "STOPPED", "ack-idle": "STOPPED"})
    with in_process_bot(instances, "ack-*", boot_seconds=3600) as (running, driver, fake, sim, _settings):
        assert running.http is not None
        ok = True
        command_burst("warm-up", driver, fake, "C0WARMUP", ["ack-warmup"], args.max_wait)
        print(f"bot {running.http.url}; simulator {sim.url}; Slack fake {fake.url}")
        print(
            f"{'burst':<36} {'n':>4} {'min ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'>3s':>5} "
            f"{'fail':>5}  {'follow-up':>10}"
        )
        for n in sizes:
            burst, first = command_burst(f"/vm start x{n}", driver, fake, f"C0A{n}", ids[("a", n)], args.max_wait)
            ok = print_row(burst) and ok
            clicks = click_burst(f"Start click x{n}", driver, fake, first, args.max_wait)
            ok = print_row(clicks) and ok
            burst, second = command_burst(
                f"/vm start x{n} (again)", driver, fake, f"C0B{n}", ids[("b", n)], args.max_wait
            )
            ok = print_row(burst) and ok
            # Every lookup now takes hang_seconds; the clicks on `second` go out while those lookups run.
            sim.fail_next("DescribeInstances", times=n, status=200, hang_seconds=args.hang_seconds)
            slow, t0 = send_commands(
                f"/vm start x{n}, lookup {args.hang_seconds:g}s", driver, f"C0S{n}", ids[("slow", n)]
            )
            clicks = click_burst(f"Start click x{n} during slow lookups", driver, fake, second, args.max_wait)
            wait_confirmations(slow, t0, fake, f"C0S{n}", n, args.max_wait)
            ok = print_row(slow) and ok
            ok = print_row(clicks) and ok
            sim.reset_faults()
        if args.idle_connections:
            verdict, probe_ok = idle_connection_probe(running, driver, args.idle_connections, "ack-idle")
            print(verdict)
            ok = ok and probe_ok
    return 0 if ok else 1


@contextlib.contextmanager
def in_process_bot(
    instances: dict[str, str], pattern: str, *, boot_seconds: float
) -> Iterator[tuple[RunningBot, SlackDriver, FakeSlackWebApi, ZenlayerSimulator, Settings]]:
    """Run the simulator, the Slack stand-in and the bot (granted `pattern` for USER) in process on loopback."""
    key_id, key_secret = "AKIDBENCH", secrets.token_urlsafe(24)
    with (
        tempfile.TemporaryDirectory(prefix="vm-bot-bench-") as tmp,
        ZenlayerSimulator(
            boot_seconds=boot_seconds, access_key_id=key_id, access_key_secret=key_secret, instances=instances
        ) as sim,
        FakeSlackWebApi() as fake,
    ):
        database_url = f"sqlite:///{Path(tmp) / 'vm-bot.db'}"
        settings = bench_settings(database_url, fake.url, sim.url, key_id, key_secret)
        upgrade(database_url)
        db = Database(database_url)
        with db.session() as session:
            grants.add_grants(session, USER, [pattern], granted_by="benchmark")
        db.close()
        running = RunningBot(create_app(settings), host="127.0.0.1", port=0).start()
        assert running.http is not None and settings.slack_signing_secret is not None
        driver = SlackDriver(running.http.url, fake, settings.slack_signing_secret.reveal())
        driver.http.close()
        driver.http = fresh_http()
        try:
            yield running, driver, fake, sim, settings
        finally:
            driver.close()
            running.stop()


if __name__ == "__main__":
    raise SystemExit(main())


# --- side by side with the floor of the stack ------------------------------------------------------------------
#
# `vm-bot run` and the floor apps (benchmarks/floor_app.py: bare bolt apps that only ack, under the same waitress
# settings) run as their own processes; the load comes from a third process (benchmarks/loadgen.py), so neither
# the fakes in this process nor the measuring compete with each other for a GIL. Every case is sent to each app in
# turn (the order rotates every round) and the p99 of each burst is kept.

BENCH_DIR = Path(__file__).resolve().parent
GRANTED, UNGRANTED = "U0BENCH01", "U0NOGRANT"
KINDS = ("/vm start", "Start click", "/vm start refused")
FLOORS = {"floor": False, "floor pbr": True}  # name -> process_before_response


def wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Wait until a served app answers /healthz; fail with its log when it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)  # polling a condition with a deadline
    raise RuntimeError(f"{process.args} did not answer /healthz within {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def served(name: str, argv: list[str], port: int, tmp: Path, env: dict[str, str] | None = None) -> Iterator[Served]:
    """Run an app as its own process until the block ends; SIGTERM it then (and kill it if it hangs)."""
    log = tmp / f"{name.replace(' ', '-')}.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        wait_healthy(port, process, log)
        yield Served(name, port, process, log)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process and wait for it (kill it if it hangs)."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Served:
    """An app under test, running as its own process on a loopback port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def bot_env(settings_env: dict[str, str], port: int) -> dict[str, str]:
    """Return the environment for `vm-bot run`: ours, minus anything vm-bot reads, plus the benchmark settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ZENLAYER_", "DATABASE_", "POLL_"))}
    return {**env, **settings_env, "HOST": "127.0.0.1", "PORT": str(port)}  # HOST's default is every address


class LoadGen:
    """The load generator process: fire a list of signed requests at once, get back latencies and bodies."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, str(BENCH_DIR / "loadgen.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def fire(self, port: int, requests: Sequence[bytes], timeout: float = 30.0) -> list[tuple[float, int, str]]:
        """Send every request at once on its own connection; return (seconds, status, body) per request."""
        assert self.process.stdin is not None and self.process.stdout is not None
        job = {"port": port, "timeout": timeout, "requests": [base64.b64encode(r).decode() for r in requests]}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the load generator died")
        return [(float(s), int(c), str(b)) for s, c, b in json.loads(line)["results"]]

    def close(self) -> None:
        """End the load generator."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=10)


def signed_request(secret: str, port: int, body: str) -> bytes:
    """Return a raw HTTP request posting a form body to /slack/events with Slack's signature headers."""
    ts = str(int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    data = body.encode()
    head = (
        f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(data)}\r\nX-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {signature}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + data


@dataclass
class CaseResult:
    """Per app, the p99 (seconds) of each round's burst; plus what went wrong in any round."""

    p99: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # not HTTP 200, no answer, or over 3 s
    lost: int = 0  # vm-bot only: a confirmation never posted, a click not applied, a refusal not given in the ack

    def add(self, app: str, results: Sequence[tuple[float, int, str]]) -> None:
        """Record one burst of one app."""
        ordered = sorted(r[0] for r in results)
        self.p99.setdefault(app, []).append(percentile(ordered, 99))
        bad = sum(1 for s, status, _ in results if status != 200 or s > SLACK_DEADLINE)
        self.failures[app] = self.failures.get(app, 0) + bad


@dataclass
class FloorRun:
    """Everything one database's comparison measured."""

    database: str
    cases: dict[tuple[str, int], CaseResult]
    time_to_running: list[float]
    poll_interval: float
    clicked: int = 0  # requests started by the click bursts
    not_finished: int = 0  # of those, how many never got their "All ... RUNNING" reply


def compare_with_floor(
    database_url: str,
    label: str,
    *,
    sizes: Sequence[int],
    rounds: int,
    tmp: Path,
    max_wait: float = 120.0,
    poll_interval: float = 1.0,
    boot_seconds: float = 1.0,
    running_samples: int = 5,
) -> FloorRun:
    """Run vm-bot and the floor apps side by side on one database; return every case's numbers."""
    secret = secrets.token_urlsafe(16)
    key_id, key_secret = "AKIDBENCH", secrets.token_urlsafe(24)
    ids = {(r, n): [f"ack-{r}-{n}-{i:04d}" for i in range(n)] for r in range(rounds) for n in sizes}
    running_ids = [f"ack-running-{i}" for i in range(running_samples)]
    instances = {i: "STOPPED" for group in ids.values() for i in group}
    instances.update({i: "STOPPED" for i in [*running_ids, "ack-warmup"]})
    upgrade(database_url)
    db = Database(database_url)
    with db.session() as session:
        grants.add_grants(session, GRANTED, ["ack-*"], granted_by="benchmark")
    db.close()
    cases = {(kind, n): CaseResult() for n in sizes for kind in KINDS}
    clicked: list[Confirmation] = []
    with (
        ZenlayerSimulator(
            boot_seconds=boot_seconds, access_key_id=key_id, access_key_secret=key_secret, instances=instances
        ) as sim,
        FakeSlackWebApi() as fake,
        ExitStack() as stack,
    ):
        settings_env = {
            **stand_in_env(secret, fake.url, sim.url, key_id, key_secret, database_url),
            "POLL_INTERVAL_SECONDS": str(poll_interval),
            "COMMANDS_PER_MINUTE": "0",  # the bursts come from one user on purpose
        }
        apps: list[Served] = []
        port = free_port()
        apps.append(
            stack.enter_context(
                served("vm-bot", [sys.executable, "-m", "bot", "run"], port, tmp, bot_env(settings_env, port))
            )
        )
        for name, pbr in FLOORS.items():
            port = free_port()
            argv = [sys.executable, str(BENCH_DIR / "floor_app.py"), "--port", str(port), "--signing-secret", secret]
            argv += ["--slack-api-url", fake.url]
            apps.append(
                stack.enter_context(served(name, [*argv, *(["--process-before-response"] if pbr else [])], port, tmp))
            )
        load = LoadGen()
        stack.callback(load.close)
        slack = SlackConversation(fake)
        bot = apps[0]

        def commands(app: Served, user: str, channels: Sequence[str], instance_ids: Sequence[str]) -> list[bytes]:
            bodies = [
                urlencode(slack.command_payload(f"start {i}", user=user, channel=c)[0])
                for c, i in zip(channels, instance_ids, strict=True)
            ]
            return [signed_request(secret, app.port, b) for b in bodies]

        def clicks(app: Served, posted: Sequence[Confirmation]) -> tuple[list[bytes], list[str]]:
            payloads = [slack.click_payload(c, action_ids.START, user=GRANTED) for c in posted]
            bodies = [urlencode({"payload": json.dumps(p)}) for p, _ in payloads]
            return [signed_request(secret, app.port, b) for b in bodies], [k for _, k in payloads]

        # Warm every app up (imports, pools, the first connection to each database and fake).
        for app in apps:
            load.fire(app.port, commands(app, GRANTED, ["C0WARM"], ["ack-warmup"]))
        fake.wait_for(lambda: confirmations(fake, "C0WARM"), max_wait, what="the warm-up confirmation")

        for r in range(rounds):
            order = apps[r % len(apps) :] + apps[: r % len(apps)]
            for n in sizes:
                channels = [f"C{r}N{n}I{i:04d}" for i in range(n)]
                posted: list[Confirmation] = []
                for app in order:
                    results = load.fire(app.port, commands(app, GRANTED, channels, ids[(r, n)]))
                    cases[("/vm start", n)].add(app.name, results)
                    if app is bot:
                        posted = wait_each_confirmation(fake, channels, max_wait)
                        cases[("/vm start", n)].lost += n - len(posted)
                for app in order:
                    targets = posted if app is bot else [Confirmation(c, "1.000001", 1) for c in channels]
                    requests, keys = clicks(app, targets)
                    results = load.fire(app.port, requests)
                    cases[("Start click", n)].add(app.name, results)
                    if app is bot:
                        cases[("Start click", n)].lost += (
                            n - len(posted) + count_unapplied(fake, posted, keys, max_wait)
                        )
                        clicked.extend(posted)
                for app in order:
                    results = load.fire(app.port, commands(app, UNGRANTED, channels, ids[(r, n)]))
                    cases[("/vm start refused", n)].add(app.name, results)
                    if app is bot:
                        cases[("/vm start refused", n)].lost += sum(
                            1 for _, _, b in results if "may not start" not in b
                        )
        # Every started request must end with its RUNNING reply; the time-to-RUNNING samples start after that.
        not_finished = count_unfinished(fake, clicked, max_wait)
        samples = measure_time_to_running(load, bot, fake, sim, slack, secret, running_ids, max_wait, boot_seconds)
    return FloorRun(label, cases, samples, poll_interval, len(clicked), not_finished)


def count_unfinished(fake: FakeSlackWebApi, clicked: Sequence[Confirmation], max_wait: float) -> int:
    """Wait until every started request's thread says it is RUNNING; return how many never did."""

    def done(c: Confirmation) -> bool:
        return any("All 1 instance RUNNING" in m.text for m in fake.thread(c.channel, c.ts))

    with contextlib.suppress(TimeoutError):
        fake.wait_for(lambda: all(done(c) for c in clicked), max_wait, what="every RUNNING reply")
    return sum(1 for c in clicked if not done(c))


def wait_each_confirmation(fake: FakeSlackWebApi, channels: Sequence[str], max_wait: float) -> list[Confirmation]:
    """Wait until every channel holds its confirmation (up to max_wait); return the ones that arrived."""
    with contextlib.suppress(TimeoutError):
        fake.wait_for(lambda: all(confirmations(fake, c) for c in channels), max_wait, what="every confirmation")
    found = []
    for channel in channels:
        messages = confirmations(fake, channel)
        if messages:
            found.append(Confirmation(channel, messages[0].ts, int(_request_id(messages[0]))))
    return found


def count_unapplied(fake: FakeSlackWebApi, posted: Sequence[Confirmation], keys: Sequence[str], max_wait: float) -> int:
    """Wait until every clicked confirmation lost its buttons; return how many did not, or got a private refusal."""

    def applied(c: Confirmation) -> bool:
        return not has_buttons(fake.messages[(c.channel, c.ts)])

    with contextlib.suppress(TimeoutError):
        fake.wait_for(lambda: all(applied(c) for c in posted), max_wait, what="every click applied")
    refused = sum(1 for key in keys if fake.responses(key))
    return sum(1 for c in posted if not applied(c)) + refused


def measure_time_to_running(
    load: LoadGen,
    bot: Served,
    fake: FakeSlackWebApi,
    sim: ZenlayerSimulator,
    slack: SlackConversation,
    secret: str,
    instance_ids: Sequence[str],
    max_wait: float,
    boot_seconds: float,
) -> list[float]:
    """Start instances one at a time; return, per instance, seconds from RUNNING at Zenlayer to the RUNNING reply."""
    delays = []
    for instance_id in instance_ids:
        channel = f"C0RUN{instance_id[-1]}"
        body = urlencode(slack.command_payload(f"start {instance_id}", user=GRANTED, channel=channel)[0])
        load.fire(bot.port, [signed_request(secret, bot.port, body)])
        fake.wait_for(lambda channel=channel: confirmations(fake, channel), max_wait, what="a confirmation")
        message = confirmations(fake, channel)[0]
        confirmation = Confirmation(channel, message.ts, int(_request_id(message)))
        payload, _ = slack.click_payload(confirmation, action_ids.START, user=GRANTED)
        load.fire(bot.port, [signed_request(secret, bot.port, urlencode({"payload": json.dumps(payload)}))])

        def final_reply(confirmation: Confirmation = confirmation) -> float | None:
            for call in fake.calls_to("chat.postMessage"):
                args = call.args
                if args.get("thread_ts") == confirmation.ts and "All 1 instance RUNNING" in message_text(args):
                    return call.at
            return None

        replied_at = fake.wait_for(final_reply, max_wait, what="the RUNNING reply")
        started_at = next(c.time for c in sim.calls if c.action == "StartInstances" and instance_id in c.instance_ids)
        # The simulator stamps calls with the wall clock, the Slack stand-in with the monotonic one.
        running_at = started_at + boot_seconds - (time.time() - time.monotonic())
        delays.append(replied_at - running_at)
        time.sleep(secrets.randbelow(1000) / 1000)  # a random phase against the watcher's poll, on purpose
    return delays


def floor_table(runs: Sequence[FloorRun], apps: Sequence[str] = ("vm-bot", *FLOORS)) -> tuple[list[str], bool]:
    """Return the side-by-side table (p99 ms, median [min-max] over rounds; ratios) and whether every goal is met."""
    lines = [
        f"{'db':<10} {'case':<22} {'n':>4}  "
        + "  ".join(f"{a + ' p99 ms':<24}" for a in apps)
        + f"  {'ratio':>6} {'ratio pbr':>9} {'fail':>4} {'lost':>4}  goal"
    ]
    ok = True
    for run in runs:
        for (kind, n), case in run.cases.items():
            cells = []
            for app in apps:
                values = [v * 1000 for v in case.p99.get(app, [])]
                cells.append(
                    f"{statistics.median(values):7.1f} [{min(values):.1f}-{max(values):.1f}]" if values else "-"
                )
            bot = statistics.median(case.p99["vm-bot"])
            ratio = bot / statistics.median(case.p99["floor"])
            ratio_pbr = bot / statistics.median(case.p99["floor pbr"])
            failures = sum(case.failures.values())
            met = ratio <= 1.5 and failures == 0 and case.lost == 0
            ok = ok and met
            lines.append(
                f"{run.database:<10} {kind:<22} {n:>4}  "
                + "  ".join(f"{c:<24}" for c in cells)
                + f"  {ratio:6.2f} {ratio_pbr:9.2f} {failures:>4} {case.lost:>4}  {'met' if met else 'NOT MET'}"
            )
    for run in runs:
        ok = ok and run.not_finished == 0
        lines.append(
            f"{run.database:<10} started by the click bursts: {run.clicked} requests, "
            f"{run.clicked - run.not_finished} got their RUNNING reply, {run.not_finished} lost"
        )
        if run.time_to_running:
            worst = max(run.time_to_running)
            met = worst <= run.poll_interval + 0.5
            ok = ok and met
            lines.append(
                f"{run.database:<10} time to RUNNING reply after RUNNING at Zenlayer (poll {run.poll_interval:g} s): "
                f"median {statistics.median(run.time_to_running):.2f} s, max {worst:.2f} s over "
                f"{len(run.time_to_running)}; goal <= {run.poll_interval + 0.5:g} s: {'met' if met else 'NOT MET'}"
            )
    return lines, ok
