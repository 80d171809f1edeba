"""Running `vm-bot demo`: start the simulator and the bot, play the conversation, stop everything, report."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import TextIO

from bot.devtools.demo import surfaces
from bot.devtools.demo.conversation import Conversation, check_simulator
from bot.devtools.demo.processes import (
    Child,
    Deadline,
    DemoFailed,
    child_environment,
    healthy,
    read_simulator_url,
    wait_for,
)
from bot.devtools.demo.render import (
    Transcript,
)
from bot.devtools.demo.script import (
    ALICE,
    BOOT_SECONDS,
    CHANNEL_NAME,
    DEADLINE_SECONDS,
    EXTEND_SECONDS,
    GROUP,
    INSTANCES,
    SIMULATED,
    STOP_SECONDS,
)
from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import Credentials, free_port

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
        summary = f"{', '.join(INSTANCES)} started, then stopped on time: one StartInstances and one StopInstances call"
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
        "RUN_EXTEND_SECONDS": str(EXTEND_SECONDS),
        **overrides,
    }
    source_root = Path(__file__).resolve().parents[2]  # the tree holding the bot package
    env = child_environment(settings, source_root)

    sim_args = ["simulator", "--port", "0", "--boot-seconds", str(BOOT_SECONDS), "--stop-seconds", str(STOP_SECONDS)]
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
    surfaces.play(conversation, sim_url)  # the App Home and the start modal


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
