"""Delivery to Slack when Slack says no: permanent refusals end retries and are recorded, and a decision whose
confirmation cannot be edited is still told truthfully (signed requests, the Slack stand-in, the simulator)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bot.db import audit
from bot.db.session import Database
from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.operations import repository
from bot.slack import action_ids
from tests.slack_support import ask_to_start, start_calls, wait_until
from tests.zenlayer_support import stopped_simulator


def finished_event(database_url: str, request_id: int) -> dict[str, object] | None:
    """Return the detail of a request's `finished` audit event once its outcome is recorded as posted, else None."""
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            request = repository.record(session, request_id)
            if request is None or request.outcome_posted_at is None:
                return None
            for event in audit.latest(session, limit=200):
                if event.event == "finished" and event.request_id == request_id:
                    return audit.detail_of(event)
            return None
    finally:
        db.close()


@pytest.mark.parametrize("error", ["msg_too_long", "invalid_blocks"])
def test_a_reply_slack_refuses_for_good_is_not_retried_and_the_outcome_is_recorded(
    error: str,
    slack: SlackDriver,
    grant: Callable[..., None],
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
    database_url: str,
) -> None:
    confirmation = ask_to_start(slack, grant)
    fake_slack.fail_next("chat.postMessage", times=1000, error=error, channel=confirmation.channel)

    slack.click(confirmation, action_ids.START)

    detail = wait_until(lambda: finished_event(database_url, confirmation.request_id), what="the outcome recorded")
    assert detail["delivery_error"] == error
    assert detail["outcome"] == "done"
    assert start_calls(simulator) == [["web-1"]]
    refused = [c for c in fake_slack.rejections() if c.method == "chat.postMessage"]
    # Each reply tried once (start requested, progress, final) — not every tick until someone notices.
    assert 1 <= len(refused) <= 4, [c.args.get("text", "")[:60] for c in refused]


@pytest.mark.parametrize("error", ["invalid_auth", "token_revoked", "account_inactive"])
def test_an_uninstalled_app_ends_the_request_truthfully_instead_of_retrying_forever(
    error: str,
    slack: SlackDriver,
    grant: Callable[..., None],
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
    database_url: str,
) -> None:
    confirmation = ask_to_start(slack, grant)
    fake_slack.uninstall(error)

    _, key = slack.click(confirmation, action_ids.START)

    told = slack.wait_private(key, "Start confirmed")
    assert "Nothing more will happen" not in told
    assert error in told
    detail = wait_until(lambda: finished_event(database_url, confirmation.request_id), what="the outcome recorded")
    assert detail["delivery_error"] == error
    assert start_calls(simulator) == [["web-1"]]


def test_a_failed_edit_after_start_tells_the_truth_and_the_instance_starts(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator
) -> None:
    confirmation = ask_to_start(slack, grant)
    fake_slack.fail_next("chat.update", error="internal_error")  # the edit that shows the decision

    _, key = slack.click(confirmation, action_ids.START)

    told = slack.wait_private(key, "Start confirmed")
    assert "the instances are being started" in told and "internal_error" in told
    slack.wait_thread(confirmation, "All 1 instance RUNNING")
    assert start_calls(simulator) == [["web-1"]]
    assert not any("Nothing more will happen" in t for t in slack.private_replies(key))


def test_a_failed_edit_after_cancel_says_it_is_cancelled(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator
) -> None:
    confirmation = ask_to_start(slack, grant)
    fake_slack.fail_next("chat.update", error="internal_error")

    _, key = slack.click(confirmation, action_ids.CANCEL)

    told = slack.wait_private(key, "Cancelled")
    assert "nothing will be started" in told and "Nothing more will happen" not in told
    assert start_calls(simulator) == []


@pytest.fixture
def simulator() -> Iterator[ZenlayerSimulator]:
    """The simulator with enough stopped instances for one request each in a busy channel."""
    with stopped_simulator(12) as sim:
        yield sim


def test_a_429_on_one_channel_holds_back_only_that_channel(
    slack: SlackDriver,
    grant: Callable[..., None],
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    grant("U0REQUEST", "web-*")
    held = []
    for i in range(1, 11):  # more requests than the watcher has threads
        slack.command(f"start web-{i}", channel="C0HELD")
        held.append(slack.wait_confirmation("C0HELD", index=i - 1))
    slack.command("start web-12", channel="C0QUIET")
    quiet = slack.wait_confirmation("C0QUIET")
    fake_slack.rate_limit(20, channel="C0HELD", method="chat.postMessage")  # thread replies there: 429 for 20 s
    for confirmation in held:
        slack.click(confirmation, action_ids.START)
    # The channel is paced (~1 message/s): its thread replies come after the ten decisions are shown.
    wait_until(fake_slack.rejections, timeout=30, what="the held channel's first 429")

    slack.click(quiet, action_ids.START)

    slack.wait_thread(quiet, "All 1 instance RUNNING", timeout=8)  # long before C0HELD's Retry-After lapses
    assert len(start_calls(simulator)) == 11  # every held request still started
    first_429 = min(c.at for c in fake_slack.rejections())
    again = [
        c for c in fake_slack.calls_to("chat.postMessage") if c.args.get("channel") == "C0HELD" and c.at >= first_429
    ]
    # Slack was not asked again about the held channel before its Retry-After (one try per request at most).
    assert all(c.status == 429 for c in again) and len(again) <= len(held), len(again)
    assert all(c.at - first_429 < 20 for c in again)
    # Waiting out a Retry-After is expected, not a failure: no traceback per held request and tick.
    assert not [r for r in caplog.records if r.exc_info and "rate limited" in str(r.exc_info[1])]
