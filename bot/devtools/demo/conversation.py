"""alice's and bob's side of the conversation, checked at every step, and what the simulator saw."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from bot.devtools.demo.processes import Child, Deadline, DemoFailed, wait_for
from bot.devtools.demo.render import Transcript
from bot.devtools.demo.script import ALICE, AUTO_STOPPED, BOB, CHANNEL, FINAL_PROGRESS, FINAL_REPLY, INSTANCES, RUN_FOR
from bot.devtools.slack_driver import Confirmation, SlackDriver
from bot.devtools.slack_messages import Message, message_text
from bot.devtools.slack_web_api import MALFORMED, FakeSlackWebApi
from bot.slack import action_ids

# --- the conversation ----------------------------------------------------------------------------------------


class Conversation:
    """Plays alice's and bob's side against the bot and checks each answer people should see."""

    def __init__(
        self, fake: FakeSlackWebApi, driver: SlackDriver, transcript: Transcript, bot: Child, deadline: Deadline
    ):
        self.fake = fake
        self.driver = driver
        self.transcript = transcript
        self.bot = bot
        self.deadline = deadline

    def follow(self, condition: Callable[[], Any], what: str) -> Any:
        """Print the conversation as it happens until condition holds."""

        def check() -> Any:
            self.transcript.catch_up()
            return condition()

        result = wait_for(check, self.deadline, what, watch=[self.bot])
        self.transcript.catch_up()
        return result

    def command(self, user: str, text: str) -> tuple[str, str]:
        """Type `/vm text` as user; show it and the bot's immediate private answer; return (response_url key, ack)."""
        self.transcript.user(user, f"/vm {text}")
        try:
            response, key = self.driver.command(text, user=user, channel=CHANNEL)
        except httpx.HTTPError as exc:
            raise DemoFailed(f"could not send /vm {text} to the bot: {exc!r}", self.bot) from exc
        self.transcript.private_to[key] = user
        if response.status_code != 200:
            raise DemoFailed(f"the bot answered /vm {text} with HTTP {response.status_code}", self.bot)
        if response.content:
            # Slack shows a plain-text ack body as the message text, and a JSON one as a message.
            json_body = response.headers.get("content-type", "").startswith("application/json")
            self.transcript.private(user, response.json() if json_body else {"text": response.text})
        self.transcript.catch_up()
        return key, self.driver.ack_text(response) if response.content else ""

    def click(self, user: str, confirmation: Confirmation, action_id: str, label: str) -> str:
        """Press a button as user; return the response_url key for any private answer."""
        self.transcript.user(user, f"clicks [ {label} ]")
        try:
            response, key = self.driver.click(confirmation, action_id, user=user)
        except httpx.HTTPError as exc:
            raise DemoFailed(f"could not send the {label} click to the bot: {exc!r}", self.bot) from exc
        self.transcript.private_to[key] = user
        if response.status_code != 200:
            raise DemoFailed(f"the bot answered the {label} click with HTTP {response.status_code}", self.bot)
        return key

    def confirmation(self) -> Confirmation:
        """Wait for the confirmation with buttons in the channel."""
        message = self.follow(
            lambda: next((m for m in self.fake.channel_messages(CHANNEL) if _start_value(m)), None),
            "the confirmation with a Start button",
        )
        return Confirmation(CHANNEL, message.ts, int(_start_value(message) or 0))

    def thread_reply(self, confirmation: Confirmation, contains: str) -> None:
        """Wait for a thread reply under the confirmation containing some text."""
        self.follow(
            lambda: any(contains in m.text for m in self.fake.thread(CHANNEL, confirmation.ts)),
            f"a thread reply saying {contains!r}",
        )

    def play(self) -> None:
        """The conversation: alice lists and asks by name, bob is refused, alice confirms, the thread follows."""
        list_key, _ = self.command(ALICE, "list")
        listing = self.follow(
            lambda: next((m for m in map(message_text, self.fake.responses(list_key)) if "Start selected" in m), None),
            "alice's private list with Start selected",
        )
        if any(name not in listing for name in INSTANCES) or "db-1" in listing:
            raise DemoFailed(f"alice's list is not her team's web servers only: {listing!r}", self.bot)

        alice_key, _ = self.command(ALICE, "start " + " ".join(INSTANCES) + f" --for {RUN_FOR}")
        confirmation = self.confirmation()
        shown = self.fake.messages[(CHANNEL, confirmation.ts)].text
        if f"<@{ALICE}> wants to start {len(INSTANCES)} instances" not in shown:
            raise DemoFailed(f"the confirmation does not ask for {len(INSTANCES)} instances: {shown!r}", self.bot)

        _, refusal = self.command(BOB, f"start {INSTANCES[-1]}")  # refused in the acknowledgement itself
        if "You may not start" not in refusal:
            raise DemoFailed(f"bob was not refused as expected: {refusal!r}", self.bot)

        click_key = self.click(ALICE, confirmation, action_ids.START, "Start")
        self.thread_reply(confirmation, FINAL_REPLY)
        # The parent's last edit may come just before or just after the final reply; show it either way.
        self.follow(
            lambda: FINAL_PROGRESS in message_text(self.fake.messages[(CHANNEL, confirmation.ts)]),
            f"the confirmation to say {FINAL_PROGRESS!r}",
        )
        parent = self.fake.messages[(CHANNEL, confirmation.ts)]
        if _start_value(parent) or parent.edits == 0:
            raise DemoFailed("the confirmation still shows its buttons after Start", self.bot)
        unexpected = self.fake.responses(alice_key) + self.fake.responses(click_key)
        if unexpected:
            raise DemoFailed(f"alice got private replies nobody expected: {json.dumps(unexpected)}", self.bot)
        self.time_box(confirmation)
        refused = [(c.method, c.response.get("error")) for c in self.fake.rejections()]
        if any(error in MALFORMED for _, error in refused):
            raise DemoFailed(f"Slack would have refused messages of the bot: {refused}", self.bot)

    def time_box(self, confirmation: Confirmation) -> None:
        """The run's end: the reminder at half-time, alice's Extend, then the stop when the extended time is up."""
        reminder = self.follow(
            lambda: next((m for m in self.fake.thread(CHANNEL, confirmation.ts) if _value(m, action_ids.EXTEND)), None),
            "the reminder with Extend and Stop now",
        )
        extend_key = self.click(
            ALICE, Confirmation(CHANNEL, reminder.ts, confirmation.request_id), action_ids.EXTEND, "Extend"
        )
        self.follow(
            lambda: any("Extended by" in message_text(r) for r in self.fake.responses(extend_key)),
            "alice's private word that the run was extended",
        )
        self.thread_reply(confirmation, AUTO_STOPPED)
        self.follow(
            lambda: AUTO_STOPPED in message_text(self.fake.messages[(CHANNEL, confirmation.ts)]),
            f"the confirmation to say {AUTO_STOPPED!r}",
        )


