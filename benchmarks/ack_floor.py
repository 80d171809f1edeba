"""vm-bot's acks side by side with the floor of the stack: `compare_with_floor` and `floor_table`, which
benchmarks/run_all.py runs on SQLite and PostgreSQL.

`vm-bot run` and the floor apps run as their own processes and the load comes from a third (`served_apps`). Every
case is sent to each app in turn (the order rotates every round) and the p99 of each burst is kept.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from ack_latency import SLACK_DEADLINE, confirmations, request_id
from served_apps import BENCH_DIR, LoadGen, Served, bot_env, served, signed_request, stand_in_env
from shared import percentile

from bot.db.migrate import upgrade
from bot.db.session import Database
from bot.devtools.slack_driver import Confirmation, SlackConversation, has_buttons
from bot.devtools.slack_messages import message_text
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import free_port
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.grants import rules as grants
from bot.slack import action_ids

GRANTED, UNGRANTED = "U0BENCH01", "U0NOGRANT"
KINDS = ("/vm start", "Start click", "/vm start refused")
FLOORS = {"floor": False, "floor pbr": True}  # name -> process_before_response


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


@dataclass
class Rig:
    """What every case is sent with: the load generator, the Slack stand-in and the apps' signing secret."""

    load: LoadGen
    fake: FakeSlackWebApi
    slack: SlackConversation
    secret: str
    bot: Served
    max_wait: float

    def commands(self, app: Served, user: str, channels: Sequence[str], instance_ids: Sequence[str]) -> list[bytes]:
        """Return one signed `/vm start ID` per channel and id, for `app`."""
        bodies = [
            urlencode(self.slack.command_payload(f"start {i}", user=user, channel=c)[0])
            for c, i in zip(channels, instance_ids, strict=True)
        ]
        return [signed_request(self.secret, app.port, b) for b in bodies]

    def clicks(self, app: Served, posted: Sequence[Confirmation]) -> tuple[list[bytes], list[str]]:
        """Return one signed Start click per confirmation, for `app`, and their response_url keys."""
        payloads = [self.slack.click_payload(c, action_ids.START, user=GRANTED) for c in posted]
        bodies = [urlencode({"payload": json.dumps(p)}) for p, _ in payloads]
        return [signed_request(self.secret, app.port, b) for b in bodies], [k for _, k in payloads]


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
        apps = start_apps(stack, settings_env, secret, fake.url, tmp)
        load = LoadGen()
        stack.callback(load.close)
        rig = Rig(load, fake, SlackConversation(fake), secret, apps[0], max_wait)
        # Warm every app up (imports, pools, the first connection to each database and fake).
        for app in apps:
            load.fire(app.port, rig.commands(app, GRANTED, ["C0WARM"], ["ack-warmup"]))
        fake.wait_for(lambda: confirmations(fake, "C0WARM"), max_wait, what="the warm-up confirmation")
        for r in range(rounds):
            order = apps[r % len(apps) :] + apps[: r % len(apps)]
            for n in sizes:
                clicked.extend(run_cases(rig, order, [f"C{r}N{n}I{i:04d}" for i in range(n)], ids[(r, n)], cases))
        # Every started request must end with its RUNNING reply; the time-to-RUNNING samples start after that.
        not_finished = count_unfinished(fake, clicked, max_wait)
        samples = measure_time_to_running(rig, sim, running_ids, boot_seconds)
    return FloorRun(label, cases, samples, poll_interval, len(clicked), not_finished)


def start_apps(stack: ExitStack, settings_env: dict[str, str], secret: str, slack_url: str, tmp: Path) -> list[Served]:
    """Serve `vm-bot run` (first) and each floor app as its own process until `stack` closes."""
    port = free_port()
    apps = [
        stack.enter_context(
            served("vm-bot", [sys.executable, "-m", "bot", "run"], port, tmp, bot_env(settings_env, port))
        )
    ]
    for name, pbr in FLOORS.items():
        port = free_port()
        argv = [sys.executable, str(BENCH_DIR / "floor_app.py"), "--port", str(port), "--signing-secret", secret]
        argv += ["--slack-api-url", slack_url]
        apps.append(
            stack.enter_context(served(name, [*argv, *(["--process-before-response"] if pbr else [])], port, tmp))
        )
    return apps


def run_cases(
    rig: Rig,
    order: Sequence[Served],
    channels: Sequence[str],
    instance_ids: Sequence[str],
    cases: dict[tuple[str, int], CaseResult],
) -> list[Confirmation]:
    """Send every case of one burst size to each app in turn; return the confirmations the bot's clicks started."""
    n = len(channels)
    posted: list[Confirmation] = []
    for app in order:
        results = rig.load.fire(app.port, rig.commands(app, GRANTED, channels, instance_ids))
        cases[("/vm start", n)].add(app.name, results)
        if app is rig.bot:
            posted = wait_each_confirmation(rig.fake, channels, rig.max_wait)
            cases[("/vm start", n)].lost += n - len(posted)
    for app in order:
        targets = posted if app is rig.bot else [Confirmation(c, "1.000001", 1) for c in channels]
        requests, keys = rig.clicks(app, targets)
        results = rig.load.fire(app.port, requests)
        cases[("Start click", n)].add(app.name, results)
        if app is rig.bot:
            cases[("Start click", n)].lost += n - len(posted) + count_unapplied(rig.fake, posted, keys, rig.max_wait)
    for app in order:
        results = rig.load.fire(app.port, rig.commands(app, UNGRANTED, channels, instance_ids))
        cases[("/vm start refused", n)].add(app.name, results)
        if app is rig.bot:
            cases[("/vm start refused", n)].lost += sum(1 for _, _, b in results if "may not start" not in b)
    return posted


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
            found.append(Confirmation(channel, messages[0].ts, int(request_id(messages[0]))))
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
    rig: Rig, sim: ZenlayerSimulator, instance_ids: Sequence[str], boot_seconds: float
) -> list[float]:
    """Start instances one at a time; return, per instance, seconds from RUNNING at Zenlayer to the RUNNING reply."""
    fake, bot = rig.fake, rig.bot
    delays = []
    for instance_id in instance_ids:
        channel = f"C0RUN{instance_id[-1]}"
        rig.load.fire(bot.port, rig.commands(bot, GRANTED, [channel], [instance_id]))
        fake.wait_for(lambda channel=channel: confirmations(fake, channel), rig.max_wait, what="a confirmation")
        message = confirmations(fake, channel)[0]
        confirmation = Confirmation(channel, message.ts, int(request_id(message)))
        rig.load.fire(bot.port, rig.clicks(bot, [confirmation])[0])

        def final_reply(confirmation: Confirmation = confirmation) -> float | None:
            for call in fake.calls_to("chat.postMessage"):
                args = call.args
                if args.get("thread_ts") == confirmation.ts and "All 1 instance RUNNING" in message_text(args):
                    return call.at
            return None

        replied_at = fake.wait_for(final_reply, rig.max_wait, what="the RUNNING reply")
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
