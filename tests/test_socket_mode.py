"""Socket Mode end to end: with SLACK_APP_TOKEN set the bot connects out to a fake Socket Mode endpoint,
receives commands and clicks as envelopes and acknowledges them over the websocket; everything else is the
same fakes as HTTP mode (the Web API stand-in, response_url posts, the Zenlayer simulator)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from bot.config import Settings
from bot.server import RunningBot
from bot.slack import action_ids
from bot.slack.driver import Confirmation, SlackConversation, has_buttons
from bot.slack.fake_socket_mode import Ack, FakeSocketMode
from bot.slack.fake_web_api import FakeSlackWebApi, message_text
from bot.zenlayer.simulator import ZenlayerSimulator
from tests.slack_support import bot_settings, running_bot, start_calls, wait_until

APP_TOKEN = "xapp-1-A0001-1234-test"
CHANNEL = "C0CHANNEL"


class SocketSlack(SlackConversation):
    """Plays Slack's side over Socket Mode: the same payloads as HTTP mode, sent as envelopes on the websocket."""

    def __init__(self, socket: FakeSocketMode, web: FakeSlackWebApi):
        super().__init__(web)
        self.socket = socket

    def command(self, text: str, *, user: str = "U0REQUEST", channel: str = CHANNEL) -> tuple[Ack, str]:
        """Send `/vm text` as a slash_commands envelope; return the ack (which Slack must accept) and the key."""
        payload, key = self.command_payload(text, user=user, channel=channel)
        ack = self.socket.slash_command(payload)
        assert ack.refused is None, f"Slack would refuse the ack of /vm {text}: {ack.refused}"
        return ack, key

    def click(self, confirmation: Confirmation, action_id: str, *, user: str = "U0REQUEST") -> tuple[Ack, str]:
        """Press a button on a confirmation as an interactive (block_actions) envelope."""
        payload, key = self.click_payload(confirmation, action_id, user=user)
        return self.socket.interactive(payload), key


@pytest.fixture
def socket_mode(fake_slack: FakeSlackWebApi) -> Iterator[FakeSocketMode]:
    """The fake Socket Mode endpoint, handed out by the Web API fake's apps.connections.open."""
    with FakeSocketMode() as fake:
        fake_slack.socket_mode_url = fake.url
        yield fake


@pytest.fixture
def socket_settings(fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str) -> Settings:
    """Settings for Socket Mode: an app-level token and no signing secret."""
    return bot_settings(
        database_url=database_url,
        slack_url=fake_slack.url,
        zenlayer_url=simulator.url,
        overrides={"SLACK_APP_TOKEN": APP_TOKEN, "SLACK_SIGNING_SECRET": ""},
    )


@pytest.fixture
def socket_bot(socket_mode: FakeSocketMode, socket_settings: Settings) -> Iterator[RunningBot]:
    """The bot, started in Socket Mode and connected."""
    with running_bot(socket_settings) as running:
        socket_mode.wait_connected()
        yield running


@pytest.fixture
def slack(socket_bot: RunningBot, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi) -> SocketSlack:
    """Slack's side of a Socket Mode conversation with the running bot."""
    return SocketSlack(socket_mode, fake_slack)


def test_connects_out_instead_of_listening(
    socket_bot: RunningBot, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi
) -> None:
    assert socket_bot.bot.settings.socket_mode and socket_bot.http is None
    assert len(fake_slack.calls_to("apps.connections.open")) == 1
    assert (socket_mode.handshakes, socket_mode.open_connections) == (1, 1)


def test_usage_comes_back_in_the_ack_and_help_privately(slack: SocketSlack, fake_slack: FakeSlackWebApi) -> None:
    empty, _ = slack.command("start")
    unknown, _ = slack.command("reboot <@U0BOSS>")
    helped, key = slack.command("help")

    assert "/vm start ID" in empty.text
    assert "Unknown command `reboot`" in unknown.text and "<@U0BOSS>" not in unknown.text
    assert helped.payload is None  # help is tailored to the caller's grants, so it follows privately
    assert "ask a vm-bot admin" in slack.wait_private(key, "vm-bot")
    assert fake_slack.calls_to("chat.postMessage") == []


