"""The Slack stand-in rejects what Slack rejects, and fails on demand as Slack does; driven by slack_sdk's client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from tests.fake_socket_mode import Ack
from tests.slack_support import wait_until


@pytest.fixture
def fake_slack() -> Iterator[FakeSlackWebApi]:
    """The stand-in, without the shared fixture's check: these tests send malformed messages on purpose."""
    with FakeSlackWebApi() as fake:
        yield fake


@pytest.fixture
def client(fake_slack: FakeSlackWebApi) -> Iterator[WebClient]:
    """A plain slack_sdk client (no retries) pointed at the stand-in."""
    yield WebClient(token="xoxb-test", base_url=fake_slack.url, retry_handlers=[])


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(text: str = "Start", value: str = "1") -> dict[str, Any]:
    return {
        "type": "actions",
        "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": "start", "value": value}
        ],
    }


def error_of(client: WebClient, **kwargs: Any) -> str | None:
    """Post a message and return Slack's error code, or None when it was accepted."""
    try:
        client.chat_postMessage(channel="C0CHANNEL", **kwargs)
    except SlackApiError as exc:
        return str(exc.response["error"])
    return None


ACCEPTED: list[dict[str, Any]] = [
    {"text": "x" * 40_000},
    {"text": "t", "blocks": [section("x" * 3000)]},
    {"text": "t", "blocks": [section("x")] * 50},
    {"text": "t", "blocks": [button("x" * 75, "1" * 2000)]},
    {"text": "t", "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 10}]},
    {"text": "t", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 150}}]},
]
REJECTED: list[tuple[dict[str, Any], str]] = [
    ({"text": "x" * 40_001}, "msg_too_long"),
    ({}, "no_text"),
    ({"text": "t", "blocks": [section("x" * 3001)]}, "invalid_blocks"),
    ({"text": "t", "blocks": [section("")]}, "invalid_blocks"),
    ({"text": "t", "blocks": [section("x")] * 51}, "invalid_blocks"),
    ({"text": "t", "blocks": [button("x" * 76)]}, "invalid_blocks"),
    ({"text": "t", "blocks": [button(value="1" * 2001)]}, "invalid_blocks"),
    (
        {"text": "t", "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}]},
        "invalid_blocks",
    ),
    (
        {"text": "t", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]},
        "invalid_blocks",
    ),
    ({"text": "t", "blocks": [{"type": "no_such_block"}]}, "invalid_blocks"),
    (
        {"text": "t", "blocks": [{"type": "section", "block_id": "b" * 256, "text": {"type": "mrkdwn", "text": "x"}}]},
        "invalid_blocks",
    ),
]


@pytest.mark.parametrize("message", ACCEPTED, ids=range(len(ACCEPTED)))
def test_messages_at_slacks_limits_are_accepted(client: WebClient, message: dict[str, Any]) -> None:
    assert error_of(client, **message) is None


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize(("message", "error"), REJECTED, ids=range(len(REJECTED)))
def test_messages_over_slacks_limits_are_rejected(
    client: WebClient, fake_slack: FakeSlackWebApi, message: dict[str, Any], error: str
) -> None:
    assert error_of(client, **message) == error
    assert fake_slack.channel_messages("C0CHANNEL") == []  # nothing was posted
    assert [c.response["error"] for c in fake_slack.rejections()] == [error]


def test_updates_are_checked_too(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    ts = client.chat_postMessage(channel="C0CHANNEL", text="short")["ts"]
    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel="C0CHANNEL", ts=ts, text="t", blocks=[section("x" * 3001)])
    assert caught.value.response["error"] == "invalid_blocks"
    assert fake_slack.messages[("C0CHANNEL", ts)].text == "short"


def test_response_url_posts_are_checked(fake_slack: FakeSlackWebApi) -> None:
    url = fake_slack.response_url("k")
    too_long = httpx.post(url, json={"text": "x" * 40_001})
    bad_blocks = httpx.post(url, json={"text": "t", "blocks": [section("x" * 3001)]})
    fine = httpx.post(url, json={"text": "fine"})

    assert (too_long.status_code, too_long.text) == (400, "msg_too_long")
    assert (bad_blocks.status_code, bad_blocks.text) == (400, "invalid_blocks")
    assert fine.status_code == 200
    assert [r["text"] for r in fake_slack.responses("k")] == ["fine"]  # only what the user could see


def test_a_rate_limit_holds_one_channel_for_its_retry_after(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    fake_slack.rate_limit(20, channel="C0BUSY")

    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0BUSY", text="held")
    client.chat_postMessage(channel="C0QUIET", text="goes through")

    assert caught.value.response.status_code == 429
    assert int(caught.value.response.headers["Retry-After"]) in (19, 20)
    assert [m.text for m in fake_slack.channel_messages("C0QUIET")] == ["goes through"]


def test_a_rate_limit_can_hold_one_method_and_lapses(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    ts = client.chat_postMessage(channel="C0CHANNEL", text="v1")["ts"]
    fake_slack.rate_limit(0.3, method="chat.update")

    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel="C0CHANNEL", ts=ts, text="v2")
    client.chat_postMessage(channel="C0CHANNEL", text="posts still work")
    assert caught.value.response.headers["Retry-After"] == "1"  # whole seconds, rounded up, as Slack sends
    wait_until(lambda: _update_passes(client, ts), timeout=5, what="the limit to lapse")


def _update_passes(client: WebClient, ts: str) -> bool:
    try:
        client.chat_update(channel="C0CHANNEL", ts=ts, text="v2")
    except SlackApiError:
        return False
    return True


@pytest.mark.parametrize("error", ["invalid_auth", "token_revoked", "account_inactive"])
def test_an_uninstalled_app_gets_permanent_auth_errors(
    client: WebClient, fake_slack: FakeSlackWebApi, error: str
) -> None:
    fake_slack.uninstall(error)
    for call in (lambda: client.auth_test(), lambda: client.chat_postMessage(channel="C0CHANNEL", text="t")):
        with pytest.raises(SlackApiError) as caught:
            call()
        assert caught.value.response["error"] == error
    fake_slack.reinstall()
    assert client.chat_postMessage(channel="C0CHANNEL", text="t")["ok"]


def test_a_fault_can_target_one_channel(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    fake_slack.fail_next("chat.postMessage", error="is_archived", channel="C0OLD")
    assert error_of(client, text="elsewhere") is None
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0OLD", text="t")
    assert caught.value.response["error"] == "is_archived"


def test_a_delayed_call_takes_effect_before_its_late_answer(fake_slack: FakeSlackWebApi) -> None:
    impatient = WebClient(token="xoxb-test", base_url=fake_slack.url, retry_handlers=[], timeout=1)
    fake_slack.delay_next("chat.postMessage", 2, channel="C0SLOW")

    with pytest.raises(TimeoutError):
        impatient.chat_postMessage(channel="C0SLOW", text="posted all the same")

    assert [m.text for m in fake_slack.channel_messages("C0SLOW")] == ["posted all the same"]
    assert impatient.chat_postMessage(channel="C0SLOW", text="next one")["ok"]  # only the next call was late


def test_acknowledgements_are_checked_in_both_modes() -> None:
    too_long = {"text": "x" * 40_001}
    assert SlackDriver.refusal(httpx.Response(200, json=too_long)) == "msg_too_long"
    assert SlackDriver.refusal(httpx.Response(200, json={"text": "fine"})) is None
    assert SlackDriver.refusal(httpx.Response(200)) is None  # a bare ack
    assert Ack("e1", too_long).refused == "msg_too_long"
    assert Ack("e2", None).refused is None
