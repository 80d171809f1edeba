"""A stand for benchmarks of time-boxed runs: one database with the services one replica has, the Zenlayer
simulator's instances web-1…web-N, and the real Sender + SlackCourier delivering the outbox to the Slack stand-in.

Runs are made by production code only: `Opening` opens `/vm start … --for`, the sender posts the confirmation, a
Start click is recorded and decided by `Clicks`, and an `Engine` stepped by hand calls StartInstances and polls
until every instance is RUNNING (the simulator boots at once), which starts the runs' clocks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from slack_sdk import WebClient
from sqlalchemy import func, select

from bot.db.lease import Lease, Owner
from bot.db.migrate import upgrade
from bot.db.models import Operation, OutboxMessage, Run
from bot.db.session import Database
from bot.delivery.sender import Sender
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.domain.actions import START
from bot.grants import rules as grants
from bot.grants.authority import Authority
from bot.operations import runs
from bot.operations.click_model import ClickOutcome, ClickRow, Decision
from bot.operations.clicks import Clicks
from bot.operations.engine import Engine
from bot.operations.opening import Opening
from bot.operations.records import RunState
from bot.slack.courier import SlackCourier
from bot.zenlayer.client import ZenlayerClient

USER = "U0RUNS0001"
PER_REQUEST = 10  # instances per `/vm start`
BATCH = 100  # requests opened, then clicked, then started together while building
LEASE_SECONDS = 150.0
WAIT_SECONDS = 120.0  # the longest any wait of the build may take


def wait_for(what: str, done: Callable[[], bool], timeout: float = WAIT_SECONDS, every: float = 0.05) -> float:
    """Wait until done() (checked every `every` s) and return the seconds it took; TimeoutError after `timeout`."""
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:g} s")
        time.sleep(every)
    return time.monotonic() - started


@dataclass
class Stand:
    """One replica's services over one database, with its sender running in a thread."""

    db: Database
    sim: ZenlayerSimulator
    client: ZenlayerClient
    fake: FakeSlackWebApi
    channels: int
    owner: Owner = field(default_factory=lambda: Owner("bench", "hand"))
    lease: Lease = field(default_factory=lambda: Lease(LEASE_SECONDS))
    threads: dict[int, str] = field(default_factory=dict)  # start's id -> its confirmation's ts (the thread)
    made: int = 0  # simulator instances made so far
    _sending: tuple[Sender, threading.Event, threading.Thread] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        authority = Authority(self.db, run_owner=runs.owner_of(self.db))
        self.opening = Opening(self.db, self.client, authority, confirm_ttl_seconds=600, approval_ttl_seconds=3600)
        self.clicks = Clicks(self.db, self.client, authority, owner=self.owner, lease=self.lease)
        self.hand = self.engine(workers=0)

    def engine(self, *, workers: int, poll_interval_seconds: float = 5.0) -> Engine:
        """An engine wired as app.py wires it (calls inline when workers is 0: stepped by hand)."""
        return Engine(
            self.db,
            self.client,
            owner=self.owner,
            lease=self.lease,
            poll_interval_seconds=poll_interval_seconds,
            watch_seconds=600,
            reminder_seconds=900,
            workers=workers,
            chores=[self.clicks.decide_orphans],
        )

    def add_runs(self, requests: int, run_seconds: float) -> list[int]:
        """Start `requests` time-boxed starts of PER_REQUEST instances each; return their ids once all run."""
        made: list[int] = []
        while len(made) < requests:
            made += self._add_batch(min(BATCH, requests - len(made)), run_seconds)
        return made

    def _add_batch(self, count: int, run_seconds: float) -> list[int]:
        """Open `count` starts, wait for their confirmations, click Start on each, step until every run runs."""
        opened: dict[int, str] = {}  # id -> channel
        for _ in range(count):
            ids = [f"web-{self.made + i + 1}" for i in range(PER_REQUEST)]
            for instance_id in ids:
                self.sim.add_instance(instance_id, "STOPPED")
            self.made += PER_REQUEST
            channel = f"C{(len(self.threads) + len(opened)) % self.channels:04d}"  # consecutive starts apart
            prepared = self.opening.open(self.opening.look_up(USER, channel, START, ids, run_seconds=run_seconds))
            assert prepared.request_id is not None, prepared
            opened[prepared.request_id] = channel
        posted: dict[int, str] = {}

        def all_posted() -> bool:
            posted.update(self.message_ts(list(opened)))
            return len(posted) == count

        wait_for("confirmations posted", all_posted)
        for request_id, channel in opened.items():
            click = self.clicks.record(ClickRow(request_id, USER, Decision.CONFIRM, channel, posted[request_id]))
            result = self.clicks.decide(click)
            assert result is not None and result.outcome == ClickOutcome.APPROVED, result
            self.threads[request_id] = posted[request_id]
        for _ in range(10):
            self.hand.step()
            if self.count_runs(list(opened), RunState.RUNNING) == count * PER_REQUEST:
                return list(opened)
        raise TimeoutError(f"{count} starts did not all reach RUNNING in 10 steps")

    def message_ts(self, request_ids: Sequence[int]) -> dict[int, str]:
        """The confirmations of these operations that are posted: id -> ts."""
        with self.db.session(readonly=True) as session:
            rows = session.execute(
                select(Operation.id, Operation.message_ts).where(
                    Operation.id.in_(list(request_ids)), Operation.message_ts.is_not(None)
                )
            )
            return {row.id: str(row.message_ts) for row in rows}

    def count_runs(self, request_ids: Sequence[int] | None, state: RunState) -> int:
        """How many runs (of these starts, or of all) are in a state."""
        query = select(func.count(Run.id)).where(Run.state == state.value)
        if request_ids is not None:
            query = query.where(Run.request_id.in_(list(request_ids)))
        with self.db.session(readonly=True) as session:
            return int(session.scalar(query) or 0)

    def pending(self) -> int:
        """Outbox rows not yet delivered."""
        with self.db.session(readonly=True) as session:
            return int(
                session.scalar(select(func.count(OutboxMessage.id)).where(OutboxMessage.pending_key.is_not(None))) or 0
            )

    def start_sending(self) -> None:
        """Deliver the outbox from now on, as a replica's sender does, in a thread."""
        web = WebClient(token="xoxb-benchmark", base_url=self.fake.url, timeout=30)  # noqa: S106 — the loopback fake
        sender = Sender(
            self.db, SlackCourier(self.db, web, owner=self.owner, lease=self.lease), owner=self.owner, lease=self.lease
        )
        stop = threading.Event()
        thread = threading.Thread(target=sender.run, args=(stop,), name="bench-sender", daemon=True)
        thread.start()
        self._sending = (sender, stop, thread)

    def stop_sending(self) -> None:
        """Stop delivering (what is being sent is finished first)."""
        if self._sending is not None:
            sender, stop, thread = self._sending
            stop.set()
            sender.wake()
            thread.join(timeout=30)
            self._sending = None

    def drain(self) -> float:
        """Wait until the sender has delivered everything owed to Slack; return how long that took."""
        return wait_for("the outbox delivered", lambda: self.pending() == 0, every=0.2)


@contextmanager
def stand(
    database_url: str, sim: ZenlayerSimulator, client: ZenlayerClient, fake: FakeSlackWebApi, *, channels: int
) -> Iterator[Stand]:
    """Migrate the database, grant USER web-*, and run the sender (the production Sender + SlackCourier) beside."""
    upgrade(database_url)
    db = Database(database_url)
    with db.session() as session:
        grants.add_grants(session, USER, ["web-*"], granted_by="benchmark")
    built = Stand(db, sim, client, fake, channels)
    built.start_sending()
    try:
        yield built
    finally:
        built.stop_sending()
        db.close()
