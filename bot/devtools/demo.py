"""`vm-bot demo`: play a whole Slack conversation against the real bot on this machine and print what people see.

The Zenlayer simulator and the bot (`vm-bot run`, HTTP mode) run as separate processes on loopback; the Slack Web
API stand-in shared with the tests runs in this process; `SlackDriver` sends signed requests exactly as Slack does.
Nothing needs a Slack workspace, a Zenlayer account or the network.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx

from bot.config import SETTING_NAMES
from bot.devtools import demo_surfaces
from bot.devtools.slack_driver import Confirmation, SlackDriver
from bot.devtools.slack_web_api import BOT_USER_ID, MALFORMED, Call, FakeSlackWebApi, Message, message_text
from bot.devtools.support import Credentials, free_port
from bot.slack import action_ids

ALICE, BOB = "U0ALICE", "U0BOB"
CHANNEL, CHANNEL_NAME = "C0DEMO", "ops"
USERS = {ALICE: "alice", BOB: "bob", BOT_USER_ID: "vm-bot"}
CHANNELS = {CHANNEL: CHANNEL_NAME}
INSTANCES = ("web-1", "web-2")  # names; the simulator gives them opaque ids, as Zenlayer does
GROUP = "web-team"
# What the simulator serves: alice's two web servers in her team's resource group, and a database she may not start.
SIMULATED = (
    f"name=web-1,group={GROUP},zone=SEL-A,tag=team=web",
    f"name=web-2,group={GROUP},zone=FRA-A,tag=team=web",
    "name=db-1,group=data,zone=SEL-A,tag=team=data",
)
BOOT_SECONDS = 2
FINAL_REPLY = f"All {len(INSTANCES)} instances RUNNING"  # the last thread reply
FINAL_PROGRESS = f"All {len(INSTANCES)} RUNNING"  # the confirmation's progress line once done

DEADLINE_SECONDS = 50.0  # the whole run, so a broken bot fails the demo well inside a minute
STOP_GRACE_SECONDS = 5.0
SPEAKER_WIDTH = 8  # "@alice  " / "vm-bot  "
THREAD_PREFIX = "  └ "
LOG_TAIL_LINES = 40

# Every setting vm-bot reads; children get exactly these, so neither the caller's environment nor a `.env` leaks in.
VM_BOT_VARIABLES = SETTING_NAMES

EMOJI = {
    "alarm_clock": "⏰",
    "boom": "💥",
    "grey_question": "❔",
    "hourglass": "⌛",
    "hourglass_flowing_sand": "⏳",
    "information_source": "\u2139\ufe0f",
    "large_green_circle": "🟢",
    "large_orange_circle": "🟠",
    "large_yellow_circle": "🟡",
    "mag": "🔍",
    "no_entry": "⛔",
    "point_up": "☝️",
    "red_circle": "🔴",
    "rocket": "🚀",
    "speech_balloon": "💬",
    "warning": "⚠️",
    "wastebasket": "🗑️",
    "wave": "👋",
    "white_check_mark": "✅",
    "white_circle": "⚪",
    "x": "❌",
}

_ANGLE = re.compile(r"<([^<>\n]*)>")
_EMOJI_CODE = re.compile(r":([a-z0-9_+\-]+):")
_CODE_SPAN = re.compile(r"(`[^`\n]*`)")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")


class DemoFailed(Exception):
    """The conversation did not go as expected; the message says what was missing."""


# --- rendering Slack messages for a terminal (pure) --------------------------------------------------------------


def render_mrkdwn(text: str, users: Mapping[str, str] = USERS, channels: Mapping[str, str] = CHANNELS) -> str:
    """Render Slack mrkdwn as a person reads it: names for mentions, link labels, date fallbacks, emoji, no escapes."""

    def angle(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            return "@" + users.get(target[1:], label or target[1:])
        if target.startswith("#"):
            return "#" + channels.get(target[1:], label or target[1:])
        if target.startswith("!date^"):
            return label or target.split("^")[1]
        if target.startswith("!subteam^"):
            return label or "@" + target.removeprefix("!subteam^")
        if target.startswith("!"):
            return "@" + (label or target[1:])
        return label or target

    text = _ANGLE.sub(angle, text)
    text = _EMOJI_CODE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)
    # Bold markers go, except inside code spans, where an asterisk is literal (`web-*`).
    text = "".join(part if part.startswith("`") else _BOLD.sub(r"\1", part) for part in _CODE_SPAN.split(text) if part)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render_buttons(elements: Sequence[Mapping[str, Any]]) -> str:
    """Render an actions block's buttons as `[ Start ]  [ Cancel ]`."""
    labels = [str(e.get("text", {}).get("text", "")) for e in elements if e.get("type") == "button"]
    return "  ".join(f"[ {label} ]" for label in labels)


