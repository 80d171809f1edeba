"""A rolling upgrade: the previous release (7cbf473, schema 0004) and this one side by side on one database for a
minute, the new replica having migrated it under the old one — run for real, the old release built from git, on
SQLite and (when the tests have a server) PostgreSQL in the same minute.

What "must not corrupt anything" means here. The old code cannot read the new schema: its requests live in tables
that are gone (start_requests → operations). So, while it runs beside the new replica:
- it says so: its /readyz answers 503 "the database is at migration <head>, not 0004" on every probe, so an
  orchestrator sends it nothing (and a rollout replaces it);
- whatever still reaches it (Socket Mode spreads events over every connection, ready or not) changes no
  operation: a command fails before writing anything, its watcher's queries fail without writing, it calls
  Zenlayer for nothing and holds no operation's lease;
- every request — finished, pending, watched, clicked on either replica — ends told exactly once, no instance is
  started twice, and the database's references hold;
- what it can still write lands in tables both schemas share, and the new code reads it as its own: a click it
  records is decided by the new replica like one a crashed replica left; a message it claims, fails to render and
  puts back with a backoff is sent by the new replica, once.
Two findings stay visible in the output (and the README's "Upgrading"): the old replica tells the clicker "Nothing
more will happen" although the recorded click then takes effect, and its sender delays messages it keeps claiming.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from bot.db import migrate
from bot.db.clock import as_utc, db_time
from bot.db.session import Database
from bot.devtools.slack_driver import Confirmation, SlackDriver, button_values
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import free_port, wait_until
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.slack import action_ids
from tests.db_support import POSTGRES_URL, empty_database_url
from tests.slack_support import SIGNING_SECRET, stand_in_env, start_calls

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS_RELEASE = "7cbf473"  # the last commit at schema 0004
SIDE_BY_SIDE_SECONDS = float(os.environ.get("VM_BOT_ROLLING_SECONDS", "60"))
USER = "U0REQUEST"
FINAL = ":white_check_mark: All "
LEASE_SECONDS = "5"  # the lapse after which the new replica decides a click the old one recorded, and takes leases


@pytest.fixture(scope="session")
def old_vm_bot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release installed from git into a throwaway venv (its wheel built like CI's wheel check, its
    dependencies — the same pins — taken from this environment); return its `vm-bot` script."""
    known = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], capture_output=True, check=False
    )
    if known.returncode != 0:
        pytest.skip(f"the previous release {PREVIOUS_RELEASE} is not in this clone's history (a shallow clone?)")
    home = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(home / "src", filter="data")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(home / "wheels"), str(home / "src")], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home / "venv")], check=True)
    python = home / "venv" / "bin" / "python"
    wheel = next((home / "wheels").glob("vm_bot-*.whl"))
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Its dependencies are this release's (the same version ranges): found after its own site-packages, so its
    # `bot` is the old one.
    Path(site, "vm_bot_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run(
        [str(python), "-c", "import bot; print(bot.__file__)"], capture_output=True, text=True, check=True, cwd=home
    ).stdout
    assert where.startswith(site), where
    return home / "venv" / "bin" / "vm-bot"


@dataclass
class Replica:
    """One `vm-bot run` process."""

    name: str
    process: subprocess.Popen[str]
    url: str
    log: Path
    driver: SlackDriver

    def readyz(self) -> tuple[int, str]:
        """Probe /readyz as an orchestrator does: its status and text (0 when it does not answer)."""
        try:
            answer = httpx.get(f"{self.url}/readyz", timeout=3)
        except httpx.TransportError as exc:
            return 0, type(exc).__name__
        return answer.status_code, answer.text.strip()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Deployment:
    """One database (a backend) with its replicas, instances and channels; what happened to it."""

    backend: str
    url: str
    prefix: str  # of its instance names and channels
    tmp: Path
    replicas: dict[str, Replica] = field(default_factory=dict)
    requests: dict[str, Confirmation] = field(default_factory=dict)
    old_readiness: list[tuple[int, str]] = field(default_factory=list)
    migrated_at: datetime | None = None  # by the database's clock
    reply_keys: dict[str, str] = field(default_factory=dict)  # what the old replica was sent after the migration

    def channel(self, name: str) -> str:
        return f"C0{self.prefix.upper()}{name.upper()}"

    def instance(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def env(self, replica: str, port: int, fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator) -> dict[str, str]:
        return stand_in_env(
            fake_slack,
            simulator,
            self.url,
            HOST="127.0.0.1",
            PORT=str(port),
            REPLICA_ID=replica,
            POLL_INTERVAL_SECONDS="0.2",
            LEASE_SECONDS=LEASE_SECONDS,
            COMMANDS_PER_MINUTE="0",
        )


@contextmanager
def serving(
    deployment: Deployment,
    name: str,
    command: list[str],
    fake: FakeSlackWebApi,
    sim: ZenlayerSimulator,
) -> Iterator[Replica]:
    """Start `command run` as replica `name` of the deployment and wait until it is ready; stop it afterwards."""
    port = free_port()
    log = deployment.tmp / f"{deployment.backend}-{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*command, "run"],
            env=deployment.env(f"{deployment.prefix}-{name}", port, fake, sim),
            cwd=deployment.tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    replica = Replica(
        name, process, f"http://127.0.0.1:{port}", log, SlackDriver(f"http://127.0.0.1:{port}", fake, SIGNING_SECRET)
    )
    try:
        wait_until(
            lambda: (process.poll() is None or pytest.fail(replica.output())) and replica.readyz()[0] == 200,
            timeout=60,
            what=f"{deployment.backend} {name} to be ready",
            interval=0.2,
        )
        yield replica
    finally:
        replica.driver.close()
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)


