"""Posting a confirmation when Slack does not answer as hoped: a post that timed out is withdrawn and, once found
by a click, shown withdrawn; a 429 holds back only its channel and its user is told when to try again (signed
requests, the Slack stand-in, the Zenlayer simulator)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from bot.db.session import Database
from bot.devtools.slack_driver import SlackDriver, has_buttons
from bot.devtools.slack_messages import message_text
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.operations import repository
from bot.slack import action_ids
from tests.slack_support import (
    SIGNING_SECRET,
    bot_settings,
    running_bot,
    start_calls,
    wait_until,
)
from tests.zenlayer_support import stopped_simulator

SLACK_TIMEOUT = 1  # seconds the bot's Slack client waits for an answer here (10 in production)


@pytest.fixture
def simulator() -> Iterator[ZenlayerSimulator]:
    """The simulator with enough stopped instances for many separate requests."""
    with stopped_simulator(20) as sim:
        yield sim


@pytest.fixture
def slack(fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str) -> Iterator[SlackDriver]:
    """The bot with a short Slack timeout, and a driver that talks to it like Slack."""
    settings = bot_settings(database_url=database_url, slack_url=fake_slack.url, zenlayer_url=simulator.url)
    with running_bot(settings, slack_timeout=SLACK_TIMEOUT) as running:
        assert running.http is not None
        driver = SlackDriver(running.http.url, fake_slack, SIGNING_SECRET)
        try:
            yield driver
        finally:
            driver.close()


def request_state(database_url: str, request_id: int) -> str:
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            request = repository.record(session, request_id)
            assert request is not None
            return str(request.state)
    finally:
        db.close()


def test_a_confirmation_whose_post_timed_out_is_withdrawn_and_its_buttons_do_nothing(
    slack: SlackDriver,
    grant: Callable[..., None],
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
    database_url: str,
) -> None:
    grant("U0REQUEST", "web-*")
    fake_slack.delay_next("chat.postMessage", SLACK_TIMEOUT + 1.5)  # Slack posts it, but answers too late

    _, key = slack.command("start web-1")

    told = slack.wait_private(key, "withdrew", timeout=SLACK_TIMEOUT + 5)
    assert "did not confirm" in told and "Nothing was started" in told and "its buttons do nothing" in told
    assert "Something went wrong" not in " ".join(slack.private_replies(key))
    confirmation = slack.wait_confirmation()  # …and yet it is in the channel, with live-looking buttons
    assert request_state(database_url, confirmation.request_id) == "withdrawn"

    _, click_key = slack.click(confirmation, action_ids.START)

    refusal = slack.wait_private(click_key, "withdrawn")
    assert "Nothing was started" in refusal
    shown = wait_until(lambda: not has_buttons(slack.message(confirmation)), what="the message shown withdrawn")
    assert shown
    assert "Withdrawn" in message_text(slack.message(confirmation))
    assert request_state(database_url, confirmation.request_id) == "withdrawn"  # decided: never approved
    assert start_calls(simulator) == []


def test_a_confirmation_clicked_before_its_post_answered_is_not_withdrawn(
    slack: SlackDriver,
    grant: Callable[..., None],
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    grant("U0REQUEST", "web-*")
    fake_slack.delay_next("chat.postMessage", SLACK_TIMEOUT + 1.5)

    _, key = slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    slack.click(confirmation, action_ids.START)  # the user was quicker than Slack's answer

    slack.wait_thread(confirmation, "All 1 instance RUNNING")
    assert start_calls(simulator) == [["web-1"]]
    # The listener gave up on the post, found the request decided, and left it be.
    wait_until(lambda: any("but it was clicked" in r.getMessage() for r in caplog.records), what="the post given up")
    assert not any("withdrew" in t for t in slack.private_replies(key))
    assert slack.wait_thread(confirmation, "All 1 instance RUNNING")


def test_a_429_on_a_confirmation_holds_back_only_its_channel_and_delays_the_confirmations_without_losing_them(
    slack: SlackDriver,
    grant: Callable[..., None],
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
) -> None:
    grant("U0REQUEST", "web-*")
    fake_slack.rate_limit(3, channel="C0HELD", method="chat.postMessage")

    _, first = slack.command("start web-1", channel="C0HELD")
    told = slack.wait_private(first, "rate-limiting", timeout=5)  # at once, not after sleeping out Retry-After
    assert "your confirmation will appear there in about 3 s" in told
    # More commands there: each is told its confirmation is coming, none sleeps, none reaches Slack while held.
    keys = [slack.command(f"start web-{i}", channel="C0HELD")[1] for i in range(2, 9)]
    begun = time.monotonic()
    slack.command("start web-20", channel="C0QUIET")

    quiet = slack.wait_confirmation("C0QUIET", timeout=5)
    took = time.monotonic() - begun
    for key in keys:
        assert "will appear there in about" in slack.wait_private(key, "rate-limiting", timeout=5)
    held_posts = [c for c in fake_slack.calls_to("chat.postMessage") if c.args.get("channel") == "C0HELD"]
    assert len(held_posts) == 1, len(held_posts)  # only the first asked Slack; the rest waited for the channel
    assert took < 5
    slack.click(quiet, action_ids.START)
    slack.wait_thread(quiet, "All 1 instance RUNNING")
    assert start_calls(simulator) == [["web-20"]]
    # Once Slack's Retry-After has passed, every held confirmation is posted, paced, none lost.
    wait_until(lambda: len(fake_slack.channel_messages("C0HELD")) == 8, timeout=30, what="8 held confirmations")


def test_a_429_on_a_permalink_just_leaves_out_the_link(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    grant("U0REQUEST", "web-*")
    slack.command("start web-1")
    slack.wait_confirmation()
    fake_slack.rate_limit(20, method="chat.getPermalink")

    _, key = slack.command("start web-1")  # the same again: pointed at the pending confirmation, without a link

    told = slack.wait_private(key, "You already asked", timeout=5)  # not after sleeping out the Retry-After
    assert "your pending confirmation in this channel" in told