def test_start_confirm_and_watch_until_running(
    slack: SocketSlack, grant: Callable[..., None], simulator: ZenlayerSimulator, fake_slack: FakeSlackWebApi
) -> None:
    grant("U0REQUEST", "web-*")

    ack, key = slack.command("start web-1")

    assert "Checking `web-1`" in ack.text
    confirmation = slack.wait_confirmation()
    shown = message_text(slack.message(confirmation))
    assert "<@U0REQUEST> wants to start 1 instance" in shown and "STOPPED" in shown
    assert start_calls(simulator) == []

    click, click_key = slack.click(confirmation, action_ids.START)

    assert click.payload is None  # a bare ack; the outcome shows in the channel
    thread = slack.wait_thread(confirmation, "All 1 instance RUNNING")
    assert "Start requested (Zenlayer requestId" in thread[0]
    assert start_calls(simulator) == [["web-1"]]
    parent = slack.message(confirmation)
    assert not has_buttons(parent) and "Confirmed by <@U0REQUEST>" in message_text(parent)
    assert fake_slack.responses(key) == [] and fake_slack.responses(click_key) == []


def test_user_without_grant_is_refused_privately(
    slack: SocketSlack, grant: Callable[..., None], simulator: ZenlayerSimulator, fake_slack: FakeSlackWebApi
) -> None:
    grant("U0REQUEST", "web-*")

    ack, _ = slack.command("start web-1", user="U0STRANGER")

    assert "You may not start `web-1`" in ack.text
    assert fake_slack.calls_to("chat.postMessage") == []
    assert start_calls(simulator) == []


def test_only_the_requester_can_confirm(
    slack: SocketSlack, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "web-*")
    grant("U0OTHER", "web-*")
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()

    _, key = slack.click(confirmation, action_ids.START, user="U0OTHER")

    assert "Only <@U0REQUEST> can confirm" in slack.wait_private(key, "Only")
    assert has_buttons(slack.message(confirmation))
    assert start_calls(simulator) == []


def test_keeps_working_when_slack_asks_it_to_reconnect(
    slack: SocketSlack, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi
) -> None:
    socket_mode.request_reconnect()

    socket_mode.wait_connected(handshakes=2)
    socket_mode.wait_for(lambda: socket_mode.open_connections == 1, what="the old connection to close")
    ack, _ = slack.command("start")

    assert "/vm start ID" in ack.text
    assert len(fake_slack.calls_to("apps.connections.open")) == 2


def test_a_command_right_after_a_reconnect_request_is_acked_in_time(
    slack: SocketSlack, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi
) -> None:
    slowest = 0.0
    for round_ in range(1, 4):
        socket_mode.request_reconnect()
        started = time.monotonic()
        # Sent at once, on the connection Slack asked the app to replace, as a user typing then would.
        ack, _ = slack.command("start")
        slowest = max(slowest, time.monotonic() - started)
        assert "/vm start ID" in ack.text
        socket_mode.wait_connected(handshakes=round_ + 1)
        socket_mode.wait_for(lambda: socket_mode.open_connections == 1, what="the old connection to close")

    # Slack's deadline for an ack; slack_sdk's built-in client took ~3.1 s here, waiting out its reader.
    assert slowest < 3.0, slowest
    assert len(fake_slack.calls_to("apps.connections.open")) == 4


def test_a_reconnect_loses_no_ack_on_either_connection(
    slack: SocketSlack, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi
) -> None:
    socket_mode.request_reconnect()
    before = slack.command("start")[0]  # on the old connection, while the new one is being opened
    socket_mode.wait_connected(handshakes=2)
    after = slack.command("start")[0]  # on the new one

    assert "/vm start ID" in before.text and "/vm start ID" in after.text
    socket_mode.wait_for(lambda: socket_mode.open_connections == 1, what="the old connection to close")
    assert socket_mode.handshakes == 2  # closing the old connection did not set off another reconnect


def test_a_failed_reconnect_keeps_the_working_connection(
    slack: SocketSlack, socket_mode: FakeSocketMode, fake_slack: FakeSlackWebApi
) -> None:
    fake_slack.socket_mode_url = "ws://127.0.0.1:1/link/?ticket=nothing-listens-here"
    socket_mode.request_reconnect()
    wait_until(lambda: len(fake_slack.calls_to("apps.connections.open")) == 2, what="the reconnect attempt")

    ack, _ = slack.command("start")

    assert "/vm start ID" in ack.text  # acked over the connection that still works
    assert (socket_mode.handshakes, socket_mode.open_connections) == (1, 1)


def test_stop_is_prompt_and_closes_the_connection(
    socket_mode: FakeSocketMode, socket_settings: Settings, fake_slack: FakeSlackWebApi
) -> None:
    with running_bot(socket_settings):
        socket_mode.wait_connected()
        ack, _ = SocketSlack(socket_mode, fake_slack).command("start")
        assert "/vm start ID" in ack.text
        stopping = time.monotonic()

    assert time.monotonic() - stopping < 1.0  # slack_sdk's own close() alone would wait up to 3 s on its reader
    socket_mode.wait_for(lambda: socket_mode.open_connections == 0, timeout=2, what="the bot to hang up")
    assert socket_mode.handshakes == 1  # it did not reconnect on the way out
