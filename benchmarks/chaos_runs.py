"""The chaos check's time-boxed runs: short `/vm start ID --for Ns` runs, each played by a thread of its own as its
requester would: Start, then Extend or Stop now on the reminder (some right on the deadline, racing the auto-stop),
or nothing; replicas are killed right after those clicks and at the moments stops fall due.

Every run gets an instance no other request names (`run-NNN`), so each run's StopInstances calls are its own; they
go to a channel of their own, so the random traffic's backlog at the channel's gate never delays their messages.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chaos_faults import patient
from chaos_processes import Replica
from chaos_run_checks import RunWorld, StopCall, promised_deadline
from chaos_traffic import USERS, Killer, Slack
from sqlalchemy import func, select

from bot.db.clock import as_utc, db_time
from bot.db.models import AuditEvent, Run
from bot.db.session import Database
from bot.devtools.slack_driver import Confirmation, button_values
from bot.slack import action_ids

RUN_CHANNEL = "C0CHAOSRUNS"


@dataclass(frozen=True)
class RunMode:
    """How many runs a mode plays, how long, and how hard."""

    runs: int
    within: float  # share of the traffic's time the runs are started in (so they end soon after it)
    seconds: tuple[int, int]  # --for, at least and at most
    extend_seconds: int  # RUN_EXTEND_SECONDS (at least 10)
    reminder_seconds: int  # RUN_REMINDER_SECONDS
    max_extensions: int  # per run
    kills: int  # replicas killed at due stops and right after run clicks, at most


RUN_MODES = {
    # Short mode (CI): its runs end about when the traffic's backlog has drained, so they add little time.
    "short": RunMode(
        runs=6, within=0.1, seconds=(10, 12), extend_seconds=10, reminder_seconds=5, max_extensions=1, kills=3
    ),
    "long": RunMode(
        runs=40, within=0.8, seconds=(10, 40), extend_seconds=15, reminder_seconds=8, max_extensions=3, kills=16
    ),
}


def run_settings(mode: RunMode) -> dict[str, str]:
    """The replicas' settings for these runs."""
    return {"RUN_EXTEND_SECONDS": str(mode.extend_seconds), "RUN_REMINDER_SECONDS": str(mode.reminder_seconds)}


@dataclass
class RunClick:
    """An Extend or Stop now click a run's requester made."""

    request_id: int
    action: str
    racing: bool  # sent at the deadline, racing the auto-stop
    key: str | None  # its private replies' key (None: not acknowledged)


