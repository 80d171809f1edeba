"""An idle `vm-bot run` costs (next to) no CPU, in HTTP and in Socket Mode: no loop may spin while nothing happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from tests.fake_socket_mode import FakeSocketMode
from tests.slack_support import free_port, run_env, wait_until

IDLE_SECONDS = 3.0
# A spinning loop burns about one core: ~3 s of CPU here. An idle bot (a watcher tick per second) uses a few ms.
CPU_BUDGET_SECONDS = 0.2

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process CPU time from /proc")


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


@contextmanager
def run_bot(tmp_path: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run `vm-bot run` with env; stop it with SIGTERM afterwards and check it stopped cleanly."""
    log_path = tmp_path / "bot.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "run"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def idle_cpu(pid: int) -> float:
    """Return the CPU seconds a process uses over IDLE_SECONDS of doing nothing."""
    before = cpu_seconds(pid)
    time.sleep(IDLE_SECONDS)  # the measurement itself: CPU used while nothing is asked of the bot
    return cpu_seconds(pid) - before


def test_idle_http_bot_uses_no_cpu(
    tmp_path: Path, fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str
) -> None:
    port = free_port()
    env = run_env(fake_slack, simulator, database_url, port, POLL_INTERVAL_SECONDS="1")
    with run_bot(tmp_path, env) as process:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=20, what="vm-bot run to answer /healthz")
        used = idle_cpu(process.pid)
        assert used < CPU_BUDGET_SECONDS, f"idle HTTP bot used {used:.2f} s of CPU in {IDLE_SECONDS} s"


def test_idle_socket_mode_bot_uses_no_cpu(
    tmp_path: Path, fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str
) -> None:
    with FakeSocketMode() as socket_mode:
        fake_slack.socket_mode_url = socket_mode.url
        env = run_env(
            fake_slack,
            simulator,
            database_url,
            free_port(),
            POLL_INTERVAL_SECONDS="1",
            SLACK_APP_TOKEN="xapp-1-A0001-1234-idle",
            SLACK_SIGNING_SECRET="",
        )
        with run_bot(tmp_path, env) as process:
            socket_mode.wait_connected()
            used = idle_cpu(process.pid)
            assert used < CPU_BUDGET_SECONDS, f"idle Socket Mode bot used {used:.2f} s of CPU in {IDLE_SECONDS} s"
