"""Plays Slack's side of a conversation with vm-bot: signed slash commands, button clicks, and the App Home,
modals, shortcuts and Workflow Builder steps (`bot.devtools.slack_surfaces_driver`) over HTTP.

Used by the tests and by `vm-bot demo`, together with the Web API stand-in in `bot.devtools.slack_web_api`. Every
interaction that carries a trigger_id registers it with the stand-in, so the bot can open a modal with it.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.devtools.slack_messages import Message, message_error, message_text
from bot.devtools.slack_surfaces_driver import Delivery, SurfacesConversation
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.slack import action_ids


@dataclass
class Confirmation:
    """A confirmation message the bot posted, as a user in the channel sees it."""

    channel: str
    ts: str
    request_id: int


class SlackConversation(SurfacesConversation):
    """Slack's side of a conversation without a transport: the payloads Slack sends, and what people then see."""

    _counter = itertools.count(1)

    def __init__(self, fake: FakeSlackWebApi):
        super().__init__(fake)

    def command_payload(self, text: str, *, user: str, channel: str) -> tuple[dict[str, str], str]:
        """Return a slash command's fields as Slack sends them, and the response_url key for its replies."""
        key = f"cmd-{next(self._counter)}"
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
            "response_url": self.fake.response_url(key),
            "trigger_id": self.fake.issue_trigger(user, channel),
            "api_app_id": "A0001",
            "is_enterprise_install": "false",
        }
        return payload, key

    def click_payload(
        self, confirmation: Confirmation, action_id: str, *, user: str, value: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """Return a block_actions payload for a button on a confirmation, and its response_url key."""
        key = f"click-{next(self._counter)}"
        payload = {
            "type": "block_actions",
            "user": {"id": user, "name": "someone", "team_id": "T0001"},
            "team": {"id": "T0001", "domain": "example"},
            "api_app_id": "A0001",
            "container": {"type": "message", "message_ts": confirmation.ts, "channel_id": confirmation.channel},
            "channel": {"id": confirmation.channel, "name": "ops"},
            "response_url": self.fake.response_url(key),
            "trigger_id": self.fake.issue_trigger(user, confirmation.channel),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": action_ids.CONFIRM_BLOCK,
                    "value": value if value is not None else str(confirmation.request_id),
                    "type": "button",
                    "action_ts": str(time.time()),
                }
            ],
        }
        return payload, key

    def pick_payload(
        self,
        picker: list[dict[str, Any]],
        ticked: list[str],
        *,
        user: str,
        channel: str,
        action_id: str = action_ids.START_SELECTED,
    ) -> tuple[dict[str, Any], str]:
        """Return the block_actions payload of a click on a private picker with some instances ticked.

        As Slack does, `state.values` holds every checkbox group's selection, keyed by block id and action id.
        """
        key = f"pick-{next(self._counter)}"
        values: dict[str, Any] = {}
        for block in picker:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if element.get("type") == "checkboxes":
                    chosen = [o for o in element.get("options", []) if o.get("value") in ticked]
                    values[block["block_id"]] = {
                        element["action_id"]: {"type": "checkboxes", "selected_options": chosen}
                    }
        action: dict[str, Any] = {"action_id": action_id, "action_ts": str(time.time())}
        if action_id == action_ids.START_SELECTED:
            value = next(
                (
                    element.get("value", "pick")
                    for block in picker
                    for element in block.get("elements", [])
                    if block.get("type") == "actions"
                    if element.get("action_id") == action_ids.START_SELECTED
                ),
                "pick",
            )
            action.update(block_id=action_ids.PICK_SUBMIT_BLOCK, type="button", value=value)
        else:
            first = next(iter(values), f"{action_ids.PICK_BLOCK_PREFIX}0")
            action.update(block_id=first, type="checkboxes", selected_options=values.get(first, {}).get(action_id, {}))
        payload = {
            "type": "block_actions",
            "user": {"id": user, "name": "someone", "team_id": "T0001"},
            "team": {"id": "T0001", "domain": "example"},
            "api_app_id": "A0001",
            "container": {
                "type": "message",
                "message_ts": "1700000000.000100",
                "channel_id": channel,
                "is_ephemeral": True,
            },
            "channel": {"id": channel, "name": "ops"},
            "state": {"values": values},
            "response_url": self.fake.response_url(key),
            "trigger_id": self.fake.issue_trigger(user, channel),
            "actions": [action],
        }
        return payload, key

    # --- what people see -------------------------------------------------------------------------------

    def picker(self, key: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait for a private reply with a Start selected button under key and return its blocks."""

        def find() -> list[dict[str, Any]] | None:
            for body in reversed(self.fake.responses(key)):
                found = _blocks_of(body)
                if any(e.get("action_id") == action_ids.START_SELECTED for b in found for e in b.get("elements", [])):
                    return found
            return None

        return self.fake.wait_for(find, timeout, what=f"a private reply with Start selected under {key}")

    def private_replies(self, key: str) -> list[str]:
        """Return the texts of private replies sent through one response_url."""
        return [message_text(body) for body in self.fake.responses(key)]

    def wait_private(self, key: str, contains: str, timeout: float = 10.0) -> str:
        """Wait for a private reply containing some text and return it."""

        def find() -> str | None:
            return next((t for t in self.private_replies(key) if contains in t), None)

        return self.fake.wait_for(find, timeout, what=f"a private reply containing {contains!r} under {key}")

    def wait_confirmation(self, channel: str = "C0CHANNEL", index: int = -1, timeout: float = 10.0) -> Confirmation:
        """Wait for a confirmation with buttons in the channel and return it."""

        def find() -> Confirmation | None:
            messages = [m for m in self.fake.channel_messages(channel) if button_values(m)]
            if not messages or (index >= 0 and len(messages) <= index):
                return None
            message = messages[index]
            return Confirmation(channel, message.ts, int(button_values(message)[0]))

        return self.fake.wait_for(find, timeout, what=f"a confirmation in {channel}")

    def wait_reminder(self, confirmation: Confirmation, index: int = 0, timeout: float = 15.0) -> Confirmation:
        """Wait for the `index`th reply with buttons under a confirmation (a run's reminder) and return it, to be
        clicked like a confirmation."""

        def find() -> Confirmation | None:
            replies = [m for m in self.fake.thread(confirmation.channel, confirmation.ts) if button_values(m)]
            if len(replies) <= index:
                return None
            return Confirmation(confirmation.channel, replies[index].ts, int(button_values(replies[index])[0]))

        return self.fake.wait_for(find, timeout, what=f"reminder {index + 1} under {confirmation.ts}")

    def message(self, confirmation: Confirmation) -> Message:
        """Return the confirmation message as it stands now."""
        return self.fake.messages[(confirmation.channel, confirmation.ts)]

    def thread_texts(self, confirmation: Confirmation) -> list[str]:
        """Return the texts of the replies under a confirmation."""
        return [m.text for m in self.fake.thread(confirmation.channel, confirmation.ts)]

    def wait_thread(self, confirmation: Confirmation, contains: str, timeout: float = 15.0) -> list[str]:
        """Wait for a thread reply containing some text; return the whole thread."""

        def find() -> list[str] | None:
            texts = self.thread_texts(confirmation)
            return texts if any(contains in t for t in texts) else None

        return self.fake.wait_for(find, timeout, what=f"a thread reply containing {contains!r}")


class SlackDriver(SlackConversation):
    """Sends slash commands and button clicks to the bot exactly as Slack does in HTTP mode: signed form posts."""

    def __init__(self, bot_url: str, fake: FakeSlackWebApi, secret: str):
        super().__init__(fake)
        self.events_url = f"{bot_url}/slack/events"
        self.verifier = SignatureVerifier(secret)
        self.http = httpx.Client(timeout=10)
        self.refused_acks: list[tuple[str, str]] = []  # (command text, the error Slack would give its ack)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self.http.close()

    def post(
        self,
        body: str,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> httpx.Response:
        """Post a raw body (a form, or JSON for the Events API) with Slack's signature headers."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = signature or self.verifier.generate_signature(timestamp=ts, body=body) or ""
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}
        return self.http.post(self.events_url, content=body.encode(), headers=headers)

    def deliver_event(self, body: dict[str, Any]) -> Delivery:
        """Post an Events API body as Slack does: JSON, signed, to the events URL."""
        return delivery(self.post(json.dumps(body), content_type="application/json"))

    def deliver_interaction(self, payload: dict[str, Any]) -> Delivery:
        """Post an interactivity payload as Slack does: a signed form with one `payload` field (the options load
        URL is the same /slack/events in HTTP mode, so block_suggestion goes there too)."""
        return delivery(self.post(urlencode({"payload": json.dumps(payload)})))

    def command(
        self, text: str, *, user: str = "U0REQUEST", channel: str = "C0CHANNEL", **kwargs: Any
    ) -> tuple[httpx.Response, str]:
        """Send `/vm text`; return the HTTP response and the response_url key its private replies land under."""
        payload, key = self.command_payload(text, user=user, channel=channel)
        response = self.post(urlencode(payload), **kwargs)
        refused = self.refusal(response)
        if refused is not None:
            self.refused_acks.append((text, refused))
        return response, key

    def click(
        self, confirmation: Confirmation, action_id: str, *, user: str = "U0REQUEST", value: str | None = None
    ) -> tuple[httpx.Response, str]:
        """Press a button on a confirmation; return the response and the response_url key."""
        payload, key = self.click_payload(confirmation, action_id, user=user, value=value)
        return self.post(urlencode({"payload": json.dumps(payload)})), key

    def pick(
        self,
        picker: list[dict[str, Any]],
        ticked: list[str],
        *,
        user: str = "U0REQUEST",
        channel: str = "C0CHANNEL",
        action_id: str = action_ids.START_SELECTED,
    ) -> tuple[httpx.Response, str]:
        """Tick instances in a private picker and press Start selected (or send just a tick with action_id=PICK)."""
        payload, key = self.pick_payload(picker, ticked, user=user, channel=channel, action_id=action_id)
        return self.post(urlencode({"payload": json.dumps(payload)})), key

    @staticmethod
    def refusal(response: httpx.Response) -> str | None:
        """Return the error Slack would give for an acknowledgement's message, or None when it would show it."""
        if response.status_code != 200 or not response.content:
            return None
        try:
            body = response.json()
        except ValueError:
            return None  # a plain-text body is shown as it is
        return message_error(body) if isinstance(body, dict) else "invalid_blocks_format"

    @staticmethod
    def ack_text(response: httpx.Response) -> str:
        """Return what the user sees of an acknowledgement: its text and blocks, or the raw body."""
        try:
            body = response.json()
        except ValueError:
            return response.text
        return message_text(body) if isinstance(body, dict) else response.text


def delivery(response: httpx.Response) -> Delivery:
    """Return what the bot answered over HTTP: status and JSON body ({} when empty or not a JSON object)."""
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = {}
    return Delivery(response.status_code, body if isinstance(body, dict) else {}, response.text)


def _blocks_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Return a response_url body's blocks (sent as a list, or as a JSON string)."""
    value = body.get("blocks")
    if isinstance(value, str):
        value = json.loads(value)
    return list(value) if isinstance(value, list) else []


def button_values(message: Message) -> list[str]:
    """Return the values of the buttons in a message (empty when it has none)."""
    return [
        element["value"]
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
        if "value" in element
    ]


def has_buttons(message: Message) -> bool:
    """True when a message still shows action buttons."""
    return bool(button_values(message))