@dataclass
class RunTally:
    """What the runs' players did."""

    commands: int = 0
    played: list[int] = field(default_factory=list)  # the starts whose runs reached RUNNING
    clicks: list[RunClick] = field(default_factory=list)
    kills_at_due: int = 0
    kills_after_click: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class RunPlayers:
    """Plays the mode's runs, one thread each, started over the first part of the traffic."""

    def __init__(self, slack: Slack, killer: Killer, db: Database, mode: RunMode, seed: int):
        self.slack = slack
        self.killer = killer
        self.db = db
        self.mode = mode
        self.seed = seed
        self.tally = RunTally()
        self.threads: list[threading.Thread] = []
        self.kills_left = mode.kills

    def start(self, traffic_seconds: float) -> None:
        """Start every run's player, each at its moment."""
        rng = random.Random(self.seed)
        spread = traffic_seconds * self.mode.within
        for k in range(self.mode.runs):
            delay = spread * k / max(1, self.mode.runs - 1)
            player = threading.Thread(target=self._play, args=(k, delay, random.Random(rng.random())), daemon=True)
            player.start()
            self.threads.append(player)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for player in self.threads:
            player.join(max(0.0, deadline - time.monotonic()))

    def _play(self, k: int, delay: float, rng: random.Random) -> None:
        time.sleep(delay)
        try:
            self._one(k, rng)
        except Exception as exc:  # a player that trips tells why; the checks still judge the run
            print(f"chaos: run player {k}: {type(exc).__name__}: {exc}", flush=True)

    def _one(self, k: int, rng: random.Random) -> None:
        """One run: asked for, started, then extended, stopped now, or left to the timer."""
        instance, user = f"run-{k:03d}", rng.choice(USERS)
        length = rng.randint(*self.mode.seconds)
        with self.tally.lock:
            self.tally.commands += 1
        if self.slack.command(user, f"start {instance} --for {length}s", self.slack.driver(rng), RUN_CHANNEL) is None:
            return
        confirmation = self._confirmation(instance)
        if confirmation is None:
            return
        self._click_start(confirmation, user, rng)
        if not self._wait_running(confirmation.request_id, timeout=60):
            return
        with self.tally.lock:
            self.tally.played.append(confirmation.request_id)
        extensions, used = 0, set[str]()
        while True:
            fate = rng.random()
            racing = rng.random() < 0.5
            if fate < 0.45 and extensions < self.mode.max_extensions:
                extensions += 1
                if not self._click(confirmation, user, action_ids.EXTEND, racing, rng, used):
                    return
            elif fate < 0.65:
                self._click(confirmation, user, action_ids.STOP_RUN, racing, rng, used)
                return
            else:
                self._kill_at_due(confirmation.request_id, rng)
                return

    def _confirmation(self, instance: str, timeout: float = 25.0) -> Confirmation | None:
        """Wait for the confirmation of the run of this instance, a lease and more (the replica that owes it may have
        died); None: it never came (a replica killed between the command's ack and its lookup loses it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.slack.fake.channel_messages(RUN_CHANNEL):
                values = button_values(message)
                if values and f"`{instance}`" in json.dumps(message.blocks):
                    return Confirmation(RUN_CHANNEL, message.ts, int(values[0]))
            time.sleep(0.1)
        return None

    def _click_start(self, confirmation: Confirmation, user: str, rng: random.Random) -> None:
        """Start, now and then double-clicked on two replicas."""
        if not self.slack.claim(confirmation.request_id):
            return
        a, b = self.slack.driver(rng), self.slack.driver(rng)
        self.slack.click(confirmation, user, action_ids.START, a)
        if rng.random() < 0.3:
            self.slack.click(confirmation, user, action_ids.START, b)

    def _run(self, request_id: int) -> tuple[str, float | None] | None:
        """The run's state and seconds until its stop, by the database's clock (None: no run yet)."""

        def read() -> tuple[str, float | None] | None:
            with self.db.session(readonly=True) as session:
                row = session.execute(
                    select(Run.state, Run.stop_at, db_time()).where(Run.request_id == request_id)
                ).first()
            if row is None:
                return None
            state, stop_at, now = row
            due_in = None if stop_at is None else (as_utc(stop_at) - as_utc(now)).total_seconds()
            return str(state), due_in

        return patient(read)

    def _wait_running(self, request_id: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self._run(request_id)
            if run is not None and run[0] != "waiting":
                return run[0] == "running"
            time.sleep(0.2)
        return False

    def _wait_due(self, request_id: int, before: float) -> bool:
        """Sleep until `before` seconds before the run's stop (negative: after); False when it no longer runs."""
        run = self._run(request_id)
        if run is None or run[0] != "running" or run[1] is None:
            return False
        time.sleep(max(0.0, run[1] - before))
        return True

    def _reminder(self, confirmation: Confirmation, used: set[str]) -> Confirmation:
        """Wait for a reminder not clicked yet, at most until just before the stop; return it, or the latest message
        with the run's buttons (its confirmation when no reminder came: Slack away)."""
        request_id = confirmation.request_id
        while True:
            replies = [m for m in self.slack.fake.thread(RUN_CHANNEL, confirmation.ts) if button_values(m)]
            fresh = [m for m in replies if m.ts not in used]
            if fresh:
                used.add(fresh[-1].ts)
                return Confirmation(RUN_CHANNEL, fresh[-1].ts, request_id)
            run = self._run(request_id)
            if run is None or run[0] != "running" or run[1] is None or run[1] < 1.0:
                return Confirmation(RUN_CHANNEL, replies[-1].ts if replies else confirmation.ts, request_id)
            time.sleep(0.1)

    def _click(
        self, confirmation: Confirmation, user: str, action: str, racing: bool, rng: random.Random, used: set[str]
    ) -> bool:
        """Click Extend or Stop now on the run's reminder (or right at its deadline, racing the auto-stop), then
        maybe kill the replica that took the click; False when the run was over before the click."""
        target = self._reminder(confirmation, used)
        if racing and not self._wait_due(confirmation.request_id, before=rng.uniform(-0.4, 0.4)):
            return False
        index = rng.randrange(len(self.slack.drivers))
        key = self.slack.click(target, user, action, self.slack.drivers[index])
        with self.tally.lock:
            self.tally.clicks.append(RunClick(confirmation.request_id, action, racing, key))
        victim = self.killer.replicas[index]
        if key is not None and rng.random() < 0.5 and self._take_kill() and self._kill(rng, victim):
            with self.tally.lock:
                self.tally.kills_after_click += 1
        return True

    def _kill_at_due(self, request_id: int, rng: random.Random) -> None:
        """Kill a replica at the moment the run's stop falls due (give or take 0.3 s)."""
        if rng.random() > 0.7 or not self._wait_due(request_id, before=rng.uniform(-0.3, 0.3)):
            return
        if self._take_kill() and self._kill(rng, None):
            with self.tally.lock:
                self.tally.kills_at_due += 1

    def _kill(self, rng: random.Random, victim: Replica | None) -> bool:
        """Kill a replica (restarted within a second) unless one is down already."""
        return self.killer.kill_now(rng, restart_after=rng.uniform(0, 1.0), victim=victim) is not None

    def _take_kill(self) -> bool:
        with self.tally.lock:
            if self.kills_left <= 0:
                return False
            self.kills_left -= 1
            return True

    def told(self, action: str, words: str) -> Counter[int]:
        """Per start, the clicks of one button whose clicker was told `words` ("Extended by", "Too late")."""
        told: Counter[int] = Counter()
        for click in self.tally.clicks:
            replies = self.slack.fake.responses(click.key) if click.key is not None else []
            if click.action == action and any(words in str(b.get("text", "")) for b in replies):
                told[click.request_id] += 1
        return told

    def told_extended(self) -> Counter[int]:
        """Per start, the Extend clicks whose clicker was told "Extended"."""
        return self.told(action_ids.EXTEND, "Extended by")


