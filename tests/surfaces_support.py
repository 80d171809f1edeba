"""What the surface tests share: the audit trail as `vm-bot audit` shows it, and a bot with time-boxed runs wired
(a fake of the lead's RunsPort: an edge of this work)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.db import audit
from bot.db.session import Database
from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.operations.opening import Prepared
from bot.operations.surface_runs import DurationRefused, DurationTerms, HomeRun
from tests.slack_support import SIGNING_SECRET, bot_settings, running_bot
from tests.transports import HttpSlack

REQUESTER = "U0REQUEST"
CAP = 4 * 3600.0


def audit_events(database_url: str, event: str) -> list[dict[str, Any]]:
    """Return the audit rows of one event, oldest first (what `vm-bot audit` shows)."""
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            rows = [e for e in reversed(audit.latest(session, limit=500)) if e.event == event]
            return [{"actor": e.actor, "request_id": e.request_id, **json.loads(e.detail)} for e in rows]
    finally:
        db.close()


class FakeRuns:
    """Time-boxed runs as the lead's issue will provide them: REQUESTER's runs, a cap of 4 h, what was asked."""

    def __init__(self, runs: Sequence[HomeRun] = ()):
        self.runs = list(runs)
        self.asked: list[tuple[str, str, int, str]] = []
        self.durations: list[str | None] = []

    def runs_of(self, user_id: str) -> Sequence[HomeRun]:
        return self.runs if user_id == REQUESTER else []

    def duration_terms(self, user_id: str, channel_id: str | None) -> DurationTerms | None:
        return DurationTerms(cap_seconds=CAP)

    def time_box(self, prepared: Prepared, duration: str | None) -> Prepared:
        if duration not in (None, *(text for text, _ in DurationTerms(CAP).choices())):
            raise DurationRefused("Your grants cap runs of these instances at 4 h.")
        self.durations.append(duration)
        return prepared

    def extend(self, user_id: str, request_id: int, instance_id: str) -> str:
        self.asked.append(("extend", user_id, request_id, instance_id))
        return f"Extended `{instance_id}` by 1 h."

    def stop(self, user_id: str, request_id: int, instance_id: str) -> str:
        self.asked.append(("stop", user_id, request_id, instance_id))
        return f"Stopping `{instance_id}`."


@contextmanager
def chat_with_runs(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str
) -> Iterator[tuple[HttpSlack, FakeRuns]]:
    """The bot with runs wired (REQUESTER has two, one with room to extend), and Slack's side of it over HTTP."""
    stop_at = datetime.now(UTC) + timedelta(hours=2)
    runs = FakeRuns(
        [
            HomeRun(7, "web-1", "web-1", "C0CHANNEL", "1700000001.000002", stop_at, 7200.0, can_extend=True),
            HomeRun(7, "web-2", "web-2", "C0CHANNEL", "1700000001.000002", stop_at, 7200.0, can_extend=False),
        ]
    )
    settings = bot_settings(database_url=database_url, slack_url=fake_slack.url, zenlayer_url=simulator.url)
    with running_bot(settings, runs=runs) as running:
        assert running.http is not None
        driver = SlackDriver(running.http.url, fake_slack, SIGNING_SECRET)
        try:
            yield HttpSlack(driver), runs
        finally:
            driver.close()
