"""Chaos check: several `vm-bot run` replicas on one database, random commands and clicks, SIGKILLs; then invariants.

Run: ``python benchmarks/chaos.py [--mode short|long] [--backend postgres|sqlite|both] [--seed N]``.

On PostgreSQL three replicas share one throwaway database (from $VM_BOT_TEST_POSTGRES_URL when set, else a cluster
started with .ci/postgres.sh); on SQLite two processes share one file. Zenlayer is `vm-bot simulator` (a process);
Slack is the loopback stand-in in this process, which records every message. A bounded random mix of signed
commands and clicks goes to random replicas: overlapping requests from a small pool of instances, identical
commands at the same instant, two clicks on one confirmation at once, Cancel racing Start. Meanwhile a random
replica is SIGKILLed now and then: half the time restarted at once (same REPLICA_ID: it takes over at once), half
the time only after another replica has taken its work over (which waits out the lease). Afterwards every replica
runs until all work is done, and these are counted (a violation makes the exit code 1):

* accepted StartInstances per instance (at most 1: instances are never stopped again, so a second accepted start
  would mean two requests, or one request twice, started it);
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
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from chaos_faults import (
    FAULTS,
    FaultSchedule,
    clock_offsets,
    patient,
    restartable_cluster,
    skew_note,
    skewed_env,
    stuck_pending,
    tally_violations,
    wrong_finals,
)
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from bot.db.migrate import upgrade
from bot.db.models import Click, Operation, ZenlayerCall
from bot.db.session import Database
from bot.delivery import outbox
from bot.devtools.slack_driver import Confirmation, SlackDriver, button_values
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import Credentials, free_port, wait_until
from bot.grants import rules as grants
from bot.slack import action_ids

ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS = Credentials.fresh("chaos")
SIGNING_SECRET = CREDENTIALS.slack_signing_secret
ACCESS_KEY_ID = CREDENTIALS.zenlayer_access_key_id
ACCESS_KEY_SECRET = CREDENTIALS.zenlayer_access_key_secret
CHANNEL = "C0CHAOS"
USERS = ("U0CHAOS1", "U0CHAOS2", "U0CHAOS3")
# A final reply: addressed to the requester, then one of these.
FINAL_REPLY = re.compile(
    r"^(<@\w+> )?(:white_check_mark: All|:x: Not every instance started|:alarm_clock: Stopped watching)"
)
ACTIVE = ("approved", "starting", "watching")
MODES = {
    # seconds of random traffic, instances, kills, poll interval
    "short": {"seconds": 28, "instances": 36, "kills": 4, "poll": 0.5, "boot": 4.0},
    "long": {"seconds": 300, "instances": 300, "kills": 24, "poll": 0.5, "boot": 4.0},
}


@dataclass
class Replica:
    """One `vm-bot run` process, restartable under the same REPLICA_ID and port."""

    name: str
    port: int
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        with (self.log_dir / f"{self.name}.{self.starts}.log").open("w") as log:
            command = [sys.executable, "-m", "bot", "run"]
            self.process = subprocess.Popen(command, env=self.env, cwd=self.log_dir, stdout=log, stderr=log)  # noqa: S603

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


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


@contextmanager
def postgres_url() -> Iterator[tuple[str | None, str | None]]:
    """Yield the URL of a fresh PostgreSQL database, on the CI cluster or a throwaway one (None: no server here),
    and the directory of that cluster when .ci/postgres.sh made it (so it may be restarted)."""
    base_url = os.environ.get("VM_BOT_TEST_POSTGRES_URL", "").strip()
    cluster_dir = os.environ.get("VM_BOT_TEST_POSTGRES_DIR", "").strip() or None
    with ExitStack() as stack:
        if not base_url:
            out = subprocess.run(  # noqa: S603 — the repo's own script
                [str(ROOT / ".ci/postgres.sh")], capture_output=True, text=True, check=True
            ).stdout
            found = dict(re.findall(r"export (\w+)='([^']*)'", out))
            if "VM_BOT_TEST_POSTGRES_URL" not in found:
                yield None, None  # .ci/postgres.sh prints nothing where no server binaries are installed
                return
            base_url = found["VM_BOT_TEST_POSTGRES_URL"]
            cluster_dir = found["VM_BOT_TEST_POSTGRES_DIR"]
            stack.callback(
                subprocess.run, [str(ROOT / ".ci/postgres.sh"), "stop", found["VM_BOT_TEST_POSTGRES_DIR"]], check=False
            )
        base = make_url(base_url)
        if base.drivername == "postgresql":
            base = base.set(drivername="postgresql+psycopg")
        name = f"chaos_{uuid.uuid4().hex[:10]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # it may restart
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = base.set(database=name).render_as_string(hide_password=False)
            yield url, restartable_cluster(url, cluster_dir)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


class Simulator:
    """`vm-bot simulator` as a process, with its control API."""

    def __init__(self, instances: list[str], boot: float, log_dir: Path):
        self.port = free_port()
        env = {**os.environ, "ZENLAYER_ACCESS_KEY_ID": ACCESS_KEY_ID, "ZENLAYER_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET}
        args = [sys.executable, "-m", "bot", "simulator", "--port", str(self.port), "--boot-seconds", str(boot)]
        for instance in instances:
            args += ["--instance", f"{instance}:STOPPED"]
        with (log_dir / "simulator.log").open("w") as log:
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=log)  # noqa: S603
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._healthy, 20, "the simulator")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/_simulator/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def fault(self, spec: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/_simulator/faults", json=spec, timeout=10).raise_for_status()

    def calls(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_simulator/calls", timeout=10).json()["calls"])

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def run_scenario(
    backend: str,
    url: str,
    mode_name: str,
    seed: int,
    replicas_count: int,
    cluster_dir: str | None = None,
) -> list[str]:
    """Run one chaos scenario; print its counts and return the violations."""
    mode, faults = MODES[mode_name], FAULTS[mode_name]
    offsets = clock_offsets(backend, replicas_count, faults)
    print(f"chaos: {backend}: {skew_note(backend, offsets)}", flush=True)
    rng = random.Random(seed)
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
        simulator = Simulator(instances, mode["boot"], log_dir)
        stack.callback(simulator.close)
        replicas = []
        for n in range(replicas_count):
            port = free_port()
            env = {
                **os.environ,
                "SLACK_BOT_TOKEN": CREDENTIALS.slack_bot_token,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_APP_TOKEN": "",
                "SLACK_API_URL": fake.url,
                "ZENLAYER_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "ZENLAYER_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
                "ZENLAYER_TOKEN": "",
                "ZENLAYER_API_URL": simulator.url,
                "DATABASE_URL": url,
                "PORT": str(port),
                "POLL_INTERVAL_SECONDS": str(mode["poll"]),
                "START_TIMEOUT_SECONDS": "120",
                "REPLICA_ID": f"replica-{n + 1}",
                "HOST": "127.0.0.1",
                "COMMANDS_PER_MINUTE": "0",  # three users drive all the traffic on purpose
                **skewed_env(offsets[n]),  # kept across restarts: the host's clock, not the process's
            }
            replicas.append(Replica(f"replica-{n + 1}", port, env, log_dir))
        for replica in replicas:
            replica.start()
            stack.callback(replica.stop)
        for replica in replicas:
            _wait_serving(replica)
        drivers = {r.name: SlackDriver(r.url, fake, SIGNING_SECRET) for r in replicas}
        for driver in drivers.values():
            stack.callback(driver.close)

        def driver() -> SlackDriver:
            return drivers[rng.choice(replicas).name]

        def command(user: str, ids: list[str], via: SlackDriver) -> None:
            with tally.lock:
                tally.commands += 1
            try:
                response, _ = via.command("start " + " ".join(ids), user=user, channel=CHANNEL)
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                with tally.lock:
                    tally.commands_acked += 1

        def click(confirmation: Confirmation, user: str, action: str, via: SlackDriver) -> None:
            with tally.lock:
                tally.clicks += 1
            try:
                response, key = via.click(confirmation, action, user=user)
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                with tally.lock:
                    tally.acked_clicks.append((confirmation.request_id, user, action, key))

        clicked: set[int] = set()

        def open_confirmations() -> list[tuple[Confirmation, str]]:
            found = []
            for message in fake.channel_messages(CHANNEL):
                values = button_values(message)
                mention = re.search(r"<@(U\w+)>", message.text)
                if values and mention and int(values[0]) not in clicked:
                    found.append((Confirmation(CHANNEL, message.ts, int(values[0])), mention.group(1)))
            return found

        def together(*calls: Callable[[], None]) -> None:
            threads = [threading.Thread(target=c) for c in calls]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)

        killer_stop = threading.Event()

        krng = random.Random(seed + 7)  # the killer's own, so traffic and kills are each reproducible

        def killer() -> None:
            interval = mode["seconds"] / (mode["kills"] + 1)
            for n in range(mode["kills"]):
                if killer_stop.wait(interval * krng.uniform(0.5, 1.0)):
                    return
                for replica in replicas:  # one that could not start (Slack or the database away) is tried again
                    if not replica.alive():
                        replica.start()
                victim = krng.choice([r for r in replicas if r.alive()] or replicas)
                owner_prefix = f"{victim.name}/"
                with tally.lock:
                    tally.kill_times.append(time.monotonic())
                victim.kill()
                killed_at = time.monotonic()
                with tally.lock:
                    tally.kills += 1
                held = patient(lambda p=owner_prefix: _held_by(db, p))  # type: ignore[misc]
                at_once = n % 2 == 0 or replicas_count == 1
                if at_once:
                    time.sleep(krng.uniform(0, 1.0))
                    victim.start()
                took = patient(lambda h=held, p=owner_prefix: _wait_takeover(db, h, p, timeout=60))  # type: ignore[misc]
                if took is not None:
                    with tally.lock:
                        (tally.restarts_at_once if at_once else tally.takeovers_by_others).append(took - killed_at)
                if not at_once:
                    victim.start()
                wait_until(lambda v=victim: v.healthy() or not v.alive(), 30, f"{victim.name} to serve again")

        chaos = threading.Thread(target=killer, name="killer")
        chaos.start()
        schedule = FaultSchedule(
            faults=faults,
            seconds=mode["seconds"],
            fake=fake,
            simulator_url=simulator.url,
            cluster_dir=cluster_dir if backend == "postgres" else None,
            stop=threading.Event(),
        )
        schedule.start()
        deadline = time.monotonic() + mode["seconds"]
        while time.monotonic() < deadline:
            roll = rng.random()
            user = rng.choice(USERS)
            if roll < 0.04:  # the next StartInstances fails with an unknown outcome (not applied)
                simulator.fault({"action": "StartInstances", "status": 500, "code": "INTERNAL_ERROR"})
            elif roll < 0.35:
                ids = rng.sample(instances, rng.randint(1, 3))
                if rng.random() < 0.2:  # the same command twice at the same instant, to two replicas
                    a, b = driver(), driver()
                    together(
                        lambda u=user, i=ids, d=a: command(u, i, d),  # type: ignore[misc]
                        lambda u=user, i=ids, d=b: command(u, i, d),  # type: ignore[misc]
                    )
                else:
                    command(user, ids, driver())
                if rng.random() < 0.5:  # overlap: a neighbour's request takes one of the same ids and another
                    other = rng.choice([u for u in USERS if u != user])
                    command(other, [ids[0], rng.choice(instances)], driver())
            else:
                pending = open_confirmations()
                if pending:
                    rng.shuffle(pending)
                    batch = pending[: rng.randint(1, min(3, len(pending)))]
                    calls: list[Callable[[], None]] = []
                    for confirmation, requester in batch:
                        clicked.add(confirmation.request_id)
                        kind = rng.random()
                        a, b = driver(), driver()
                        calls.append(lambda c=confirmation, r=requester, d=a: click(c, r, action_ids.START, d))
                        if kind < 0.3:  # a double click landing on two replicas
                            calls.append(lambda c=confirmation, r=requester, d=b: click(c, r, action_ids.START, d))
                        elif kind < 0.45:  # Cancel racing Start
                            calls.append(lambda c=confirmation, r=requester, d=b: click(c, r, action_ids.CANCEL, d))
                    together(*calls)  # several confirmations at once: overlapping ones race for instances
            time.sleep(rng.uniform(0.05, 0.3))
        schedule.join(timeout=max(0.0, deadline - time.monotonic()) + faults.slack_outage_seconds + 60)
        schedule.finish()
        killer_stop.set()
        chaos.join()
        for replica in replicas:
            if not replica.alive():
                replica.start()
        for replica in replicas:
            _wait_serving(replica)
        settle_started = time.monotonic()
        late = _wait_settled(db)
        settle_seconds = time.monotonic() - settle_started
        calls = simulator.calls()
        violations = late + _check(db, fake, calls, tally)
        violations += wrong_finals(db, fake, calls, _statuses(simulator.url)) + stuck_pending(db)
        _print_counts(backend, replicas_count, db, tally, calls, settle_seconds, violations)
        print(json.dumps({"backend": backend, "faults": [w for _, w in schedule.log.events]}, indent=2))
        db.close()
        return violations


def _wait_serving(replica: Replica, timeout: float = 60) -> None:
    """Wait until a replica serves; on failure show the end of its log."""
    try:
        wait_until(replica.healthy, timeout, f"{replica.name} to serve")
    except AssertionError:
        print(f"chaos: {replica.name} did not serve; its log ends:", file=sys.stderr)
        print((replica.log_dir / f"{replica.name}.{replica.starts}.log").read_text()[-3000:], file=sys.stderr)
        raise


def _wait_settled(db: Database, *, stalled: float = 120.0, cap: float = 1200.0) -> list[str]:
    """Wait until everything is settled, as long as Slack's backlog still shrinks: every message goes through the
    one channel's gate (about one a second, as Slack paces it), so after Slack was away the replies owed queue up
    for minutes; delivered late is not lost. A backlog that stops shrinking for `stalled` seconds is."""
    started = last_progress = time.monotonic()
    smallest = None
    while time.monotonic() - started < cap:
        if patient(lambda: _settled(db)):
            return []
        with db.session(readonly=True) as session:
            backlog = patient(lambda: outbox.pending_count(session))
        if smallest is None or backlog < smallest:
            smallest, last_progress = backlog, time.monotonic()
        if time.monotonic() - last_progress > stalled:
            return [f"did not settle: {backlog} messages owed to Slack and none delivered for {stalled:g} s"]
        time.sleep(1.0)
    return [f"did not settle within {cap:g} s"]


def _held_by(db: Database, owner_prefix: str) -> list[int]:
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


def _wait_takeover(db: Database, held: list[int], owner_prefix: str, timeout: float) -> float | None:
    """Wait until another process owns (or has finished) every request the killed one held; return when."""
    if not held:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.session(readonly=True) as session:
            rows = session.execute(
                select(Operation.lease_owner, Operation.outcome_posted_at, Operation.state).where(
                    Operation.id.in_(held)
                )
            ).all()
        if all(owner is None or not owner.startswith(owner_prefix) or posted is not None for owner, posted, _ in rows):
            return time.monotonic()
        time.sleep(0.1)
    return None


def _settled(db: Database) -> bool:
    """True when every click is decided, no request is active and every final outcome that is told was told."""
    with db.session(readonly=True) as session:
        if session.scalar(select(Click.id).where(Click.decided_at.is_(None)).limit(1)) is not None:
            return False
        active = session.scalar(select(Operation.id).where(Operation.state.in_(ACTIVE)).limit(1))
        # A call whose outcome the database never recorded is settled a lease after it, once its operation is over.
        if session.scalar(select(ZenlayerCall.id).where(ZenlayerCall.completed_at.is_(None)).limit(1)) is not None:
            return False
        untold = session.scalar(
            select(Operation.id)
            .where(
                Operation.state.in_(["done", "failed", "timed_out"]),
                Operation.outcome_posted_at.is_(None),
            )
            .limit(1)
        )
    return active is None and untold is None


def _check(db: Database, fake: FakeSlackWebApi, calls: list[dict[str, Any]], tally: Tally) -> list[str]:
    """Return every broken invariant, one line each."""
    violations: list[str] = []
    starts = [c for c in calls if c["action"] == "StartInstances"]
    accepted = Counter(i for c in starts if c["httpStatus"] == 200 for i in c["instanceIds"])
    for instance, count in accepted.items():
        if count > 1:
            violations.append(f"{instance}: {count} accepted StartInstances")
    with db.session(readonly=True) as session:
        requests = {r.id: r for r in session.scalars(select(Operation))}
        attempts = list(session.scalars(select(ZenlayerCall)))
        refused = {
            (rid, actor)
            for rid, actor in session.execute(
                text("SELECT request_id, actor FROM audit_events WHERE event = 'click_refused'")
            )
        }
    for request_id, user, action, key in tally.acked_clicks:
        request = requests.get(request_id)
        if any("Nothing more will happen" in t for t in _private(fake, key)):
            tally.honest_failures += 1  # not recorded (the database was away) and the clicker was told so
            continue
        if request is not None and request.state == "pending" and (request_id, user) not in refused:
            violations.append(f"request {request_id}: {action} click by {user} acknowledged but not taken")
    for request in requests.values():
        if request.decided_by is None or request.state in ("cancelled", "rejected", "withdrawn"):
            continue
        if request.state in ACTIVE:
            violations.append(f"request {request.id}: approved but still {request.state}")
            continue
        if request.state in ("done", "failed", "timed_out"):
            if request.outcome_posted_at is None:
                violations.append(f"request {request.id}: {request.state} but not told")
            thread = fake.thread(request.channel_id, request.message_ts or "")
            finals = [m for m in thread if FINAL_REPLY.match(m.text)]
            if len(finals) == 2 and _killed_between_posts(fake, request, tally.kill_times):
                # Posted, then the process died before recording it: its successor posted again (at least once).
                tally.repeated_after_kill += 1
            elif len(finals) != 1:
                violations.append(f"request {request.id}: {len(finals)} final replies in its thread")
    all_finals = sum(1 for m in fake.messages.values() if m.thread_ts and FINAL_REPLY.match(m.text))
    told = sum(1 for r in requests.values() if r.state in ("done", "failed", "timed_out"))
    if all_finals != told + tally.repeated_after_kill:
        violations.append(f"{all_finals} final replies posted for {told} finished requests")
    open_attempts = [a.id for a in attempts if a.completed_at is None]
    if open_attempts:
        violations.append(f"start attempts never completed: {open_attempts}")
    recorded = {a.zenlayer_request_id for a in attempts if a.zenlayer_request_id}
    unknown = sum(1 for a in attempts if a.outcome == "unknown")
    unrecorded = [c["requestId"] for c in starts if c["requestId"] not in recorded]
    if len(unrecorded) > unknown:
        violations.append(f"{len(unrecorded)} StartInstances calls without their audit row ({unknown} unknown)")
    if len(attempts) < len(starts):
        violations.append(f"{len(starts)} StartInstances calls but only {len(attempts)} attempt rows")
    now = datetime.now(UTC)
    ownerless = [
        r.id for r in requests.values() if r.state in ACTIVE and (r.lease_until is None or r.lease_until < now)
    ]
    if ownerless:
        violations.append(f"active requests without an owner: {ownerless}")
    return violations


def _private(fake: FakeSlackWebApi, key: str) -> list[str]:
    """The texts posted to one response_url."""
    return [str(body.get("text", "")) for body in fake.responses(key)]


def _statuses(simulator_url: str) -> dict[str, str]:
    """Every instance's status at the simulator now."""
    rows = httpx.get(f"{simulator_url}/_simulator/instances", timeout=10).json()["instances"]
    return {row["instanceId"]: row["instanceStatus"] for row in rows}