def render_checkboxes(elements: Sequence[Mapping[str, Any]]) -> list[str]:
    """Render checkboxes as `☐ web-1 — 7001… · SEL-A`, one line per option (☑ when ticked)."""
    lines = []
    for element in elements:
        if element.get("type") != "checkboxes":
            continue
        ticked = {o.get("value") for o in element.get("initial_options", [])}
        for option in element.get("options", []):
            box = "☑" if option.get("value") in ticked else "☐"
            description = option.get("description", {}).get("text")
            text = str(option.get("text", {}).get("text", ""))
            lines.append(f"{box} {text}" + (f" — {description}" if description else ""))
    return lines


def render_message(text: str, blocks: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Return the lines a message shows: its blocks when it has any (as Slack does), else its text."""
    if not blocks:
        return render_mrkdwn(text).splitlines() or [""]
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind in ("section", "header"):
            parts = [block["text"]] if "text" in block else []
            parts += list(block.get("fields", []))
            lines += [line for part in parts for line in render_mrkdwn(str(part.get("text", ""))).splitlines()]
            accessory = block.get("accessory")
            if isinstance(accessory, Mapping) and accessory.get("type") == "button":
                lines.append(render_buttons([accessory]))
        elif kind == "context":
            texts = [render_mrkdwn(str(e.get("text", ""))) for e in block.get("elements", []) if "text" in e]
            lines += "  ".join(texts).splitlines()
        elif kind == "actions":
            lines += render_checkboxes(block.get("elements", []))
            buttons = render_buttons(block.get("elements", []))
            if buttons:
                lines.append(buttons)
        elif kind == "divider":
            lines.append("────")
    return lines or render_mrkdwn(text).splitlines() or [""]


def format_entry(speaker: str, lines: Sequence[str], *, thread: bool = False) -> str:
    """Lay out one message: the speaker in a column, continuation lines aligned, thread replies indented."""
    prefix = THREAD_PREFIX if thread else ""
    head = prefix + speaker.ljust(SPEAKER_WIDTH - 2) + "  "
    indent = " " * len(head)
    body = list(lines) or [""]
    return "\n".join([head + body[0], *(indent + line for line in body[1:])]).rstrip() + "\n"


def edited_lines(before: Sequence[str], after: Sequence[str]) -> list[str]:
    """Return what an edit changed, as people notice it: the new or rewritten lines (all of them when none are)."""
    matcher = difflib.SequenceMatcher(a=list(before), b=list(after), autojunk=False)
    changed = [line for op, _, _, j1, j2 in matcher.get_opcodes() if op != "equal" for line in after[j1:j2]]
    return changed or list(after)


def private_lines(user: str, lines: Sequence[str]) -> list[str]:
    """Mark a message as the private reply Slack shows only to one person."""
    who = "@" + USERS.get(user, user)
    body = list(lines) or [""]
    return [f"(only {who} sees this) {body[0]}", *body[1:]]


# --- the transcript ------------------------------------------------------------------------------------------


class Transcript:
    """Turns the Slack stand-in's record of Web API calls into the channel as people see it, printing as it goes."""

    def __init__(self, fake: FakeSlackWebApi, out: TextIO):
        self.fake = fake
        self.out = out
        self.seen = 0
        self.private_to: dict[str, str] = {}  # response_url key -> the user it answers
        self.shown: dict[str, list[str]] = {}  # message ts -> its lines as last printed

    def write(self, entry: str) -> None:
        """Print one entry at once, so the conversation shows as it happens."""
        self.out.write(entry)
        self.out.flush()

    def user(self, user: str, text: str) -> None:
        """Show something a person typed or did."""
        self.write(format_entry("@" + USERS[user], [text]))

    def private(self, user: str, body: Mapping[str, Any]) -> None:
        """Show a private reply (an ack or a response_url post)."""
        if body.get("delete_original") or not (body.get("text") or body.get("blocks")):
            return
        lines = render_message(str(body.get("text", "")), _blocks(body.get("blocks")))
        self.write(format_entry("vm-bot", private_lines(user, lines)))

    def catch_up(self) -> None:
        """Print every Web API call the bot made since the last look."""
        calls = self.fake.calls[self.seen :]
        self.seen += len(calls)
        for call in calls:
            self._show(call)

    def _show(self, call: Call) -> None:
        """Print one call as what it makes people see; failed calls show nothing, as in Slack."""
        args = call.args
        if call.method == "response_url":
            self.private(self.private_to.get(str(args.get("_key")), "?"), args)
            return
        if call.status != 200 or not call.response.get("ok"):
            return
        if call.method == "chat.postMessage":
            lines = render_message(str(args.get("text", "")), _blocks(args.get("blocks")))
            self.shown[str(call.response.get("ts"))] = lines
            self.write(format_entry("vm-bot", lines, thread=bool(args.get("thread_ts"))))
        elif call.method == "chat.update":
            lines = render_message(str(args.get("text", "")), _blocks(args.get("blocks")))
            before = self.shown.get(str(args.get("ts")), [])
            self.shown[str(args.get("ts"))] = lines
            if lines == before:
                return  # an edit that changes nothing is invisible
            marker = "(edited) "
            changed = edited_lines(before, lines)
            self.write(format_entry("vm-bot", [marker + changed[0], *(" " * len(marker) + c for c in changed[1:])]))
        elif call.method == "chat.postEphemeral":
            lines = render_message(str(args.get("text", "")), _blocks(args.get("blocks")))
            self.write(format_entry("vm-bot", private_lines(str(args.get("user", "?")), lines)))


def _blocks(value: Any) -> list[dict[str, Any]]:
    """Decode blocks that arrive as a list or as a JSON string (form encoding)."""
    if not value:
        return []
    return list(json.loads(value) if isinstance(value, str) else value)


# --- processes -----------------------------------------------------------------------------------------------


class Deadline:
    """One time budget for the whole run."""

    def __init__(self, seconds: float):
        self.started = time.monotonic()
        self.ends = self.started + seconds

    def left(self) -> float:
        """Return the seconds remaining (never negative)."""
        return max(0.0, self.ends - time.monotonic())

    def elapsed(self) -> float:
        """Return the seconds since the start."""
        return time.monotonic() - self.started


class Child:
    """A child process whose stdout and stderr go to a log file."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path):
        self.name = name
        self.log = log
        with log.open("wb") as sink:
            # A new session keeps Ctrl-C in the terminal from reaching the child; we stop it ourselves, in order.
            self.proc = subprocess.Popen(  # noqa: S603 — our own interpreter and fixed arguments
                [sys.executable, "-m", "bot", *args],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        """Raise DemoFailed when the process has already exited."""
        code = self.proc.poll()
        if code is not None:
            raise DemoFailed(f"{self.name} exited early with code {code}", self)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_GRACE_SECONDS)

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last lines of the process's output."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def child_environment(settings: Mapping[str, str], source_root: Path) -> dict[str, str]:
    """Return the caller's environment without any vm-bot setting, plus exactly the demo's settings."""
    env = {k: v for k, v in os.environ.items() if k not in VM_BOT_VARIABLES}
    env.update(settings)
    # Children import the same vm-bot as this process, even when it runs from a source tree that is not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(source_root), os.environ.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(condition: Callable[[], Any], deadline: Deadline, what: str, *, watch: Sequence[Child] = ()) -> Any:
    """Poll condition until it returns something truthy; fail when a watched child dies or time runs out."""
    while True:
        result = condition()
        if result:
            return result
        for child in watch:
            child.check_alive()
        if deadline.left() <= 0:
            raise DemoFailed(f"timed out waiting for {what}", *watch)
        time.sleep(0.05)


def read_simulator_url(child: Child) -> str | None:
    """Return the URL the simulator printed once it listens, or None before that."""
    output = child.log.read_text(encoding="utf-8", errors="replace")
    match = re.search(r"vm-bot simulator listening on (http://\S+)", output)
    return match.group(1) if match else None


def healthy(url: str) -> bool:
    """True when the bot answers its health check."""
    try:
        return httpx.get(f"{url}/healthz", timeout=1).text == "ok\n"
    except httpx.HTTPError:
        return False


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

        alice_key, _ = self.command(ALICE, "start " + " ".join(INSTANCES))
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
        refused = [(c.method, c.response.get("error")) for c in self.fake.rejections()]
        if any(error in MALFORMED for _, error in refused):
            raise DemoFailed(f"Slack would have refused messages of the bot: {refused}", self.bot)


def _start_value(message: Message) -> str | None:
    """Return the request id on a message's Start button, or None when it has none."""
    for block in message.blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == action_ids.START:
                return str(element.get("value"))
    return None


def check_simulator(url: str) -> None:
    """Confirm at the simulator that alice's instances, and only they, are RUNNING after one StartInstances call."""
    try:
        instances = httpx.get(f"{url}/_simulator/instances", timeout=5).json()["instances"]
        calls = httpx.get(f"{url}/_simulator/calls", timeout=5).json()["calls"]
    except httpx.HTTPError as exc:
        raise DemoFailed(f"could not ask the simulator what happened: {exc!r}") from exc
    statuses = {i["instanceName"]: i["instanceStatus"] for i in instances}
    ids = {i["instanceName"]: i["instanceId"] for i in instances}
    if any(statuses.get(name) != "RUNNING" for name in INSTANCES) or statuses.get("db-1") != "STOPPED":
        raise DemoFailed(f"the simulator reports {statuses}, not just {', '.join(INSTANCES)} RUNNING")
    starts = [c["instanceIds"] for c in calls if c["action"] == "StartInstances"]
    if starts != [[ids[name] for name in INSTANCES]]:
        raise DemoFailed(f"expected one StartInstances call for {list(INSTANCES)}, the simulator saw {starts}")


# --- running it ----------------------------------------------------------------------------------------------


def run_demo(out: TextIO, err: TextIO, *, overrides: Mapping[str, str] | None = None) -> int:
    """Start everything, play the conversation, stop everything; return 0 only when it went as expected."""
    deadline = Deadline(DEADLINE_SECONDS)
    workdir = Path(tempfile.mkdtemp(prefix="vm-bot-demo-"))
    try:
        with ExitStack() as stack:
            try:
                _run(stack, workdir, deadline, out, err, overrides or {})
            except DemoFailed as failure:
                stack.close()  # stop the children first, so their logs are complete
                _report(failure, err)
                return 1
        summary = f"{', '.join(INSTANCES)} RUNNING at the simulator after one StartInstances call"
        print(
            f"\nDemo finished in {deadline.elapsed():.1f} s: the conversation went as expected ({summary}).", file=out
        )
        out.flush()
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(
    stack: ExitStack, workdir: Path, deadline: Deadline, out: TextIO, err: TextIO, overrides: Mapping[str, str]
) -> None:
    """Set up the simulator, the Slack stand-in and the bot, grant alice, and play the conversation."""
    fake = stack.enter_context(FakeSlackWebApi())
    credentials = Credentials.fresh("demo")
    signing_secret = credentials.slack_signing_secret
    bot_port = free_port()
    # Only what differs from the defaults: child_environment drops every other vm-bot setting.
    settings = {
        "SLACK_BOT_TOKEN": credentials.slack_bot_token,
        "SLACK_SIGNING_SECRET": signing_secret,
        "SLACK_API_URL": fake.url,
        "ZENLAYER_ACCESS_KEY_ID": credentials.zenlayer_access_key_id,
        "ZENLAYER_ACCESS_KEY_SECRET": credentials.zenlayer_access_key_secret,
        "DATABASE_URL": f"sqlite:///{workdir / 'vm-bot.db'}",
        "HOST": "127.0.0.1",
        "PORT": str(bot_port),
        "POLL_INTERVAL_SECONDS": "0.5",
        "START_TIMEOUT_SECONDS": "30",
        **overrides,
    }
    source_root = Path(__file__).resolve().parents[2]  # the tree holding the bot package
    env = child_environment(settings, source_root)

    sim_args = ["simulator", "--port", "0", "--boot-seconds", str(BOOT_SECONDS)]
    sim_args += [arg for spec in SIMULATED for arg in ("--instance", spec)]
    simulator = Child("the Zenlayer simulator", sim_args, env, workdir, workdir / "simulator.log")
    stack.callback(simulator.stop)

    # The grant migrates the database while the simulator starts, so the bot finds it ready.
    grant_args = ["perms", "grant", ALICE, "--resource-group", GROUP]
    try:
        granted = subprocess.run(  # noqa: S603 — our own interpreter and fixed arguments
            [sys.executable, "-m", "bot", *grant_args],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline.left()),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DemoFailed("`vm-bot perms grant` did not finish in time") from exc
    if granted.returncode != 0:
        raise DemoFailed(f"`vm-bot perms grant` failed with code {granted.returncode}:\n{granted.stderr.strip()}")

    sim_url = wait_for(lambda: read_simulator_url(simulator), deadline, "the simulator to listen", watch=[simulator])
    env["ZENLAYER_API_URL"] = sim_url
    bot = Child("vm-bot", ["--log-level", "INFO", "run"], env, workdir, workdir / "bot.log")
    stack.callback(bot.stop)
    bot_url = f"http://127.0.0.1:{bot_port}"
    wait_for(lambda: healthy(bot_url), deadline, "vm-bot to answer /healthz", watch=[bot, simulator])
    print(
        f"vm-bot demo: simulator {sim_url}, Slack stand-in {fake.url}, vm-bot {bot_url}/slack/events "
        f"(ready in {deadline.elapsed():.1f} s)",
        file=err,
        flush=True,
    )

    driver = SlackDriver(bot_url, fake, signing_secret)
    stack.callback(driver.close)
    transcript = Transcript(fake, out)
    transcript.write(
        f"#{CHANNEL_NAME} — alice may start what is in the resource group `{GROUP}` "
        f"(vm-bot perms grant {ALICE} --resource-group {GROUP}); bob holds no grant.\n\n"
    )
    conversation = Conversation(fake, driver, transcript, bot, deadline)
    conversation.play()
    check_simulator(sim_url)
    demo_surfaces.play(conversation, sim_url)  # the App Home and the start modal


def _report(failure: DemoFailed, err: TextIO) -> None:
    """Say what went wrong, with the tail of each involved process's log."""
    message, *children = failure.args
    print(f"\nvm-bot demo FAILED: {message}", file=err)
    for child in children:
        if isinstance(child, Child):
            print(f"--- last lines of {child.name}'s log ---\n{child.tail()}\n---", file=err)
    err.flush()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so the children and temporary files are cleaned up either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    """`vm-bot demo`: play the conversation and return the exit code (0 only when it went as expected)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the transcript
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # emoji on a terminal that cannot show them become '?'
    try:
        with _sigterm_as_interrupt():
            return run_demo(sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        print("\nvm-bot demo: interrupted; stopped everything it started.", file=sys.stderr)
        return 130
