"""Replays: each signed request is accepted once, by whichever replica sees it first; a replay is acknowledged with
an empty 200 and does nothing. Over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text

from bot.db.session import Database
from bot.devtools.slack_driver import SlackDriver
from bot.domain import grants
from bot.domain.vocabulary import GrantAction
from bot.server import RunningBot
from tests.db_support import BACKENDS, empty_database_url, run_together
from tests.slack_support import wait_until

ADMIN, MALLORY = "U0ADMIN", "U0MALLORY"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every bot in these tests shares one database: an SQLite file, or a PostgreSQL schema."""
    with empty_database_url(request.param, tmp_path) as url:
        yield url


def sample(url: str, name: str, **labels: str) -> float:
    """Return one sample of the bot's /metrics (0 when absent)."""
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return 0.0


def replays(url: str) -> float:
    return sample(url, "vmbot_http_refused_total", reason="replay")


def commands(url: str, verb: str) -> float:
    """Commands a replica's listener ran (counted in the listener, before the acknowledgement)."""
    return sample(url, "vmbot_commands_total", verb=verb, outcome="accepted")


def signed_copy(slack: SlackDriver, text: str, user: str) -> tuple[str, int, str]:
    """Return the exact bytes Slack would send for `/vm text` (body, timestamp, signature), to send more than once."""
    body = urlencode(slack.command_payload(text, user=user, channel="C0CHANNEL")[0])
    timestamp = int(time.time())
    return body, timestamp, slack.verifier.generate_signature(timestamp=str(timestamp), body=body)


def grants_of(database_url: str, user: str) -> list[str]:
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            return [g.pattern for g in grants.list_grants(session, user)]
    finally:
        db.close()


def test_a_replayed_grant_is_acknowledged_and_changes_nothing(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
    grant: Callable[..., None],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running, slack = start_bot()
    assert running.http is not None
    url = running.http.url
    grant(ADMIN, "*", action=GrantAction.ADMIN)
    body, timestamp, signature = signed_copy(slack, f"grant <@{MALLORY}> --instances web-*", ADMIN)
    assert slack.post(body, timestamp=timestamp, signature=signature).status_code == 200
    wait_until(lambda: grants_of(database_url, MALLORY) == ["web-*"], what="the grant")
    _, revoked = slack.command(f"revoke <@{MALLORY}> --instances web-*", user=ADMIN)
    slack.wait_private(revoked, "Removed 1 grant")

    caplog.clear()
    with caplog.at_level(logging.INFO):
        replay = slack.post(body, timestamp=timestamp, signature=signature)

    assert (replay.status_code, replay.content) == (200, b"")
    assert commands(url, "grant") == 1  # the listener ran for the original only
    assert replays(url) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "a replay of a request accepted before" in warnings[0], warnings
    _, later = slack.command(f"revoke <@{MALLORY}> --instances web-*", user=ADMIN)  # answered after the replay
    slack.wait_private(later, "had no matching grants")
    assert grants_of(database_url, MALLORY) == []


def test_two_replicas_accept_the_same_bytes_once(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
) -> None:
    (first, slack_a), (second, slack_b) = start_bot(), start_bot()
    assert first.http is not None and second.http is not None
    a, b = first.http.url, second.http.url

    body, timestamp, signature = signed_copy(slack_a, "help", "U0REQUEST")
    assert slack_a.post(body, timestamp=timestamp, signature=signature).status_code == 200
    replay = slack_b.post(body, timestamp=timestamp, signature=signature)
    assert (replay.status_code, replay.content) == (200, b"")
    assert (commands(a, "help"), commands(b, "help"), replays(a), replays(b)) == (1, 0, 0, 1)

    # The same bytes at the same instant to both: the database lets exactly one in.
    body, timestamp, signature = signed_copy(slack_a, "help", "U0REQUEST")
    answers = run_together(
        2, lambda i: (slack_a, slack_b)[i].post(body, timestamp=timestamp, signature=signature).status_code
    )
    assert answers == [200, 200]
    assert commands(a, "help") + commands(b, "help") == 2
    assert replays(a) + replays(b) == 2


def test_a_copy_signed_again_is_a_replay_of_its_trigger_id(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
) -> None:
    running, slack = start_bot()
    assert running.http is not None
    body, timestamp, _ = signed_copy(slack, "help", "U0REQUEST")

    assert slack.post(body, timestamp=timestamp).status_code == 200
    again = slack.post(body, timestamp=timestamp - 1)  # another signature, the same interaction (trigger_id)

    assert (again.status_code, again.content) == (200, b"")
    assert (commands(running.http.url, "help"), replays(running.http.url)) == (1, 1)


def test_requests_that_cannot_be_recorded_are_refused(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]], database_url: str
) -> None:
    running, slack = start_bot()
    assert running.http is not None
    other = Database(database_url)
    try:
        with other.engine.begin() as connection:
            connection.execute(text("DROP TABLE seen_requests"))
    finally:
        other.close()

    answer, _ = slack.command("help")

    assert answer.status_code == 503  # fail closed: a request that was not recorded could be replayed
    assert commands(running.http.url, "help") == 0
    assert sample(running.http.url, "vmbot_http_refused_total", reason="unavailable") == 1


def test_seen_requests_are_kept_through_the_window_then_pruned_cheaply(database_url: str) -> None:
    from bot.db.migrate import upgrade
    from bot.db.models import SeenRequest
    from bot.db.seen_requests import KEEP_SECONDS, PRUNE_EVERY_SECONDS, SeenRequests, SignedRequest

    upgrade(database_url)
    db = Database(database_url)
    now = [1_800_000_000.0]
    seen = SeenRequests(db, clock=lambda: now[0])
    try:
        old = SignedRequest("v0=old", "1.1.old", int(now[0]))
        assert seen.first_time(old) and not seen.first_time(old)
        same_instant = run_together(8, lambda _: seen.first_time(SignedRequest("v0=twice", None, int(now[0]))))
        assert sorted(same_instant) == [False] * 7 + [True]

        now[0] += KEEP_SECONDS - 1
        assert seen.prune() == 0  # still inside the window, as some replica's clock may see it
        now[0] += PRUNE_EVERY_SECONDS
        fresh = SignedRequest("v0=fresh", None, int(now[0]))
        assert seen.first_time(fresh)
        assert seen.prune() == 2  # the two old ones, with one indexed delete
        now[0] += 1
        assert seen.prune() == 0  # at most once a minute
        with db.session(readonly=True) as session:
            assert list(session.scalars(select(SeenRequest.signature))) == ["v0=fresh"]
    finally:
        db.close()
