"""Upgrades: a database the previous release (schema 0004: start_requests, request_instances, start_attempts) left
with requests mid-flight is migrated, and this release resumes every one of them where it stood."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import MetaData, create_engine, text

from bot.db import migrate
from bot.db.session import Database
from bot.devtools.slack_driver import Confirmation, SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import wait_until
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.server import RunningBot
from bot.slack import action_ids
from tests.db_support import BACKENDS, empty_database_url
from tests.slack_support import BOT_TOKEN, start_calls

PREVIOUS_RELEASE_HEAD = "0004"
CHANNEL = "C0OPS"
USER = "U0REQUEST"
OLD_REPLICA = "vm-bot-7d9f-old/1a2b3c"  # the previous release's process, gone: its lease lapsed a minute ago
FINAL = ":white_check_mark: All "  # the outcome's reply (bot/slack/views/thread.py)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database_url(request.param, tmp_path) as url:
        yield url


@dataclass
class Request:
    """A request as the previous release left it: its id, its confirmation in Slack, its instances."""

    name: str
    id: int
    channel: str
    ts: str
    instances: tuple[str, ...]

    @property
    def confirmation(self) -> Confirmation:
        return Confirmation(self.channel, self.ts, self.id)


class OldRows:
    """Writes rows as the previous release's code did, into its own tables (reflected from the 0004 schema)."""

    def __init__(self, url: str):
        self.engine = create_engine(url)
        self.tables = MetaData()
        self.tables.reflect(bind=self.engine)
        self.now = datetime.now(UTC)
        self.ids = iter(range(101, 200))

    def insert(self, table: str, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.tables.tables[table].insert().values(**values))

    def request(
        self,
        channel: str,
        ts: str,
        state: str,
        instances: dict[str, dict[str, Any]],
        *,
        attempt: str | None = None,
        **values: Any,
    ) -> int:
        """One start_requests row with its request_instances, claims (when active), an attempt and its audit row."""
        request_id = next(self.ids)
        ago = self.now - timedelta(seconds=30)
        self.insert(
            "start_requests",
            id=request_id,
            requester_id=USER,
            channel_id=channel,
            message_ts=ts,
            state=state,
            needs_approval=False,
            created_at=ago,
            updated_at=ago,
            expires_at=self.now + timedelta(seconds=600),
            **values,
        )
        for instance_id, columns in instances.items():
            self.insert(
                "request_instances",
                request_id=request_id,
                instance_id=instance_id,
                name=instance_id,
                zone="SEL-A",
                to_start=True,
                initial_status="STOPPED",
                **columns,
            )
            if state in ("approved", "starting", "watching"):
                self.insert("active_instance_claims", instance_id=instance_id, request_id=request_id, claimed_at=ago)
        if attempt is not None:  # one StartInstances batch: written before the call, completed after it
            done = attempt == "accepted"
            self.insert(
                "start_attempts",
                request_id=request_id,
                instance_ids=json.dumps(list(instances)),
                replica=OLD_REPLICA,
                created_at=ago,
                completed_at=ago if done else None,
                outcome="accepted" if done else None,
                zenlayer_request_id="zl-old-1" if done else None,
            )
        self.insert(
            "audit_events",
            created_at=ago,
            actor=USER,
            event="request_created",
            request_id=request_id,
            detail=json.dumps({"to_start": list(instances)}),
        )
        return request_id


