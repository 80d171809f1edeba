"""Socket Mode end to end: with SLACK_APP_TOKEN set the bot connects out to a fake Socket Mode endpoint,
receives commands and clicks as envelopes and acknowledges them over the websocket; everything else is the
same fakes as HTTP mode (the Web API stand-in, response_url posts, the Zenlayer simulator). The flows both
transports share run over each of them in test_slack_flow.py (the `chat` fixture)."""

from __future__ import annotations

import time

import httpx
import pytest

from bot.config import Settings
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.server import RunningBot
from tests.fake_socket_mode import FakeSocketMode
from tests.slack_support import running_bot, wait_until
from tests.transports import SocketSlack


@pytest.fixture
def slack(socket_bot: RunningBot, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi) -> SocketSlack:
    """Slack's side of a Socket Mode conversation with the running bot."""
    return SocketSlack(socket_mode, fake_slack)


def test_connects_out_instead_of_listening(
    socket_bot: RunningBot, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi
) -> None:
    assert socket_bot.bot.settings.socket_mode
    assert len(fake_slack.calls_to("apps.connections.open")) == 1
    assert (socket_mode.handshakes, socket_mode.open_connections) == (1, 1)
    # Only health and metrics listen, so orchestrators probe both modes alike; Slack events are not served.
    assert socket_bot.http is not None
    base = socket_bot.http.url
    assert httpx.get(f"{base}/healthz").text == "ok\n"
    assert wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=10)
    assert "vmbot_commands" in httpx.get(f"{base}/metrics").text
    assert httpx.post(f"{base}/slack/events", content=b"command=/vm").status_code == 404


def test_usage_comes_back_in_the_ack_and_help_privately(slack: SocketSlack, fake_slack: FakeSlackWebApi) -> None:
    empty, _ = slack.command("status")
    unknown, _ = slack.command("destroy <@U0BOSS>")
    helped, key = slack.command("help")

    assert "/vm status ID" in empty.text
    assert "Unknown command `destroy`" in unknown.text and "<@U0BOSS>" not in unknown.text
    assert helped.payload is None  # help is tailored to the caller's grants, so it follows privately
    assert "ask a vm-bot admin" in slack.wait_private(key, "vm-bot")
    assert fake_slack.calls_to("chat.postMessage") == []


def test_keeps_working_when_slack_asks_it_to_reconnect(
    slack: SocketSlack, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi
) -> None:
    socket_mode.request_reconnect()

    socket_mode.wait_connected(handshakes=2)
    socket_mode.wait_for(lambda: socket_mode.open_connections == 1, what="the old connection to close")
    ack, _ = slack.command("status")

    assert "/vm status ID" in ack.text
    assert len(fake_slack.calls_to("apps.connections.open")) == 2


def test_a_command_right_after_a_reconnect_request_is_acked_in_time(
    slack: SocketSlack, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi
) -> None:
    slowest = 0.0
    for round_ in range(1, 4):
        socket_mode.request_reconnect()
        started = time.monotonic()
        # Sent at once, on the connection Slack asked the app to replace, as a user typing then would.
        ack, _ = slack.command("status")
        slowest = max(slowest, time.monotonic() - started)
        assert "/vm status ID" in ack.text
        socket_mode.wait_connected(handshakes=round_ + 1)
        socket_mode.wait_for(lambda: socket_mode.open_connections == 1, what="the old connection to close")

    # Slack's deadline for an ack; slack_sdk's built-in client took ~3.1 s here, waiting out its reader.
    assert slowest < 3.0, slowest
    assert len(fake_slack.calls_to("apps.connections.open")) == 4


def test_a_reconnect_loses_no_ack_on_either_connection(
    slack: SocketSlack, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi
) -> None:
    socket_mode.request_reconnect()
    before = slack.command("status")[0]  # on the old connection, while the new one is being opened
    socket_mode.wait_connected(handshakes=2)
    after = slack.command("status")[0]  # on the new one

    assert "/vm status ID" in before.text and "/vm status ID" in after.text
    socket_mode.wait_for(lambda: socket_mode.open_connections == 1, what="the old connection to close")
    assert socket_mode.handshakes == 2  # closing the old connection did not set off another reconnect


def test_a_failed_reconnect_keeps_the_working_connection(
    slack: SocketSlack, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi
) -> None:
    fake_slack.socket_mode_url = "ws://127.0.0.1:1/link/?ticket=nothing-listens-here"
    socket_mode.request_reconnect()
    wait_until(lambda: len(fake_slack.calls_to("apps.connections.open")) == 2, what="the reconnect attempt")

    ack, _ = slack.command("status")

    assert "/vm status ID" in ack.text  # acked over the connection that still works
    assert (socket_mode.handshakes, socket_mode.open_connections) == (1, 1)


def test_stop_is_prompt_and_closes_the_connection(
    socket_mode: FakeSocketMode, socket_settings: Settings, fake_slack: FakeSlackWebApi
) -> None:
    with running_bot(socket_settings):
        socket_mode.wait_connected()
        ack, _ = SocketSlack(socket_mode, fake_slack).command("status")
        assert "/vm status ID" in ack.text
        stopping = time.monotonic()

    assert time.monotonic() - stopping < 2.5  # under the 3 s slack_sdk's own close() alone would wait on its reader
    socket_mode.wait_for(lambda: socket_mode.open_connections == 0, timeout=2, what="the bot to hang up")
    assert socket_mode.handshakes == 1  # it did not reconnect on the way out
