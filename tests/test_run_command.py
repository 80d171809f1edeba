"""`vm-bot run` as a real process: it serves, answers Slack, stops cleanly on SIGTERM, and logs no secret."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.slack import action_ids
from tests.slack_support import (
    ACCESS_KEY_SECRET,
    BOT_TOKEN,
    SIGNING_SECRET,
    free_port,
    run_env,
    start_calls,
    wait_until,
)


def spawn(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start `python -m bot ARGS` with its output in log_path."""
    with log_path.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", *args], env=env, cwd=log_path.parent, stdout=log, stderr=subprocess.STDOUT
        )


def wait_healthy(port: int, what: str) -> None:
    """Wait until the process on port answers /healthz."""

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=20, what=f"{what} to answer /healthz")


def test_run_serves_then_stops_cleanly_on_sigterm_without_logging_secrets(
    tmp_path: Path,
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
    database_url: str,
    grant: Callable[..., None],
) -> None:
    grant("U0REQUEST", "web-*")
    port = free_port()
    env = run_env(fake_slack, simulator, database_url, port, POLL_INTERVAL_SECONDS="0.1")
    log_path = tmp_path / "bot.log"
    process = spawn(env, log_path, "--log-level", "DEBUG", "run")
    try:
        wait_healthy(port, "vm-bot run")
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


def test_sigkill_right_after_a_click_then_restart_loses_nothing_and_resumes_at_once(
    tmp_path: Path,
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
    database_url: str,
    grant: Callable[..., None],
) -> None:
    grant("U0REQUEST", "web-*")
    simulator.boot_seconds = 1.0
    port = free_port()
    poll = 0.5
    env = run_env(fake_slack, simulator, database_url, port, POLL_INTERVAL_SECONDS=str(poll), REPLICA_ID="only-one")

    def launch(name: str) -> subprocess.Popen[bytes]:
        process = spawn(env, tmp_path / f"{name}.log", "run")
        wait_healthy(port, name)
        return process

    first = launch("first")
    second: subprocess.Popen[bytes] | None = None
    try:
        slack = SlackDriver(f"http://127.0.0.1:{port}", fake_slack, SIGNING_SECRET)
        slack.command("start web-1")
        confirmation = slack.wait_confirmation()
        response, _ = slack.click(confirmation, action_ids.START)
        first.kill()  # SIGKILL the moment the click is acknowledged
        first.wait()
        assert response.status_code == 200
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            (recorded,) = connection.execute(
                "SELECT count(*) FROM clicks WHERE request_id = ? AND decision = 'start'", (confirmation.request_id,)
            ).fetchone()
        assert recorded == 1  # the acknowledged click was on disk before the acknowledgement

        second = launch("second")
        # Its predecessor is gone (same REPLICA_ID, another nonce): it decides the click and resumes the work at
        # once, without waiting out the 15 s lease or the 20 s after which other replicas decide a lost click.
        wait_until(lambda: simulator.status("web-1") == "RUNNING", timeout=15, what="web-1 to run")
        slack.wait_thread(confirmation, "All 1 instance RUNNING", timeout=poll + 5)
        assert len(start_calls(simulator)) == 1
        slack.close()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