def seed_previous_release(url: str, fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator) -> list[Request]:
    """Migrate to 0004 and leave requests in every state the previous release could be stopped in."""
    migrate.upgrade(url, PREVIOUS_RELEASE_HEAD)
    old = OldRows(url)
    slack = WebClient(token=BOT_TOKEN, base_url=fake_slack.url)
    lapsed = {"lease_owner": OLD_REPLICA, "lease_until": old.now - timedelta(seconds=60)}
    watch = {"started_at": old.now - timedelta(seconds=20), "watch_deadline": old.now + timedelta(seconds=600)}
    started = {"start_result": "accepted", "start_calls": 1, "zenlayer_request_id": "zl-old-1"}
    requests = []

    def add(name: str, instances: tuple[str, ...], state: str, columns: dict[str, Any], **values: Any) -> None:
        # A channel each: Slack paces messages per channel (about one a second), and each request owes several.
        channel = f"{CHANNEL}{len(requests)}"
        ts = str(slack.chat_postMessage(channel=channel, text=f"confirmation of {name}")["ts"])
        request_id = old.request(channel, ts, state, {i: dict(columns) for i in instances}, **values)
        requests.append(Request(name, request_id, channel, ts, instances))

    for instance in ("web-p", "web-a", "web-s1", "web-s2", "web-w1", "web-w2", "web-d"):
        simulator.add_instance(instance)
    old.insert("grants", user_id=USER, action="start", kind="id", pattern="web-*", channel_id="*",
               needs_approval=False, granted_by="cli", created_at=old.now)  # fmt: skip
    add("pending", ("web-p",), "pending", {"last_status": "STOPPED"})
    add("approved", ("web-a",), "approved", {"last_status": "STOPPED"}, decided_by=USER, decided_at=old.now)
    # Two starts the old process died in: its call reached Zenlayer for one (BOOTING now), not for the other.
    simulator.console_start("web-s1")
    add("starting, call applied", ("web-s1",), "starting", {"last_status": "STOPPED", "start_calls": 1},
        attempt="open", decided_by=USER, **lapsed)  # fmt: skip
    add("starting, call lost", ("web-s2",), "starting", {"last_status": "STOPPED", "start_calls": 1},
        attempt="open", decided_by=USER, **lapsed)  # fmt: skip
    for instance in ("web-w1", "web-w2"):
        simulator.set_status(instance, "BOOTING")  # they stay BOOTING until the test lets them run
    add("watching", ("web-w1", "web-w2"), "watching",
        {"last_status": "BOOTING", "reported_status": "BOOTING", **started},
        attempt="accepted", decided_by=USER, **watch, **lapsed)  # fmt: skip
    simulator.set_status("web-d", "RUNNING")
    add("done, not told", ("web-d",), "done",
        {"last_status": "RUNNING", "reported_status": "BOOTING", "outcome": "running", **started},
        attempt="accepted", decided_by=USER, finished_at=old.now - timedelta(seconds=5), **watch)  # fmt: skip
    old.engine.dispose()
    return requests


def finals(fake_slack: FakeSlackWebApi, request: Request) -> list[str]:
    """Return the outcome replies in a request's thread."""
    return [m.text for m in fake_slack.thread(request.channel, request.ts) if FINAL in m.text]


def test_requests_left_mid_flight_by_the_previous_release_are_resumed(
    url: str,
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
) -> None:
    requests = {r.name: r for r in seed_previous_release(url, fake_slack, simulator)}
    assert migrate.upgrade(url) == migrate.head_revision()
    db = Database(url)
    try:
        with db.session(readonly=True) as s:
            states = dict(s.execute(text("SELECT id, state FROM operations")).all())
        assert {name: states[r.id] for name, r in requests.items()} == {
            "pending": "pending",
            "approved": "approved",
            "starting, call applied": "starting",
            "starting, call lost": "starting",
            "watching": "watching",
            "done, not told": "done",
        }

        _, slack = start_bot(DATABASE_URL=url)
        watching = requests["watching"]
        # Resumed where it stood: polled (still BOOTING, so nothing to say yet) under this replica's lease.
        wait_until(lambda: _lease_owner(db, watching.id) not in (None, OLD_REPLICA), what="the watched request resumed")
        for instance in watching.instances:
            simulator.set_status(instance, "RUNNING")
        slack.click(requests["pending"].confirmation, action_ids.START)  # still clickable after the upgrade

        for request in requests.values():
            wait_until(lambda r=request: finals(fake_slack, r), timeout=20, what=f"the outcome of {request.name}")
        wait_until(lambda: _settled(db), timeout=20, what="every request told")
        calls = start_calls(simulator)
        assert sorted(calls) == [["web-a"], ["web-p"], ["web-s2"]], calls  # web-s1 was started: not again
        for request in requests.values():
            assert len(finals(fake_slack, request)) == 1, (request.name, finals(fake_slack, request))
            assert all(simulator.status(i) == "RUNNING" for i in request.instances)
        assert "All 2 instances RUNNING" in finals(fake_slack, watching)[0]
        with db.session(readonly=True) as s:
            audit = s.execute(text("SELECT COUNT(*) FROM audit_events WHERE event = 'request_created'")).scalar()
        assert audit == len(requests)  # the old audit trail came along, ids and all
    finally:
        db.close()


def _lease_owner(db: Database, request_id: int) -> str | None:
    with db.session(readonly=True) as s:
        return s.scalar(text("SELECT lease_owner FROM operations WHERE id = :id"), {"id": request_id})


def _settled(db: Database) -> bool:
    with db.session(readonly=True) as s:
        left = s.scalar(
            text(
                "SELECT COUNT(*) FROM operations WHERE state <> 'done' OR outcome_posted_at IS NULL "
                "OR EXISTS (SELECT 1 FROM outbox WHERE outbox.request_id = operations.id "
                "AND outbox.pending_key IS NOT NULL)"
            )
        )
    return left == 0
