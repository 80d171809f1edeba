"""Slack's two ways of reaching the bot (signed HTTP posts, Socket Mode envelopes) behind one interface."""

from __future__ import annotations

from typing import Any

from bot.devtools.slack_driver import Confirmation, SlackConversation, SlackDriver
from bot.devtools.slack_surfaces_driver import Delivery
from bot.devtools.slack_web_api import FakeSlackWebApi
from tests.fake_socket_mode import Ack, FakeSocketMode

CHANNEL = "C0CHANNEL"


class SocketSlack(SlackConversation):
    """Plays Slack's side over Socket Mode: the same payloads as HTTP mode, sent as envelopes on the websocket."""

    transport = "socket_mode"

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

    def say(self, text: str, *, user: str = "U0REQUEST", channel: str = CHANNEL) -> tuple[str, str]:
        """Send `/vm text`; return the ack's visible text ("" for a bare ack) and the response_url key."""
        ack, key = self.command(text, user=user, channel=channel)
        return ack.text, key

    def deliver_event(self, body: dict[str, Any]) -> Delivery:
        """Send an event_callback body as an events_api envelope; an ack is the 200 of HTTP mode."""
        return Delivery(200, self.socket.events_api(body).payload or {})

    def deliver_interaction(self, payload: dict[str, Any]) -> Delivery:
        """Send an interactivity payload as an interactive envelope; its ack may carry the answer."""
        return Delivery(200, self.socket.interactive(payload).payload or {})

    def press(self, confirmation: Confirmation, action_id: str, *, user: str = "U0REQUEST") -> tuple[str, str]:
        """Press a button; return the ack's visible text ("" for a bare ack) and the response_url key."""
        ack, key = self.click(confirmation, action_id, user=user)
        return ack.text, key


class HttpSlack(SlackConversation):
    """Plays Slack's side in HTTP mode through a SlackDriver, with the same say/press interface."""

    transport = "http"

    def __init__(self, driver: SlackDriver):
        super().__init__(driver.fake)
        self.driver = driver

    def command(self, text: str, *, user: str = "U0REQUEST", channel: str = CHANNEL) -> tuple[object, str]:
        """Send `/vm text` as a signed request."""
        return self.driver.command(text, user=user, channel=channel)

    def deliver_event(self, body: dict[str, Any]) -> Delivery:
        """Post an event_callback body, signed, as Slack does."""
        return self.driver.deliver_event(body)

    def deliver_interaction(self, payload: dict[str, Any]) -> Delivery:
        """Post an interactivity payload, signed, as Slack does."""
        return self.driver.deliver_interaction(payload)

    def say(self, text: str, *, user: str = "U0REQUEST", channel: str = CHANNEL) -> tuple[str, str]:
        """Send `/vm text`; return the ack's visible text and the response_url key (the ack must be a 200)."""
        response, key = self.driver.command(text, user=user, channel=channel)
        assert response.status_code == 200, response.text
        return self.driver.ack_text(response), key

    def press(self, confirmation: Confirmation, action_id: str, *, user: str = "U0REQUEST") -> tuple[str, str]:
        """Press a button; return the ack's visible text ("" for a bare ack) and the response_url key."""
        response, key = self.driver.click(confirmation, action_id, user=user)
        assert response.status_code == 200, response.text
        return self.driver.ack_text(response), key