def new_confirmation(fake: FakeSlackWebApi, channel: str, timeout: float = 15) -> Confirmation:
    """Wait for the (only) confirmation with buttons in a channel of its own."""

    def find() -> Confirmation | None:
        for message in fake.channel_messages(channel):
            values = button_values(message)
            if values:
                return Confirmation(channel, message.ts, int(values[0]))
        return None

    return fake.wait_for(find, timeout, what=f"a confirmation in {channel}")


NEW_VM_BOT = [sys.executable, "-m", "bot"]


def finals(fake: FakeSlackWebApi, confirmation: Confirmation) -> list[str]:
    return [m.text for m in fake.thread(confirmation.channel, confirmation.ts) if FINAL in m.text]


def cli(command: Path, deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": deployment.url}
    done = subprocess.run(
        [str(command), *args], env=env, cwd=deployment.tmp, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def deployments(tmp_path: Path) -> Iterator[list[Deployment]]:
    """SQLite, and PostgreSQL when the tests have a server: both upgraded side by side in the same minute."""
    with ExitStack() as stack:
        found = []
        for backend in ["sqlite"] + (["postgres"] if POSTGRES_URL else []):
            url = stack.enter_context(empty_database_url(backend, tmp_path))
            found.append(Deployment(backend, url, backend[:2], tmp_path))
        yield found


def _db_now(url: str) -> datetime:
    db = Database(url)
    try:
        with db.session(readonly=True) as s:
            return as_utc(s.scalar(select(db_time())))
    finally:
        db.close()


def run_the_previous_release(
    stack: ExitStack, d: Deployment, old_vm_bot: Path, fake: FakeSlackWebApi, simulator: ZenlayerSimulator
) -> None:
    """Install the old schema and a grant with the old CLI, and serve with the old `vm-bot run`."""
    cli(old_vm_bot, d, "db", "upgrade")
    cli(old_vm_bot, d, "perms", "grant", USER, "--instances", f"{d.prefix}-*")
    for name in ("done", "pending", "watching", "oldclick", "new", "oldcmd"):
        simulator.add_instance(d.instance(name))
    d.replicas["old"] = stack.enter_context(serving(d, "old", [str(old_vm_bot)], fake, simulator))


def leave_requests_in_flight(
    deployments: list[Deployment], fake: FakeSlackWebApi, simulator: ZenlayerSimulator
) -> None:
    """Through the old replica: one start done and told, two confirmations pending, one start still BOOTING."""
    for d in deployments:
        old = d.replicas["old"].driver
        for name in ("done", "pending", "oldclick", "watching"):
            old.command(f"start {d.instance(name)}", channel=d.channel(name))
            d.requests[name] = new_confirmation(fake, d.channel(name))
        old.click(d.requests["done"], action_ids.START)
    for d in deployments:
        wait_until(lambda d=d: finals(fake, d.requests["done"]), timeout=20, what="the first start told")
    simulator.boot_seconds = 3600  # the watched ones stay BOOTING across the upgrade
    for d in deployments:
        d.replicas["old"].driver.click(d.requests["watching"], action_ids.START)
    for d in deployments:
        wait_until(lambda d=d: simulator.status(d.instance("watching")) == "BOOTING", what="a start BOOTING")
    simulator.boot_seconds = 0.3


def side_by_side(deployments: list[Deployment], fake: FakeSlackWebApi, simulator: ZenlayerSimulator) -> None:
    """A minute of both replicas: clicks and commands to the new one, and some to the old one (Socket Mode hands
    events to any open connection, ready or not), the watched instances turning RUNNING, both probed each second."""
    until = time.monotonic() + SIDE_BY_SIDE_SECONDS
    for d in deployments:
        new, old = d.replicas["new"].driver, d.replicas["old"].driver
        new.click(d.requests["pending"], action_ids.START)
        d.reply_keys["click"] = old.click(d.requests["oldclick"], action_ids.START)[1]
        d.reply_keys["command"] = old.command(f"start {d.instance('oldcmd')}", channel=d.channel("oldcmd"))[1]
        new.command(f"start {d.instance('new')}", channel=d.channel("new"))
        d.requests["new"] = new_confirmation(fake, d.channel("new"))
        new.click(d.requests["new"], action_ids.START)
    released = False
    while time.monotonic() < until:
        if not released and time.monotonic() > until - SIDE_BY_SIDE_SECONDS / 2:
            released = True
            for d in deployments:
                simulator.set_status(d.instance("watching"), "RUNNING")
        for d in deployments:
            d.old_readiness.append(d.replicas["old"].readyz())
            assert d.replicas["new"].readyz()[0] == 200, d.replicas["new"].output()[-3000:]
            assert d.replicas["old"].process.poll() is None, d.replicas["old"].output()[-3000:]
        time.sleep(1)


def check_nothing_corrupted(d: Deployment, fake: FakeSlackWebApi, simulator: ZenlayerSimulator) -> None:
    """The promises of this module's docstring, for one deployment once the old replica is gone."""
    head = migrate.head_revision()
    assert d.old_readiness and set(d.old_readiness) == {
        (503, f"not ready: the database is at migration {head}, not 0004: run `vm-bot db upgrade`")
    }, sorted(set(d.old_readiness))
    db = Database(d.url)
    try:
        wait_until(lambda: _unsettled(db) == [], timeout=60, what=f"every {d.backend} request settled", interval=0.5)
        with db.session(readonly=True) as s:
            instances = s.execute(text("SELECT instance_id FROM operation_instances")).scalars().all()
            old_replica = f"{d.prefix}-old/%"
            after = {"replica": old_replica, "since": d.migrated_at}
            calls = s.scalar(
                text("SELECT COUNT(*) FROM zenlayer_calls WHERE replica LIKE :replica AND created_at >= :since"), after
            )
            leased = s.scalar(
                text("SELECT COUNT(*) FROM operations WHERE lease_owner LIKE :replica AND finished_at IS NULL"), after
            )
            clicks = s.execute(
                text("SELECT request_id, outcome FROM clicks WHERE replica LIKE :replica AND created_at >= :since"),
                after,
            ).all()
            if d.backend == "sqlite":
                assert s.execute(text("PRAGMA integrity_check")).scalar() == "ok"
                assert s.execute(text("PRAGMA foreign_key_check")).all() == []
    finally:
        db.close()
    # Its command created nothing; the click it recorded was decided by the new replica, as a crashed one's is.
    assert d.instance("oldcmd") not in instances
    assert [tuple(c) for c in clicks] == [(d.requests["oldclick"].request_id, "approved")]
    assert (calls, leased) == (0, 0)  # it called Zenlayer for nothing and held no operation
    for name, confirmation in d.requests.items():
        assert len(finals(fake, confirmation)) == 1, (d.backend, name, finals(fake, confirmation))
        assert simulator.status(d.instance(name)) == "RUNNING", (d.backend, name)
    started = [ids for ids in start_calls(simulator) if ids[0].startswith(f"{d.prefix}-")]
    assert sorted(started) == sorted([d.instance(n)] for n in d.requests), started  # each once; oldcmd never
    # What the people who reached the old replica were told (a finding: the click took effect all the same).
    replies = [r["text"] for key in d.reply_keys.values() for r in fake.responses(key)]
    put_back = d.replicas["old"].output().count("could not deliver message")
    print(f"{d.backend}: the old replica answered {replies}; it claimed and put back {put_back} messages")


def _unsettled(db: Database) -> list[tuple[object, ...]]:
    """Return the operations not final, not told, or owed a message."""
    with db.session(readonly=True) as s:
        rows = s.execute(
            text(
                "SELECT id, state FROM operations WHERE state IN ('pending', 'approved', 'starting', 'watching') "
                "OR (state IN ('done', 'failed', 'timed_out') AND outcome_posted_at IS NULL) "
                "OR EXISTS (SELECT 1 FROM outbox WHERE outbox.request_id = operations.id AND pending_key IS NOT NULL)"
            )
        ).all()
    return [tuple(r) for r in rows]


def test_old_and_new_replicas_side_by_side_for_a_minute_corrupt_nothing(
    old_vm_bot: Path,
    deployments: list[Deployment],
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
) -> None:
    started = time.monotonic()
    with ExitStack() as stack:
        for d in deployments:
            run_the_previous_release(stack, d, old_vm_bot, fake_slack, simulator)
        leave_requests_in_flight(deployments, fake_slack, simulator)
        for d in deployments:  # the new release migrates under the old one, and serves beside it
            d.replicas["new"] = stack.enter_context(serving(d, "new", NEW_VM_BOT, fake_slack, simulator))
            assert migrate.current_revision(d.url) == migrate.head_revision()
            d.migrated_at = _db_now(d.url)
        side_by_side(deployments, fake_slack, simulator)
        for d in deployments:
            old = d.replicas["old"].process
            old.terminate()
            assert old.wait(timeout=60) == 0, d.replicas["old"].output()[-3000:]
        for d in deployments:
            check_nothing_corrupted(d, fake_slack, simulator)
    print(f"rolling upgrade of {', '.join(d.backend for d in deployments)} took {time.monotonic() - started:.0f} s")
