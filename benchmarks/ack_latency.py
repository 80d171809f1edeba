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
import contextlib
import logging
import secrets
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from served_apps import stand_in_env
from shared import percentile

from bot.app import create_app
from bot.config import Settings, load_settings
from bot.db.migrate import upgrade
from bot.db.session import Database
from bot.devtools.slack_driver import Confirmation, SlackDriver, has_buttons
from bot.devtools.slack_messages import Message
from bot.devtools.slack_web_api import FakeSlackWebApi
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
    return [Confirmation(channel, m.ts, int(request_id(m))) for m in confirmations(fake, channel)]


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


def request_id(message: Message) -> str:
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
    args, sizes = arguments(argv)
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


def arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[int]]:
    """Parse and check the command line; return it and the burst sizes."""
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
    return args, sizes


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
