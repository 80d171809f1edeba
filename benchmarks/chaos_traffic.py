"""The chaos check's traffic: signed commands and clicks from three users to random replicas, and the killer that
SIGKILLs replicas now and then and measures how long their work takes to be taken over."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from chaos_faults import patient
from chaos_processes import Replica, Simulator
from sqlalchemy import select

from bot.db.models import Operation
from bot.db.session import Database
from bot.devtools.slack_driver import Confirmation, SlackDriver, button_values
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import wait_until
from bot.slack import action_ids

CHANNEL = "C0CHAOS"
USERS = ("U0CHAOS1", "U0CHAOS2", "U0CHAOS3")
ACTIVE = ("approved", "starting", "watching")


@dataclass
class Tally:
    """What the traffic did."""

    commands: int = 0
    commands_acked: int = 0
    clicks: int = 0
    acked_clicks: list[tuple[int, str, str, str]] = field(default_factory=list)  # request, user, action, reply key
    kills: int = 0
    kill_times: list[float] = field(default_factory=list)  # monotonic, comparable with the Slack stand-in's calls
    repeated_after_kill: int = 0
    honest_failures: int = 0  # acknowledged clicks that could not be recorded, and whose clicker was told so
    restarts_at_once: list[float] = field(default_factory=list)  # takeover seconds
    takeovers_by_others: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def together(*calls: Callable[[], None]) -> None:
    """Run calls at the same instant, each on a thread of its own, and wait for them."""
    threads = [threading.Thread(target=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


class Slack:
    """Signed commands and clicks to random replicas, counted in the tally."""

    def __init__(self, replicas: Sequence[Replica], fake: FakeSlackWebApi, signing_secret: str, tally: Tally):
        self.fake = fake
        self.tally = tally
        self.drivers = [SlackDriver(r.url, fake, signing_secret) for r in replicas]
        self.claimed: set[int] = set()  # confirmations someone clicked (or means to): the random clicks leave them
        self.lock = threading.Lock()

    def driver(self, rng: random.Random) -> SlackDriver:
        return rng.choice(self.drivers)

    def command(self, user: str, text: str, via: SlackDriver, channel: str = CHANNEL) -> str | None:
        """Send `/vm TEXT`; return the key of its private replies when it was acknowledged."""
        with self.tally.lock:
            self.tally.commands += 1
        try:
            response, key = via.command(text, user=user, channel=channel)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        with self.tally.lock:
            self.tally.commands_acked += 1
        return key

    def click(self, confirmation: Confirmation, user: str, action: str, via: SlackDriver) -> str | None:
        """Click a button; return the key of its private replies when it was acknowledged."""
        with self.tally.lock:
            self.tally.clicks += 1
        try:
            response, key = via.click(confirmation, action, user=user)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        with self.tally.lock:
            self.tally.acked_clicks.append((confirmation.request_id, user, action, key))
        return key

    def claim(self, request_id: int) -> bool:
        """Take a confirmation for one clicker (True the first time)."""
        with self.lock:
            first = request_id not in self.claimed
            self.claimed.add(request_id)
            return first

    def open_confirmations(self) -> list[tuple[Confirmation, str]]:
        """Confirmations in the channel no one has clicked yet, with their requesters."""
        found = []
        for message in self.fake.channel_messages(CHANNEL):
            values = button_values(message)
            mention = re.search(r"<@(U\w+)>", message.text)
            if values and mention:
                with self.lock:
                    if int(values[0]) in self.claimed:
                        continue
                found.append((Confirmation(CHANNEL, message.ts, int(values[0])), mention.group(1)))
        return found

    def close(self) -> None:
        for driver in self.drivers:
            driver.close()


def play(slack: Slack, simulator: Simulator, instances: list[str], seconds: float, rng: random.Random) -> None:
    """The random mix for `seconds`: commands (some at once to two replicas, some overlapping a neighbour's),
    clicks (double clicks on two replicas, Cancel racing Start) and the odd StartInstances answered 500."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        roll = rng.random()
        user = rng.choice(USERS)
        if roll < 0.04:  # the next StartInstances fails with an unknown outcome (not applied)
            simulator.fault({"action": "StartInstances", "status": 500, "code": "INTERNAL_ERROR"})
        elif roll < 0.35:
            ids = rng.sample(instances, rng.randint(1, 3))
            text = "start " + " ".join(ids)
            if rng.random() < 0.2:  # the same command twice at the same instant, to two replicas
                a, b = slack.driver(rng), slack.driver(rng)
                together(
                    lambda u=user, t=text, d=a: slack.command(u, t, d),  # type: ignore[misc]
                    lambda u=user, t=text, d=b: slack.command(u, t, d),  # type: ignore[misc]
                )
            else:
                slack.command(user, text, slack.driver(rng))
            if rng.random() < 0.5:  # overlap: a neighbour's request takes one of the same ids and another
                other = rng.choice([u for u in USERS if u != user])
                slack.command(other, f"start {ids[0]} {rng.choice(instances)}", slack.driver(rng))
        else:
            _click_some(slack, rng)
        time.sleep(rng.uniform(0.05, 0.3))


def _click_some(slack: Slack, rng: random.Random) -> None:
    """Click up to three open confirmations at once: overlapping ones race for instances."""
    pending = slack.open_confirmations()
    if not pending:
        return
    rng.shuffle(pending)
    calls: list[Callable[[], None]] = []
    for confirmation, requester in pending[: rng.randint(1, min(3, len(pending)))]:
        if not slack.claim(confirmation.request_id):
            continue
        kind = rng.random()
        a, b = slack.driver(rng), slack.driver(rng)
        calls.append(lambda c=confirmation, r=requester, d=a: slack.click(c, r, action_ids.START, d))  # type: ignore[misc]
        if kind < 0.3:  # a double click landing on two replicas
            calls.append(lambda c=confirmation, r=requester, d=b: slack.click(c, r, action_ids.START, d))  # type: ignore[misc]
        elif kind < 0.45:  # Cancel racing Start
            calls.append(lambda c=confirmation, r=requester, d=b: slack.click(c, r, action_ids.CANCEL, d))  # type: ignore[misc]
    together(*calls)


class Killer:
    """SIGKILLs replicas: now and then at random (half restarted at once, half only after another replica took their
    work over, timing the takeover), or at a moment someone else picks (the runs' due stops and clicks)."""

    def __init__(self, replicas: Sequence[Replica], db: Database, tally: Tally, seed: int):
        self.replicas = list(replicas)
        self.db = db
        self.tally = tally
        self.rng = random.Random(seed)  # the killer's own, so traffic and kills are each reproducible
        self.stop_event = threading.Event()
        self.lock = threading.Lock()  # one kill at a time

    def kill(self, victim: Replica) -> float | None:
        """SIGKILL one replica, noted in the tally; return when (monotonic), or None when it was down already."""
        with self.tally.lock:
            self.tally.kill_times.append(time.monotonic())
        if not victim.kill():
            return None
        with self.tally.lock:
            self.tally.kills += 1
        return time.monotonic()

    def kill_now(self, rng: random.Random, restart_after: float, victim: Replica | None = None) -> Replica | None:
        """Kill a replica (a random one unless named) at once and restart it `restart_after` seconds later: a kill
        at the caller's moment, not the schedule's. Return it, or None when one is down already (never all)."""
        with self.lock:
            alive = [r for r in self.replicas if r.alive()]
            if not alive or len(alive) < len(self.replicas):
                return None
            victim = victim or rng.choice(alive)
            self.kill(victim)
        time.sleep(restart_after)
        victim.start()
        return victim

    def run(self, seconds: float, kills: int) -> None:
        """The schedule: `kills` kills spread over `seconds`."""
        interval = seconds / (kills + 1)
        for n in range(kills):
            if self.stop_event.wait(interval * self.rng.uniform(0.5, 1.0)):
                return
            self._kill_and_time(at_once=n % 2 == 0 or len(self.replicas) == 1)

    def _kill_and_time(self, *, at_once: bool) -> None:
        """Kill one, restart it at once or after a takeover, and time how long its work was left alone."""
        with self.lock:
            for replica in self.replicas:  # one that could not start (Slack or the database away) is tried again
                if not replica.alive():
                    replica.start()
            victim = self.rng.choice([r for r in self.replicas if r.alive()] or self.replicas)
            killed_at = self.kill(victim) or time.monotonic()
        owner_prefix = f"{victim.name}/"
        held = patient(lambda: held_by(self.db, owner_prefix))
        if at_once:
            time.sleep(self.rng.uniform(0, 1.0))
            victim.start()
        took = patient(lambda: wait_takeover(self.db, held, owner_prefix, timeout=60))
        if took is not None:
            with self.tally.lock:
                (self.tally.restarts_at_once if at_once else self.tally.takeovers_by_others).append(took - killed_at)
        if not at_once:
            victim.start()
        wait_until(lambda: victim.healthy() or not victim.alive(), 30, f"{victim.name} to serve again")


def held_by(db: Database, owner_prefix: str) -> list[int]:
    """Return the requests whose lease a replica holds and that still need work."""
    with db.session(readonly=True) as session:
        return list(
            session.scalars(
                select(Operation.id).where(
                    Operation.lease_owner.startswith(owner_prefix),
                    (Operation.state.in_(ACTIVE)) | Operation.outcome_posted_at.is_(None),
                    Operation.state != "pending",
                    Operation.state.not_in(["cancelled", "rejected", "withdrawn"]),
                )
            )
        )


def wait_takeover(db: Database, held: list[int], owner_prefix: str, timeout: float) -> float | None:
    """Wait until another process owns (or has finished) every request the killed one held; return when."""
    if not held:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.session(readonly=True) as session:
            rows = session.execute(
                select(Operation.lease_owner, Operation.outcome_posted_at).where(Operation.id.in_(held))
            ).all()
        if all(owner is None or not owner.startswith(owner_prefix) or posted is not None for owner, posted in rows):
            return time.monotonic()
        time.sleep(0.1)
    return None
