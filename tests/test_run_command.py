"""`vm-bot run` as a real process: it serves, answers Slack, stops cleanly on SIGTERM, and logs no secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.slack import action_ids
from tests.slack_support import ACCESS_KEY_ID, ACCESS_KEY_SECRET, BOT_TOKEN, SIGNING_SECRET, free_port, wait_until


def test_run_serves_then_stops_cleanly_on_sigterm_without_logging_secrets(
    tmp_path: Path,
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
    database_url: str,
    grant: Callable[..., None],
) -> None:
    grant("U0REQUEST", "web-*")
    port = free_port()
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_APP_TOKEN": "",
        "SLACK_API_URL": fake_slack.url,
        "ZENLAYER_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "ZENLAYER_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
        "ZENLAYER_TOKEN": "",
        "ZENLAYER_API_URL": simulator.url,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "POLL_INTERVAL_SECONDS": "0.1",
    }
    log_path = tmp_path / "bot.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "--log-level", "DEBUG", "run"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=20, what="vm-bot run to answer /healthz")
        slack = SlackDriver(f"http://127.0.0.1:{port}", fake_slack, SIGNING_SECRET)
        slack.command("start web-1")
        confirmation = slack.wait_confirmation()
        slack.click(confirmation, action_ids.START)
        slack.wait_thread(confirmation, "All 1 instance RUNNING")
        slack.close()

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log_text = log_path.read_text()
    assert "received SIGTERM, stopping" in log_text and "vm-bot stopped" in log_text
    assert " DEBUG " in log_text  # the libraries' most talkative level was on, and still no secret:
    for secret in (BOT_TOKEN, SIGNING_SECRET, ACCESS_KEY_SECRET):
        assert secret not in log_text
