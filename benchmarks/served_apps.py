"""Apps under test as their own processes on loopback ports, and the load generator process that fires signed
requests at them.

`vm-bot run` and the floor apps (benchmarks/floor_app.py: bare bolt apps that only ack, under the same waitress
settings) run as their own processes; the load comes from a third process (benchmarks/loadgen.py), so neither the
fakes in the benchmark's process nor the measuring compete with each other for a GIL.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.devtools.support import stop_process

BENCH_DIR = Path(__file__).resolve().parent


def stand_in_env(
    signing_secret: str, slack_url: str, zenlayer_url: str, key_id: str, key_secret: str, database_url: str
) -> dict[str, str]:
    """Return the settings that point vm-bot at the loopback fakes and a database."""
    return {
        "SLACK_BOT_TOKEN": "xoxb-benchmark",
        "SLACK_SIGNING_SECRET": signing_secret,
        "SLACK_API_URL": slack_url,
        "ZENLAYER_ACCESS_KEY_ID": key_id,
        "ZENLAYER_ACCESS_KEY_SECRET": key_secret,
        "ZENLAYER_API_URL": zenlayer_url,
        "DATABASE_URL": database_url,
    }


def bot_env(settings_env: dict[str, str], port: int) -> dict[str, str]:
    """Return the environment for `vm-bot run`: ours, minus anything vm-bot reads, plus the benchmark settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ZENLAYER_", "DATABASE_", "POLL_"))}
    return {**env, **settings_env, "HOST": "127.0.0.1", "PORT": str(port)}  # HOST's default is every address


@dataclass
class Served:
    """An app under test, running as its own process on a loopback port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def served(name: str, argv: list[str], port: int, tmp: Path, env: dict[str, str] | None = None) -> Iterator[Served]:
    """Run an app as its own process until the block ends; SIGTERM it then (and kill it if it hangs)."""
    log = tmp / f"{name.replace(' ', '-')}.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        wait_healthy(port, process, log)
        yield Served(name, port, process, log)
    finally:
        stop_process(process)


def wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Wait until a served app answers /healthz; fail with its log when it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)  # polling a condition with a deadline
    raise RuntimeError(f"{process.args} did not answer /healthz within {timeout} s:\n{log.read_text()[-3000:]}")


class LoadGen:
    """The load generator process: fire a list of signed requests at once, get back latencies and bodies."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, str(BENCH_DIR / "loadgen.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def fire(self, port: int, requests: Sequence[bytes], timeout: float = 30.0) -> list[tuple[float, int, str]]:
        """Send every request at once on its own connection; return (seconds, status, body) per request."""
        assert self.process.stdin is not None and self.process.stdout is not None
        job = {"port": port, "timeout": timeout, "requests": [base64.b64encode(r).decode() for r in requests]}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the load generator died")
        return [(float(s), int(c), str(b)) for s, c, b in json.loads(line)["results"]]

    def close(self) -> None:
        """End the load generator."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=10)


def signed_request(secret: str, port: int, body: str, content_type: str = "application/x-www-form-urlencoded") -> bytes:
    """Return a raw HTTP request posting a body (a form unless content_type says JSON, an Events API body) to
    /slack/events with Slack's signature headers."""
    ts = str(int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    data = body.encode()
    head = (
        f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\nX-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {signature}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + data
