"""The demo's child processes (the simulator and `vm-bot run`), its one deadline, and waiting with both."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from bot.devtools.demo.script import (
    LOG_TAIL_LINES,
    STOP_GRACE_SECONDS,
    VM_BOT_VARIABLES,
)


class DemoFailed(Exception):
    """The conversation did not go as expected; the message says what was missing."""


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
