"""Parts 2 and 3 of benchmarks/surfaces.py: the Home.

2. Our time to render a Home with 50 runs and 20 requests waiting for approval, as the rendering thread's CPU time,
   and the views.publish round trip to the Slack stand-in for scale. Goal: p99 < 100 ms of our CPU time.
3. `vm-bot run` and the floor app as processes: the p99 of a burst of `/vm start` acks alone, then released together
   with 200 app_home_opened events, against the floor's under the same load (goal: ratio <= 1.5, nothing failed);
   then how long until all 200 Homes were published.
"""

from __future__ import annotations

import json
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from ack_floor import GRANTED
from ack_latency import SLACK_DEADLINE
from served_apps import BENCH_DIR, LoadGen, Served, bot_env, served, signed_request, stand_in_env
from shared import ms, percentile
from slack_sdk import WebClient

from bot.db.migrate import upgrade
from bot.db.session import Database
from bot.devtools.block_kit import view_error
from bot.devtools.slack_driver import SlackConversation
from bot.devtools.slack_payloads import home_opened_event
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import free_port
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.domain.actions import START
from bot.grants import rules as grants
from bot.grants.authority import Authority
from bot.operations.app_home import AppHome
from bot.operations.creation import NewInstance, create
from bot.operations.records import EXTENSION_SECONDS, HomeRun
from bot.slack.views.home import home_view

HOME_USER = "U0HOME"
HOME_GOAL_MS = 100.0
STORM_GOAL = 1.5


# --- 2. a Home with 50 runs and 20 requests waiting --------------------------------------------------------------


class FiftyRuns:
    """The caller's runs as the RunBook gives them to the Home: 50 of them."""

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.runs = [
            HomeRun(
                1000 + i,
                f"{8_000_000_000_000_000_000 + i}",
                f"app-{i:02d}",
                "C0RUNS",
                f"1700000000.{i:06d}",
                now + timedelta(minutes=30 + i),
                1800.0 + 60 * i,
                can_extend=i % 3 != 0,
            )
            for i in range(50)
        ]

    def home_runs(self, requester_id: str, extend_seconds: float) -> list[HomeRun]:
        return self.runs


def home_publish(database_url: str, label: str) -> bool:
    """Time the render of a Home with 50 runs, 20 requests waiting for approval and 10 recent requests."""
    upgrade(database_url)
    db = Database(database_url)
    try:
        seed_home(db)
        home = AppHome(db, Authority(db), FiftyRuns(), extend_seconds=EXTENSION_SECONDS)

        def link(channel: str, ts: str | None) -> str | None:
            return f"https://example.slack.com/archives/{channel}/p{(ts or '').replace('.', '')}"

        timings, cpu, view = [], [], {}
        home_view(home.model(HOME_USER), link)  # warm up: the first query plans, imports, pools
        for _ in range(50):
            started, started_cpu = time.perf_counter(), time.thread_time()
            view = home_view(home.model(HOME_USER), link)
            json.dumps(view)
            timings.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - started_cpu)
        problems = view_error(view, "home")
        with FakeSlackWebApi() as fake:
            client = WebClient(token="xoxb-benchmark", base_url=fake.url)  # noqa: S106 — a stand-in's token
            publishes = []
            for _ in range(10):
                started = time.perf_counter()
                client.views_publish(user_id=HOME_USER, view=view)
                publishes.append(time.perf_counter() - started)
    finally:
        db.close()
    p99 = percentile(sorted(cpu), 99) * 1000
    met = p99 < HOME_GOAL_MS and problems is None
    text = "\n".join(b.get("text", {}).get("text", "") for b in view["blocks"] if b.get("type") == "section")
    print(
        f"   {label:<10} our CPU {ms(cpu)}; wall {ms(timings)}  ({len(view['blocks'])} blocks, "
        f"{text.count('wants to start')} waiting, {text.count('stops')} runs; Slack would "
        f"{'refuse' if problems else 'take'} it)\n              views.publish round trip to the stand-in (Slack's "
        f"time, for scale) {ms(publishes)}  {'met' if met else 'NOT MET'}"
    )
    return met


def seed_home(db: Database) -> None:
    """Grant HOME_USER starts and approvals; open 20 requests waiting for their approval and 10 of their own."""
    with db.session() as session:
        grants.add_grants(session, HOME_USER, ["*"], action="approve", granted_by="benchmark")
        grants.add_grants(session, HOME_USER, ["*"], granted_by="benchmark")
        for i in range(30):
            mine = i >= 20
            create(
                session,
                action=START,
                requester_id=HOME_USER if mine else f"U0PEER{i:03d}",
                channel_id="C0HOME",
                instances=[
                    NewInstance(f"h{i}-{k}", name=f"svc-{i}-{k}", zone="SEL-A", status="STOPPED") for k in range(3)
                ],
                needs_approval=not mine,
                ttl_seconds=3600,
                approvers=[] if mine else [HOME_USER],
            )


# --- 3. 200 people open their Home while commands arrive --------------------------------------------------------


