"""Socket Mode end to end: with SLACK_APP_TOKEN set the bot connects out to a fake Socket Mode endpoint,
receives commands and clicks as envelopes and acknowledges them over the websocket; everything else is the
same fakes as HTTP mode (the Web API stand-in, response_url posts, the Zenlayer simulator)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from bot.config import Settings
from bot.server import RunningBot
from bot.slack import action_ids
from bot.slack.driver import Confirmation, has_buttons
from bot.slack.fake_socket_mode import Ack, FakeSocketMode
from bot.slack.fake_web_api import FakeSlackWebApi, Message, message_text
from bot.zenlayer.simulator import ZenlayerSimulator
from tests.slack_support import bot_settings, running_bot

APP_TOKEN = "xapp-1-A0001-1234-test"
CHANNEL = "C0CHANNEL"


@dataclass
class SocketSlack:
    """Plays Slack's side over Socket Mode: command and click envelopes, and what people then see."""

    socket: FakeSocketMode
    web: FakeSlackWebApi
    _keys = itertools.count(1)

    def command(self, text: str, *, user: str = "U0REQUEST", channel: str = CHANNEL) -> tuple[Ack, str]:
        """Send `/vm text` as a slash_commands envelope; return the ack and the response_url key."""
        key = f"cmd-{next(self._keys)}"
        payload = {
            "token": "deprecated",
            "team_id": "T0001",
            "team_domain": "example",
            "channel_id": channel,
            "channel_name": "ops",
            "user_id": user,
            "user_name": "someone",
            "command": "/vm",
            "text": text,
            "api_app_id": "A0001",
            "is_enterprise_install": "false",
            "response_url": self.web.response_url(key),
            "trigger_id": "1.2.3",
        }
        return self.socket.slash_command(payload), key

    def click(self, confirmation: Confirmation, action_id: str, *, user: str = "U0REQUEST") -> tuple[Ack, str]:
        """Press a button on a confirmation as an interactive (block_actions) envelope."""
        key = f"click-{next(self._keys)}"
        payload = {
            "type": "block_actions",
            "user": {"id": user, "name": "someone", "team_id": "T0001"},
            "api_app_id": "A0001",
            "team": {"id": "T0001", "domain": "example"},
            "container": {"type": "message", "message_ts": confirmation.ts, "channel_id": confirmation.channel},
            "channel": {"id": confirmation.channel, "name": "ops"},
            "message": {"ts": confirmation.ts, "text": "", "blocks": self.message(confirmation).blocks},
            "response_url": self.web.response_url(key),
            "trigger_id": "1.2.3",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": action_ids.CONFIRM_BLOCK,
                    "value": str(confirmation.request_id),
                    "type": "button",
                    "action_ts": str(time.time()),
                }
            ],
        }
        return self.socket.interactive(payload), key

    def message(self, confirmation: Confirmation) -> Message:
        """Return the confirmation message as it stands now."""
        return self.web.messages[(confirmation.channel, confirmation.ts)]

    def wait_private(self, key: str, contains: str) -> str:
        """Wait for a private reply through one response_url containing some text, and return it."""

        def find() -> str | None:
            return next((t for t in map(message_text, self.web.responses(key)) if contains in t), None)

        return self.web.wait_for(find, what=f"a private reply containing {contains!r} under {key}")

    def wait_confirmation(self, channel: str = CHANNEL) -> Confirmation:
        """Wait for a confirmation with buttons in the channel."""

        def find() -> Confirmation | None:
            message = next((m for m in self.web.channel_messages(channel) if has_buttons(m)), None)
            return None if message is None else Confirmation(channel, message.ts, _request_id(message))

        return self.web.wait_for(find, what=f"a confirmation in {channel}")

    def wait_thread(self, confirmation: Confirmation, contains: str) -> list[str]:
        """Wait for a thread reply under the confirmation containing some text; return the whole thread."""

        def find() -> list[str] | None:
            texts = [m.text for m in self.web.thread(confirmation.channel, confirmation.ts)]
            return texts if any(contains in t for t in texts) else None

        return self.web.wait_for(find, timeout=15, what=f"a thread reply containing {contains!r}")


def _request_id(message: Message) -> int:
    """Return the request id the confirmation's buttons carry."""
    values = {e["value"] for b in message.blocks if b.get("type") == "actions" for e in b["elements"]}
    assert len(values) == 1, values
    return int(values.pop())


def start_calls(simulator: ZenlayerSimulator) -> list[list[str]]:
    """Return the instance ids of every StartInstances call the simulator answered."""
    return [list(c.instance_ids) for c in simulator.calls if c.action == "StartInstances"]


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