def run_counts(db: Database, world: RunWorld, players: RunPlayers) -> dict[str, Any]:
    """The counts of the runs of one scenario."""
    with db.session(readonly=True) as session:
        reminded = session.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.event == "run_reminded")) or 0
        retried = session.scalar(select(func.coalesce(func.sum(Run.stop_failures), 0))) or 0
    tally = players.tally
    ended = Counter(f"{r.state}: {r.ended_reason}" if r.ended_reason else r.state for r in world.runs)
    auto = [r for r in world.runs if r.ended_reason == "auto"]
    first = [_late(promised_deadline(world, r), world.calls, r.instance_id, made=True) for r in auto]
    accepted = [_late(promised_deadline(world, r), world.calls, r.instance_id, made=False) for r in auto]
    clicks = Counter(
        f"{'Extend' if c.action == action_ids.EXTEND else 'Stop now'}{' at the deadline' if c.racing else ''}"
        f"{'' if c.key else ' (not acknowledged)'}"
        for c in tally.clicks
    )
    return {
        "runs": len(world.runs),
        "runs by how they ended": dict(sorted(ended.items())),
        "run reminders": reminded,
        "run extensions": sum(r.extensions for r in world.runs),
        "run auto-stops": sum(1 for r in world.runs if r.ended_reason == "auto"),
        "run early stops": sum(1 for r in world.runs if r.ended_reason == "early"),
        "run clicks": dict(sorted(clicks.items())),
        "Extend clicks told Extended / Too late": (
            f"{sum(players.told_extended().values())} / {sum(players.told(action_ids.EXTEND, 'Too late').values())}"
        ),
        "kills at a due stop / right after a run click": f"{tally.kills_at_due} / {tally.kills_after_click}",
        "StopInstances calls (accepted)": f"{len(world.calls)} ({sum(1 for c in world.calls if c.accepted)})",
        "auto-stops made again after one failed": retried,
        "longest from a deadline to its auto-stop's first / accepted StopInstances (s)": (
            f"{max(first, default=0.0):.2f} / {max(accepted, default=0.0):.2f}"
        ),
    }


def _late(deadline: datetime, calls: list[StopCall], instance_id: str, *, made: bool) -> float:
    """Seconds from a deadline to the first StopInstances of its instance that reached Zenlayer (`made`), or to the
    first it accepted."""
    times = [c.time for c in calls if instance_id in c.instance_ids and (made or c.accepted)]
    return min(times) - deadline.timestamp() if times else 0.0