def _value(message: Message, action_id: str) -> str | None:
    """Return the value of a message's button with this action id, or None when it has none."""
    for block in message.blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == action_id:
                return str(element.get("value"))
    return None


def _start_value(message: Message) -> str | None:
    """Return the request id on a message's Start button, or None when it has none."""
    for block in message.blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == action_ids.START:
                return str(element.get("value"))
    return None


def check_simulator(url: str) -> None:
    """Confirm at the simulator that alice's instances were started by one StartInstances call and stopped again by
    one graceful StopInstances call, and that nothing else was touched."""
    try:
        instances = httpx.get(f"{url}/_simulator/instances", timeout=5).json()["instances"]
        calls = httpx.get(f"{url}/_simulator/calls", timeout=5).json()["calls"]
    except httpx.HTTPError as exc:
        raise DemoFailed(f"could not ask the simulator what happened: {exc!r}") from exc
    statuses = {i["instanceName"]: i["instanceStatus"] for i in instances}
    ids = {i["instanceName"]: i["instanceId"] for i in instances}
    if any(status != "STOPPED" for status in statuses.values()):
        raise DemoFailed(f"the simulator reports {statuses}, not everything STOPPED again")
    wanted = sorted(ids[name] for name in INSTANCES)
    starts = [sorted(c["instanceIds"]) for c in calls if c["action"] == "StartInstances"]
    stops = [
        (sorted(c["instanceIds"]), c["params"].get("forceShutdown")) for c in calls if c["action"] == "StopInstances"
    ]
    if starts != [wanted] or stops != [(wanted, False)]:
        raise DemoFailed(f"expected one start and one graceful stop of {list(INSTANCES)}: saw {starts} and {stops}")
