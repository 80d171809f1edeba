"""Count the Zenlayer calls and Slack messages one watcher tick makes, for N watched instances in M requests.

Run: ``python benchmarks/watcher_calls.py [--sizes 1,10,100,250,1000] [--steady-ticks 2]``.

Everything runs in this process on 127.0.0.1: the Zenlayer simulator (boot_seconds=3600, so started instances stay
BOOTING while we measure), the Slack Web API fake, and a temporary SQLite database per scenario. Requests are made
by the real `Opening` and `Clicks` (open, then a Start click by the requester, recorded and decided), each with a
real thread parent in the fake, and the real `Engine` drives the real `ZenlayerClient`; `engine.step()` is called
directly, so every tick is measured on its own (what Slack is told goes through the outbox, delivered by the
sender after each tick):

* ``start``   — the first tick: StartInstances, then the first poll (STOPPED -> BOOTING is news: one reply each);
* ``steady``  — nothing changed at Zenlayer: one poll, no Slack message at all;
* ``running`` — every instance was set RUNNING in the simulator: one poll and one reply saying it is done;
* ``after``   — every request is finished and reported: nothing to poll, nothing to post.

A scenario with a Slack hiccup follows: chat.update fails once during a progress report, then nothing changes.
Expectations (ceil(N/100) DescribeInstancesStatus per polling tick, no message when nothing changed, at most one
progress reply per request per tick) are checked; the exit code is 1 when one is not met.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slack_sdk import WebClient

from bot.db.lease import Lease, Owner
from bot.db.migrate import upgrade
from bot.db.session import Database
from bot.devtools.slack_calls import Call
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.domain.actions import START
from bot.grants import rules as grants
from bot.grants.authority import Authority
from bot.operations.click_model import ClickOutcome, ClickRow, Decision
from bot.operations.clicks import Clicks
from bot.operations.engine import Engine
from bot.operations.opening import Opening
from bot.zenlayer.client import ZenlayerClient

USER = "U0BENCH01"
CHANNEL = "C0WATCH"
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_MESSAGE_TEXT = 40_000


@dataclass
class Tick:
    """What one tick did: Zenlayer calls by action, Slack calls, and how long it took."""

    label: str
    seconds: float
    cpu_seconds: float  # the ticking thread's own CPU (the fakes run in other threads)
    zenlayer: Counter[str]
    thread_replies: int
    max_replies_per_request: int
    top_level_posts: int
    updates: int
    limit_problems: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    """N instances spread over requests of the given sizes, with everything needed to tick them."""

    name: str
    sizes: list[int]
    ids: list[str]
    watcher: Engine
    db: Database


def measure(
    label: str, watcher: Engine, sim: ZenlayerSimulator, fake: FakeSlackWebApi, before: Callable[[], None] | None
) -> Tick:
    """Run one tick (after `before`, if given) and return what it cost."""
    if before is not None:
        before()
    sim.clear_calls()
    first_call = len(fake.calls)
    started, cpu_started = time.perf_counter(), time.thread_time()
    watcher.step()
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
    zenlayer = Counter(str(c.action) for c in sim.calls)
    slack = fake.calls[first_call:]
    replies = [c for c in slack if c.method == "chat.postMessage" and c.args.get("thread_ts")]
    per_request = Counter(str(c.args["thread_ts"]) for c in replies)
    return Tick(
        label=label,
        seconds=elapsed,
        cpu_seconds=cpu,
        zenlayer=zenlayer,
        thread_replies=len(replies),
        max_replies_per_request=max(per_request.values(), default=0),
        top_level_posts=sum(1 for c in slack if c.method == "chat.postMessage" and not c.args.get("thread_ts")),
        updates=sum(1 for c in slack if c.method == "chat.update"),
        limit_problems=[p for c in slack for p in block_kit_problems(c)],
    )


def block_kit_problems(call: Call) -> list[str]:
    """Return the Block Kit / message limits a recorded Slack call broke."""
    if call.method not in ("chat.postMessage", "chat.update"):
        return []
    blocks: Any = call.args.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    problems = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{call.method}: {len(blocks)} blocks (max {MAX_BLOCKS})")
    for block in blocks:
        text = block.get("text", {}).get("text", "") if block.get("type") == "section" else ""
        if len(text) > MAX_SECTION_TEXT:
            problems.append(f"{call.method}: section text of {len(text)} chars (max {MAX_SECTION_TEXT})")
    if len(str(call.args.get("text", ""))) > MAX_MESSAGE_TEXT:
        problems.append(f"{call.method}: text of {len(str(call.args['text']))} chars (max {MAX_MESSAGE_TEXT})")
    return problems


def build(
    name: str,
    sizes: list[int],
    tmp: Path,
    sim: ZenlayerSimulator,
    client: ZenlayerClient,
    web: WebClient,
) -> Scenario:
    """Create a migrated database, STOPPED instances, and approved requests of the given sizes with thread parents."""
    prefix = f"w{len(list(tmp.iterdir()))}"
    database_url = f"sqlite:///{tmp / (prefix + '.db')}"
    upgrade(database_url)
    db = Database(database_url)
    with db.session() as session:
        grants.add_grants(session, USER, [f"{prefix}-*"], granted_by="benchmark")
    authority = Authority(db)
    opening = Opening(db, client, authority, confirm_ttl_seconds=600, approval_ttl_seconds=3600)
    owner, lease = Owner(f"bench-{prefix}"), Lease(15)
    clicks = Clicks(db, client, authority, owner=owner, lease=lease)
    all_ids: list[str] = []
    for r, size in enumerate(sizes):
        ids = [f"{prefix}-{r:04d}-{i:04d}" for i in range(size)]
        for instance_id in ids:
            sim.add_instance(instance_id, "STOPPED")
        request_id = opening.open(opening.look_up(USER, CHANNEL, START, ids)).request_id
        assert request_id is not None
        ts = str(web.chat_postMessage(channel=CHANNEL, text="confirmation")["ts"])
        result = clicks.decide(clicks.record(ClickRow(request_id, USER, Decision.CONFIRM, CHANNEL, ts)))
        assert result is not None and result.outcome == ClickOutcome.APPROVED, result
        all_ids.extend(ids)
    watcher = Engine(db, client, owner=owner, lease=lease, poll_interval_seconds=5, watch_seconds=3600)
    return Scenario(name, sizes, all_ids, watcher, db)


def run_scenario(scenario: Scenario, sim: ZenlayerSimulator, fake: FakeSlackWebApi, steady_ticks: int) -> list[Tick]:
    """Tick a scenario through start, steady, running and after; return the measured ticks."""

    def all_running() -> None:
        for instance_id in scenario.ids:
            sim.set_status(instance_id, "RUNNING")

    w = scenario.watcher
    ticks = [measure("start", w, sim, fake, None)]
    ticks += [measure("steady", w, sim, fake, None) for _ in range(steady_ticks)]
    ticks.append(measure("running", w, sim, fake, all_running))
    ticks += [measure("after", w, sim, fake, None) for _ in range(steady_ticks)]
    return ticks


def check(scenario: Scenario, tick: Tick) -> list[str]:
    """Return the expectations a tick did not meet."""
    n, m = len(scenario.ids), len(scenario.sizes)
    polls = tick.zenlayer["DescribeInstancesStatus"]
    expected_polls = 0 if tick.label == "after" else math.ceil(n / 100)
    problems = []
    if polls > expected_polls:
        problems.append(f"{polls} DescribeInstancesStatus, expected {expected_polls}")
    if tick.label in ("steady", "after") and (tick.thread_replies or tick.updates or tick.top_level_posts):
        problems.append(
            f"nothing changed but {tick.thread_replies} thread replies and {tick.updates} chat.update were sent"
        )
    if tick.max_replies_per_request > 1:
        problems.append(f"{tick.max_replies_per_request} replies in one thread (at most 1 expected)")
    if tick.label == "start" and tick.zenlayer["StartInstances"] > sum(math.ceil(s / 100) for s in scenario.sizes):
        problems.append(f"{tick.zenlayer['StartInstances']} StartInstances for {m} requests")
    return problems + tick.limit_problems[:3]


def print_tick(scenario: Scenario, tick: Tick, problems: Sequence[str]) -> None:
    """Print one table row."""
    n = len(scenario.ids)
    polls = tick.zenlayer["DescribeInstancesStatus"]
    print(
        f"{scenario.name:<18} {tick.label:<8} {polls:>5} {math.ceil(n / 100) if tick.label != 'after' else 0:>4} "
        f"{tick.zenlayer['StartInstances']:>6} {tick.thread_replies:>7} {tick.max_replies_per_request:>5} "
        f"{tick.updates:>7} {tick.seconds * 1000:>9.1f}  {'; '.join(problems)}",
        flush=True,
    )


def hiccup(
    tmp: Path, sim: ZenlayerSimulator, client: ZenlayerClient, web: WebClient, fake: FakeSlackWebApi
) -> tuple[str, bool]:
    """One request of 3: chat.update fails once while reporting progress; say what the next quiet tick posted."""
    scenario = build("hiccup 1x3", [3], tmp, sim, client, web)
    first = measure("start", scenario.watcher, sim, fake, lambda: fake.fail_next("chat.update", error="internal_error"))
    second = measure("steady", scenario.watcher, sim, fake, None)
    scenario.db.close()
    ok = second.thread_replies == 0
    return (
        f"Slack hiccup (1 request of 3; chat.update fails once in the start tick): start tick posted "
        f"{first.thread_replies} thread reply(ies); the next tick, with nothing new at Zenlayer, posted "
        f"{second.thread_replies} thread reply(ies) and {second.updates} chat.update"
        + ("" if ok else "  <- the progress reply was repeated")
    ), ok


GROWTH = ((100, 10), (500, 50), (1000, 100), (2500, 250), (5000, 500))  # (instances, requests of 10 each)
QUIET_GOAL_SECONDS, ALL_CHANGE_GOAL_SECONDS = 0.1, 1.0  # at 5,000 instances in 500 requests


@dataclass
class Growth:
    """One size of the growth table: what the start, quiet and all-change ticks cost."""

    instances: int
    requests: int
    start: Tick
    quiet: Tick
    all_change: Tick


def growth(
    tmp: Path,
    sim: ZenlayerSimulator,
    client: ZenlayerClient,
    web: WebClient,
    fake: FakeSlackWebApi,
    sizes: Sequence[tuple[int, int]] = GROWTH,
) -> list[Growth]:
    """Tick N watched instances in M requests: the start tick, a quiet tick and a tick where every one changes."""
    rows = []
    for n, m in sizes:
        scenario = build(f"{n} in {m}", [n // m] * m, tmp, sim, client, web)
        start = measure("start", scenario.watcher, sim, fake, None)
        quiet_ticks = [measure("quiet", scenario.watcher, sim, fake, None) for _ in range(3)]
        quiet = sorted(quiet_ticks, key=lambda t: t.cpu_seconds)[1]  # the median of three

        def all_running(scenario: Scenario = scenario) -> None:
            for instance_id in scenario.ids:
                sim.set_status(instance_id, "RUNNING")

        change = measure("all change", scenario.watcher, sim, fake, all_running)
        scenario.db.close()
        rows.append(Growth(n, m, start, quiet, change))
    return rows


def growth_table(rows: Sequence[Growth]) -> tuple[list[str], bool]:
    """Return the growth table (CPU ms of the ticking thread, wall ms in brackets) and whether the goals are met."""
    lines = [
        f"{'instances':>9} {'requests':>8}  {'start tick':>18}  {'quiet tick':>18}  {'all-change tick':>18}  "
        f"{'polls':>5} {'replies':>7}  goal (5,000: quiet < {QUIET_GOAL_SECONDS * 1000:.0f} ms, all change < "
        f"{ALL_CHANGE_GOAL_SECONDS:g} s CPU)"
    ]
    ok = True
    for row in rows:

        def cell(tick: Tick) -> str:
            return f"{tick.cpu_seconds * 1000:7.0f} [{tick.seconds * 1000:7.0f}]"

        verdict = ""
        if row.instances == max(r.instances for r in rows):
            met = row.quiet.cpu_seconds < QUIET_GOAL_SECONDS and row.all_change.cpu_seconds < ALL_CHANGE_GOAL_SECONDS
            ok = ok and met
            verdict = "met" if met else "NOT MET"
        lines.append(
            f"{row.instances:>9} {row.requests:>8}  {cell(row.start):>18}  {cell(row.quiet):>18}  "
            f"{cell(row.all_change):>18}  {row.quiet.zenlayer['DescribeInstancesStatus']:>5} "
            f"{row.all_change.thread_replies:>7}  {verdict}"
        )
    return lines, ok


def layouts(n: int) -> list[tuple[str, list[int]]]:
    """Return the request layouts for n instances: one request of n, and n/10 requests of 10."""
    result = [(f"N={n} 1x{n}", [n])]
    if n >= 20 and n % 10 == 0:
        result.append((f"N={n} {n // 10}x10", [10] * (n // 10)))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Start the fakes on loopback, tick every scenario, print a table; return 1 when an expectation failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100,250,1000", help="instance counts (default 1,10,100,250,1000)")
    parser.add_argument("--steady-ticks", type=int, default=2, help="quiet ticks measured before and after (2)")
    parser.add_argument("--growth", action="store_true", help="print only how tick cost grows, 100 to 5,000")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or max(sizes) > 5000 or not 1 <= args.steady_ticks <= 10:
        parser.error("--sizes must be 1..5000 each, --steady-ticks 1..10")
    logging.basicConfig(level=logging.ERROR)

    key_id, key_secret = "AKIDBENCH", secrets.token_urlsafe(24)
    failed = False
    with (
        tempfile.TemporaryDirectory(prefix="vm-bot-bench-") as tmp_name,
        ZenlayerSimulator(boot_seconds=3600, access_key_id=key_id, access_key_secret=key_secret) as sim,
        FakeSlackWebApi() as fake,
        ZenlayerClient(sim.url, access_key_id=key_id, access_key_secret=key_secret, timeout=30) as client,
    ):
        tmp = Path(tmp_name)
        web = WebClient(token="xoxb-benchmark", base_url=fake.url, timeout=30)  # noqa: S106 — the loopback fake
        if args.growth:
            lines, ok = growth_table(growth(tmp, sim, client, web, fake))
            print("\n".join(lines))
            return 0 if ok else 1
        print(f"simulator {sim.url}; Slack fake {fake.url}")
        print(
            f"{'scenario':<18} {'tick':<8} {'DIS':>5} {'exp':>4} {'Start':>6} {'replies':>7} {'max/r':>5} "
            f"{'updates':>7} {'tick ms':>9}  problems"
        )
        for n in sizes:
            for name, request_sizes in layouts(n):
                scenario = build(name, request_sizes, tmp, sim, client, web)
                for tick in run_scenario(scenario, sim, fake, args.steady_ticks):
                    problems = check(scenario, tick)
                    failed = failed or bool(problems)
                    print_tick(scenario, tick, problems)
                scenario.db.close()
        text, ok = hiccup(tmp, sim, client, web, fake)
        print(text)
        failed = failed or not ok
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