def _killed_between_posts(fake: FakeSlackWebApi, request: Operation, kill_times: list[float]) -> bool:
    """True when a replica was killed between the first and the second final reply of a request."""
    posts = sorted(
        c.at
        for c in fake.calls_to("chat.postMessage")
        if c.args.get("thread_ts") == request.message_ts and FINAL_REPLY.match(str(c.args.get("text", "")))
    )
    return len(posts) == 2 and any(posts[0] <= t <= posts[1] for t in kill_times)


def _print_counts(
    backend: str,
    replicas: int,
    db: Database,
    tally: Tally,
    calls: list[dict[str, Any]],
    settle_seconds: float,
    violations: list[str],
) -> None:
    """Print the counts of one scenario."""
    with db.session(readonly=True) as session:
        states = Counter(session.scalars(select(Operation.state)))
        attempts = Counter(a.outcome for a in session.scalars(select(ZenlayerCall)))
    starts = [c for c in calls if c["action"] == "StartInstances"]
    accepted = Counter(i for c in starts if c["httpStatus"] == 200 for i in c["instanceIds"])
    report = {
        "backend": backend,
        "replicas": replicas,
        "commands": tally.commands,
        "commands acknowledged": tally.commands_acked,
        "clicks": tally.clicks,
        "clicks acknowledged": len(tally.acked_clicks),
        "requests by state": dict(sorted(states.items())),
        "StartInstances calls": len(starts),
        "StartInstances answered 500 (outcome unknown)": sum(1 for c in starts if c["httpStatus"] == 500),
        "StartInstances by status": dict(Counter(str(c["httpStatus"]) for c in starts)),
        "start attempts by outcome": {str(k): v for k, v in attempts.items()},
        "max accepted starts per instance": max(accepted.values(), default=0),
        "kills": tally.kills,
        "takeovers by the restarted replica": len(tally.restarts_at_once),
        "longest takeover by the restarted replica (s)": round(max(tally.restarts_at_once, default=0.0), 2),
        "takeovers by another replica": len(tally.takeovers_by_others),
        "longest takeover by another replica (s)": round(max(tally.takeovers_by_others, default=0.0), 2),
        "final replies repeated because a kill fell between posting and recording": tally.repeated_after_kill,
        "clicks not recorded (database away), clicker told nothing happened": tally.honest_failures,
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
    print(f"chaos: mode {args.mode}, seed {seed}", flush=True)
    violations: list[str] = []
    if args.backend in ("postgres", "both"):
        with postgres_url() as (url, cluster_dir):
            if url is None:
                print("chaos: no PostgreSQL server on this machine; skipping the PostgreSQL scenario")
            else:
                violations += run_scenario("postgres", url, args.mode, seed, 3, cluster_dir)
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="vm-bot-chaos-db-") as tmp:
            violations += run_scenario("sqlite", f"sqlite:///{tmp}/vm-bot.db", args.mode, seed + 1, 2)
    print(f"chaos: {'FAILED, ' + str(len(violations)) + ' violation(s)' if violations else 'all invariants held'}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
