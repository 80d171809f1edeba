"""What the tests, the demo and the benchmarks share: credentials for the stand-ins, free ports, waiting."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Credentials:
    """The Slack and Zenlayer secrets the bot and the stand-ins agree on (never real ones)."""

    slack_bot_token: str
    slack_signing_secret: str
    slack_app_token: str
    zenlayer_access_key_id: str
    zenlayer_access_key_secret: str
    zenlayer_token: str

    @classmethod
    def fresh(cls, label: str = "demo") -> Credentials:
        """Return random credentials for one run (the demo and the benchmarks)."""
        return cls(
            slack_bot_token=f"xoxb-{label}-{secrets.token_hex(8)}",
            slack_signing_secret=secrets.token_hex(16),
            slack_app_token=f"xapp-1-{label}-{secrets.token_hex(8)}",
            zenlayer_access_key_id=f"AKID{label.upper()}{secrets.token_hex(4).upper()}",
            zenlayer_access_key_secret=secrets.token_urlsafe(24),
            zenlayer_token=f"zpat-{label}-{secrets.token_hex(12)}",
        )


# Fixed values for the tests, recognisable in a log that should not contain them.
TEST_CREDENTIALS = Credentials(
    slack_bot_token="xoxb-do-not-log-this-token",
    slack_signing_secret="test-signing-secret",
    slack_app_token="xapp-1-A0001-1234-test",
    zenlayer_access_key_id="AKIDTESTKEY",
    zenlayer_access_key_secret="test-secret-do-not-log-4f1b",
    zenlayer_token="zpat-test-token-do-not-log-93ad",
)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on host that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition", interval: float = 0.02) -> T:
    """Poll predicate until it returns something truthy and return that; AssertionError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM a process and wait for it, killing it if it hangs."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