def home_storm(database_url: str, label: str, *, rounds: int, homes: int, commands: int, tmp: Path) -> bool:
    """Acks of a burst of commands alone and released with `homes` app_home_opened, against the floor app's."""
    secret = secrets.token_urlsafe(16)
    key_id, key_secret = "AKIDBENCH", secrets.token_urlsafe(24)
    ids = {(r, load): [f"storm-{r}-{load}-{i:04d}" for i in range(commands)] for r in range(rounds) for load in (0, 1)}
    instances = {i: "STOPPED" for group in ids.values() for i in group}
    upgrade(database_url)
    db = Database(database_url)
    with db.session() as session:
        grants.add_grants(session, GRANTED, ["storm-*"], granted_by="benchmark")
    db.close()
    p99s: dict[tuple[str, int], list[float]] = {}
    failures = 0
    with (
        ZenlayerSimulator(access_key_id=key_id, access_key_secret=key_secret, instances=instances) as sim,
        FakeSlackWebApi() as fake,
        ExitStack() as stack,
    ):
        env = {**stand_in_env(secret, fake.url, sim.url, key_id, key_secret, database_url), "COMMANDS_PER_MINUTE": "0"}
        port = free_port()
        bot = stack.enter_context(served("vm-bot", [sys.executable, "-m", "bot", "run"], port, tmp, bot_env(env, port)))
        port = free_port()
        argv = [sys.executable, str(BENCH_DIR / "floor_app.py"), "--port", str(port)]
        floor = stack.enter_context(
            served("floor", [*argv, "--signing-secret", secret, "--slack-api-url", fake.url], port, tmp)
        )
        load = LoadGen()
        stack.callback(load.close)
        slack = SlackConversation(fake)
        users = [f"U0HOME{i:04d}" for i in range(homes)]
        started_storm = 0.0
        for r in range(rounds):
            for with_homes in (0, 1):
                channels = [f"C{r}H{with_homes}I{i:04d}" for i in range(commands)]
                for app in (bot, floor) if r % 2 == 0 else (floor, bot):
                    bodies, events = storm_requests(secret, app, slack, channels, ids[(r, with_homes)], users)
                    if with_homes and app is bot and not started_storm:
                        started_storm = time.monotonic()
                    results = load.fire(app.port, bodies + (events if with_homes else []))
                    answered = results[: len(bodies)]
                    p99s.setdefault((app.name, with_homes), []).append(
                        percentile(sorted(s for s, _, _ in answered), 99)
                    )
                    failures += sum(1 for s, status, _ in answered if status != 200 or s > SLACK_DEADLINE)
                    if app is bot and with_homes:
                        failures += sum(1 for _, status, _ in results[len(bodies) :] if status != 200)
        published = wait_homes(fake, users, 240)
        drained = (time.monotonic() - started_storm) if published == len(users) else None
    return print_storm(label, p99s, failures, published, len(users), drained, commands)


def storm_requests(
    secret: str,
    app: Served,
    slack: SlackConversation,
    channels: Sequence[str],
    instance_ids: Sequence[str],
    users: Sequence[str],
) -> tuple[list[bytes], list[bytes]]:
    """Return one signed `/vm start ID` per channel and id, and one signed app_home_opened per user, for `app`."""
    bodies = [
        signed_request(secret, app.port, urlencode(slack.command_payload(f"start {i}", user=GRANTED, channel=c)[0]))
        for c, i in zip(channels, instance_ids, strict=True)
    ]
    events = [
        signed_request(secret, app.port, json.dumps(home_opened_event(u, None)), "application/json") for u in users
    ]
    return bodies, events


def wait_homes(fake: FakeSlackWebApi, users: Sequence[str], max_wait: float) -> int:
    """Wait until every user's Home is published (up to max_wait); return how many are."""
    with suppress(TimeoutError):
        fake.wait_for(lambda: all(fake.home(u) for u in users), max_wait, what="every Home published")
    return sum(1 for u in users if fake.home(u))


def print_storm(
    label: str,
    p99s: dict[tuple[str, int], list[float]],
    failures: int,
    published: int,
    homes: int,
    drained: float | None,
    commands: int,
) -> bool:
    def median_ms(key: tuple[str, int]) -> float:
        return statistics.median(p99s[key]) * 1000

    alone, stormed = median_ms(("vm-bot", 0)), median_ms(("vm-bot", 1))
    floor_alone, floor_stormed = median_ms(("floor", 0)), median_ms(("floor", 1))
    ratio = stormed / floor_stormed
    met = ratio <= STORM_GOAL and failures == 0 and published == homes
    print(
        f"   {label:<10} {commands} /vm start alone: vm-bot p99 {alone:6.1f} ms, floor {floor_alone:6.1f} ms (ratio "
        f"{alone / floor_alone:.2f})\n              with {homes} Homes opened at once: vm-bot p99 {stormed:6.1f} ms, "
        f"floor {floor_stormed:6.1f} ms (ratio {ratio:.2f});  the Homes slowed vm-bot's acks x{stormed / alone:.2f}, "
        f"the floor's x{floor_stormed / floor_alone:.2f} (same requests, nothing done)\n              failed "
        f"{failures};  Homes published {published}/{homes}"
        + (f" in {drained:.0f} s" if drained is not None else "")
        + f"  {'met' if met else 'NOT MET'}"
    )
    return met
