"""Retention: `vm-bot db prune --older-than 90d` and PRUNE_OLDER_THAN delete finished work's old rows and nothing
that anything still waits on; audit events only with --audit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.config import ConfigError, load_settings
from bot.db.session import Database
from bot.devtools.slack_driver import Confirmation, SlackDriver, button_values
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import wait_until
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.grants import rules as grants
from bot.slack import action_ids
from tests.db_support import BACKENDS, empty_database_url, travel
from tests.slack_support import SIGNING_SECRET, bot_settings, running_bot

DAY = 86400.0
TABLES = ("operation_instances", "zenlayer_calls", "outbox", "audit_events")


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database_url(request.param, tmp_path) as url:
        yield url


@dataclass
class World:
    """Operations in every state that matters, left by a bot that then stopped; their ids by what they are."""

    db: Database
    ids: dict[str, int]

    def rows(self, table: str, name: str) -> int:
        """Count the rows of table that belong to one operation."""
        with self.db.session(readonly=True) as s:
            return int(s.scalar(text(f"SELECT COUNT(*) FROM {table} WHERE request_id = :id"), {"id": self.ids[name]}))  # noqa: S608

    def count(self, table: str, where: str = "1 = 1") -> int:
        with self.db.session(readonly=True) as s:
            return int(s.scalar(text(f"SELECT COUNT(*) FROM {table} WHERE {where}")) or 0)  # noqa: S608

    def state(self, name: str) -> str | None:
        with self.db.session(readonly=True) as s:
            return s.scalar(text("SELECT state FROM operations WHERE id = :id"), {"id": self.ids[name]})


def _state(db: Database, request_id: int) -> tuple[str, bool]:
    with db.session(readonly=True) as s:
        row = s.execute(
            text("SELECT state, outcome_posted_at FROM operations WHERE id = :id"), {"id": request_id}
        ).one()
    return row.state, row.outcome_posted_at is not None


@contextmanager
def _bot(url: str, fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, **env: str) -> Iterator[SlackDriver]:
    settings = bot_settings(database_url=url, slack_url=fake_slack.url, zenlayer_url=simulator.url, overrides=env)
    with running_bot(settings) as running:
        assert running.http is not None
        slack = SlackDriver(running.http.url, fake_slack, SIGNING_SECRET)
        try:
            yield slack
        finally:
            slack.close()


def build_world(url: str, fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, *, full: bool = True) -> World:
    """Drive a bot through Slack: done and told, cancelled; and (full) pending, watching, done but not yet told."""
    for name in ("web-3", "web-4", "web-5", "web-6"):
        simulator.add_instance(name)
    ids: dict[str, int] = {}
    with _bot(url, fake_slack, simulator) as slack:
        db = Database(url)
        with db.session() as session:
            grants.add_grants(session, "U0REQUEST", ["web-*"], granted_by="test")
        shown: dict[int, Confirmation] = {}

        def start(name: str, instance: str, channel: str = "") -> Confirmation:
            channel = channel or f"C0{name.upper()}"  # a channel each: Slack paces each to about a message a second
            slack.command(f"start {instance}", channel=channel)

            def new() -> Confirmation | None:
                for message in fake_slack.channel_messages(channel):
                    values = button_values(message)
                    if values and int(values[0]) not in shown:
                        return Confirmation(channel, message.ts, int(values[0]))
                return None

            confirmation = fake_slack.wait_for(new, 10, what=f"the confirmation of {instance}")
            shown[confirmation.request_id] = confirmation
            ids[name] = confirmation.request_id
            return confirmation

        slack.click(start("told", "web-1"), action_ids.START)
        wait_until(lambda: _state(db, ids["told"]) == ("done", True), timeout=20, what="web-1 done and told")
        slack.click(start("cancelled", "web-2"), action_ids.CANCEL)
        wait_until(
            lambda: (
                _state(db, ids["cancelled"])[0] == "cancelled"
                and not World(db, ids).count("outbox", f"request_id = {ids['cancelled']} AND pending_key IS NOT NULL")
            ),
            what="the cancelled confirmation edited",
        )
        if full:
            start("pending", "web-4")
            simulator.boot_seconds = 3600  # web-3 stays BOOTING: watched until the bot stops
            slack.click(start("watching", "web-3", "C0WATCH"), action_ids.START)
            wait_until(lambda: _state(db, ids["watching"])[0] == "watching", what="web-3 watched")
            simulator.boot_seconds = 0.3
            untold = start("untold", "web-5", "C0SLOW")
            fake_slack.rate_limit(3600, channel="C0SLOW")  # its outcome cannot be told for an hour
            slack.click(untold, action_ids.START)
            wait_until(lambda: _state(db, ids["untold"]) == ("done", False), timeout=20, what="web-5 done")
            # A time-boxed run: its start is done and told, its run still going when the bot stops.
            slack.click(start("running", "web-6 --for 1h", "C0RUN"), action_ids.START)
            wait_until(lambda: _state(db, ids["running"]) == ("done", True), timeout=20, what="web-6 done and told")
    if not full:
        return World(db, ids)
    with db.session() as session:  # a click a crashed replica acknowledged and never decided
        session.execute(
            text(
                "INSERT INTO clicks (request_id, user_id, decision, replica, created_at) "
                "VALUES (:id, 'U0REQUEST', 'start', 'gone/1', CURRENT_TIMESTAMP)"
            ),
            {"id": ids["pending"]},
        )
    return World(db, ids)


def _prune(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "db", "prune", *args],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_prune_deletes_old_finished_work_and_keeps_what_is_still_owed(
    url: str, fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, tmp_path: Path
) -> None:
    world = build_world(url, fake_slack, simulator)
    try:
        before = {(t, name): world.rows(t, name) for t in TABLES for name in world.ids}
        clicks = world.count("clicks")
        assert before[("operation_instances", "told")] == 1 and before[("zenlayer_calls", "told")] == 1

        travel(world.db, 30 * DAY)  # not old enough yet
        done = _prune(url, tmp_path, "--older-than", "90d")
        assert done.returncode == 0, done.stderr
        assert "deleted 0 rows of finished work older than 90d" in done.stdout

        travel(world.db, 61 * DAY)
        dry = _prune(url, tmp_path, "--older-than", "90d", "--dry-run")
        assert dry.returncode == 0 and "would delete" in dry.stdout, dry.stdout
        assert {(t, n): world.rows(t, n) for t in TABLES for n in world.ids} == before  # a dry run deletes nothing

        done = _prune(url, tmp_path, "--older-than", "90d")
        assert done.returncode == 0, done.stderr
        print(done.stdout)
        # Settled work: its instances, calls and delivered messages go; the operation row stays, named by audit.
        for name in ("told", "cancelled"):
            assert (world.rows("operation_instances", name), world.rows("zenlayer_calls", name)) == (0, 0)
            assert world.rows("outbox", name) == 0
            assert world.rows("audit_events", name) == before[("audit_events", name)] > 0
            assert world.state(name) is not None
        # Pending, watching and untold work keeps every row it had; of the messages, those delivered go whatever
        # their operation (as the sender's weekly rule has it: what was said is said), those still owed stay.
        kept = ("operation_instances", "zenlayer_calls", "audit_events")
        for name in ("pending", "watching", "untold", "running"):
            assert {t: world.rows(t, name) for t in kept} == {t: before[(t, name)] for t in kept}, name
        assert world.count("outbox", "pending_key IS NULL") == 0
        assert world.count("outbox", f"pending_key = 'final:{world.ids['untold']}'") == 1  # its outcome still owed
        assert world.count("clicks") == 1 < clicks  # the undecided click stays
        assert world.count("clicks", "decided_at IS NULL") == 1
        assert "audit events kept" in done.stdout

        audit_too = _prune(url, tmp_path, "--older-than", "90d", "--audit")
        assert audit_too.returncode == 0, audit_too.stderr
        assert world.count("audit_events") == 0
        assert world.count("operations", f"id IN ({world.ids['told']}, {world.ids['cancelled']})") == 0
        for name in ("pending", "watching", "untold", "running"):  # never an operation something still waits on
            assert world.state(name) is not None
            assert world.rows("operation_instances", name) == before[("operation_instances", name)]
        # The run past its end while the bot was down stays, for the bot to stop when it is back.
        assert world.rows("runs", "running") == 1
    finally:
        world.db.close()


def test_prune_refuses_less_than_a_day(url: str, tmp_path: Path) -> None:
    done = _prune(url, tmp_path, "--older-than", "90m")
    assert done.returncode == 2 and "--older-than must be at least 1d" in done.stderr, done.stderr
    assert _prune(url, tmp_path, "--older-than", "soon").returncode == 2


def test_prune_older_than_setting_is_a_duration_of_a_day_or_more() -> None:
    assert load_settings({"PRUNE_OLDER_THAN": "90d"}, slack=False, zenlayer=False).prune_older_than == 90 * DAY
    assert load_settings({}, slack=False, zenlayer=False).prune_older_than is None
    for bad in ("90m", "90", "ninety days"):
        with pytest.raises(ConfigError, match="PRUNE_OLDER_THAN"):
            load_settings({"PRUNE_OLDER_THAN": bad}, slack=False, zenlayer=False)


def test_the_setting_makes_every_replica_prune_hourly_and_never_audit(
    url: str, fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator
) -> None:
    world = build_world(url, fake_slack, simulator, full=False)
    try:
        audit = world.count("audit_events")
        travel(world.db, 91 * DAY)
        with _bot(url, fake_slack, simulator, PRUNE_OLDER_THAN="90d"):  # the sender prunes as it starts, then hourly
            wait_until(
                lambda: world.count("operation_instances") == 0 and world.count("clicks") == 0,
                timeout=10,
                what="the old rows pruned",
            )
        assert world.count("audit_events") >= audit
        assert world.count("operations") == 2
    finally:
        world.db.close()
