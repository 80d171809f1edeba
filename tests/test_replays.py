"""Replays: each signed request is accepted once, by whichever replica sees it first; a replay is acknowledged (200)
and does nothing — its work is refused after the ack, so checking costs the acknowledgement nothing. Over real HTTP,
on SQLite and PostgreSQL."""

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
from bot.domain.vocabulary import GrantAction
from bot.grants import rules as grants
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


def answered(slack: SlackDriver, key: str) -> int:
    """How many private answers a command's work sent (its effect for `help`: a replay must add none)."""
    return len(slack.fake.responses(key))


def signed_copy(slack: SlackDriver, text: str, user: str) -> tuple[str, int, str, str]:
    """Return the exact bytes Slack would send for `/vm text` (body, timestamp, signature) to send more than once,
    and the key its private answers arrive under."""
    fields, key = slack.command_payload(text, user=user, channel="C0CHANNEL")
    body = urlencode(fields)
    timestamp = int(time.time())
    return body, timestamp, slack.verifier.generate_signature(timestamp=str(timestamp), body=body), key


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
    body, timestamp, signature, _ = signed_copy(slack, f"grant <@{MALLORY}> --instances web-*", ADMIN)
    assert slack.post(body, timestamp=timestamp, signature=signature).status_code == 200
    wait_until(lambda: grants_of(database_url, MALLORY) == ["web-*"], what="the grant")
    _, revoked = slack.command(f"revoke <@{MALLORY}> --instances web-*", user=ADMIN)
    slack.wait_private(revoked, "Removed 1 grant")

    caplog.clear()
    with caplog.at_level(logging.INFO):
        replay = slack.post(body, timestamp=timestamp, signature=signature)

    assert (replay.status_code, replay.content) == (200, b"")  # acknowledged like the original: an empty 200
    wait_until(lambda: replays(url) == 1, what="the replay counted")
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

    body, timestamp, signature, key = signed_copy(slack_a, "help", "U0REQUEST")
    assert slack_a.post(body, timestamp=timestamp, signature=signature).status_code == 200
    slack_a.wait_private(key, "vm-bot")
    replay = slack_b.post(body, timestamp=timestamp, signature=signature)
    assert replay.status_code == 200
    wait_until(lambda: replays(b) == 1, what="the replay counted by the replica that saw it")
    assert (answered(slack_a, key), replays(a)) == (1, 0)

    # The same bytes at the same instant to both: the database lets exactly one in.
    body, timestamp, signature, key = signed_copy(slack_a, "help", "U0REQUEST")
    answers = run_together(
        2, lambda i: (slack_a, slack_b)[i].post(body, timestamp=timestamp, signature=signature).status_code
    )
    assert answers == [200, 200]
    wait_until(lambda: replays(a) + replays(b) == 2, what="one of the two counted as a replay")
    assert answered(slack_a, key) == 1


def test_a_copy_signed_again_is_a_replay_of_its_trigger_id(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
) -> None:
    running, slack = start_bot()
    assert running.http is not None
    body, timestamp, _, key = signed_copy(slack, "help", "U0REQUEST")

    assert slack.post(body, timestamp=timestamp).status_code == 200
    slack.wait_private(key, "vm-bot")
    again = slack.post(body, timestamp=timestamp - 1)  # another signature, the same interaction (trigger_id)

    assert again.status_code == 200
    wait_until(lambda: replays(running.http.url) == 1, what="the replay counted")
    assert answered(slack, key) == 1


def test_requests_that_cannot_be_recorded_do_nothing_and_say_so(
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

    answer, key = slack.command("help")

    assert answer.status_code == 200
    # Fail closed: a request that was not recorded could be replayed, so its work does not run; the user hears why.
    assert "nothing was done" in slack.wait_private(key, "nothing was done")
    assert not any("What you can do" in t or "grants yet" in t for t in slack.private_replies(key))
    assert sample(running.http.url, "vmbot_http_refused_total", reason="unavailable") == 1


def test_seen_requests_are_kept_through_the_window_then_pruned_cheaply(database_url: str) -> None:
    import time

    from bot.db.migrate import upgrade
    from bot.db.models import SeenRequest
    from bot.db.seen_requests import KEEP_SECONDS, PRUNE_EVERY_SECONDS, SeenRequests, SignedRequest

    upgrade(database_url)
    db = Database(database_url)
    # The replica's clock only paces the chore; what is old is decided by the database's clock (the real one here).
    paced = [0.0]
    seen = SeenRequests(db, clock=lambda: paced[0])
    signed_at = int(time.time())
    try:
        old = SignedRequest("v0=old", "1.1.old", signed_at - KEEP_SECONDS - 5)
        assert seen.first_time(old) and not seen.first_time(old)
        same_instant = run_together(8, lambda _: seen.first_time(SignedRequest("v0=twice", None, old.timestamp)))
        assert sorted(same_instant) == [False] * 7 + [True]
        inside = SignedRequest("v0=inside", None, signed_at - KEEP_SECONDS + 60)  # some replica may still accept it
        assert seen.first_time(inside)

        assert seen.prune() == 2  # the two old ones, with one indexed delete
        paced[0] += 1
        assert seen.first_time(SignedRequest("v0=older", None, signed_at - KEEP_SECONDS - 60))
        assert seen.prune() == 0  # at most once a minute
        paced[0] += PRUNE_EVERY_SECONDS
        assert seen.prune() == 1
        with db.session(readonly=True) as session:
            assert list(session.scalars(select(SeenRequest.signature))) == ["v0=inside"]
    finally:
        db.close()
