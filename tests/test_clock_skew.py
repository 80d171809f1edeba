"""Issue 21's finding 2: time is the database's. Two real `vm-bot run` processes share one PostgreSQL database, one
with its clock 30 s ahead (libfaketime, so every clock read of that process is off, whatever reads it): it neither
takes the other's live lease nor expires a confirmation early, and it reports and logs its offset.

Only the stand-ins, the simulator, the CLI and /metrics are used, so this file also runs against older versions.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from bot.devtools import faketime
from bot.devtools.slack_driver import SlackDriver, has_buttons
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import stop_process
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.slack import action_ids
from tests.db_support import POSTGRES_URL, empty_database_url
from tests.slack_support import SIGNING_SECRET, free_port, run_env, start_calls, wait_until

SKEW_SECONDS = 30


def skewed(seconds: float) -> dict[str, str]:
    """Environment that moves every wall-clock read of a process by `seconds` (monotonic clocks left alone)."""
    env = faketime.skewed_env(seconds)
    assert env, "libfaketime is not installed"
    return env


def metric(port: int, name: str) -> float | None:
    """Read one unlabelled sample from a process's /metrics (None when it does not export it)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL schema, granted as `vm-bot perms grant` does."""
    if not POSTGRES_URL:
        pytest.skip("set VM_BOT_TEST_POSTGRES_URL to run replicas on PostgreSQL")
    if faketime.library() is None:
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    with empty_database_url("postgres", tmp_path) as url:
        env = {**os.environ, "DATABASE_URL": url}
        grant = [sys.executable, "-m", "bot", "perms", "grant", "U0REQUEST", "--instances", "web-*"]
        subprocess.run(grant, env=env, check=True, capture_output=True, timeout=60)  # migrates first
        yield url


@pytest.mark.parametrize("seconds", [SKEW_SECONDS, -SKEW_SECONDS])
def test_a_skewed_process_reads_its_clock_off_and_still_sleeps_and_waits(seconds: float) -> None:
    # libfaketime 0.9.10 shifts the absolute monotonic deadline of Python 3.11's time.sleep (EINVAL on every sleep):
    # a skewed replica would fail wherever it sleeps (waiting for its turn after acks, backing off) and prove little.
    if faketime.library() is None:
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    probe = "import threading, time; t = time.monotonic(); time.sleep(0.05); threading.Event().wait(0.05); "
    probe += "print(time.time(), time.monotonic() - t)"
    done = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, **skewed(seconds)}, capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    wall, waited = (float(word) for word in done.stdout.split())
    assert abs(wall - time.time() - seconds) < 2
    assert 0.1 <= waited < 2


def test_a_replica_30s_ahead_neither_steals_a_live_lease_nor_expires_a_confirmation_early(
    tmp_path: Path, postgres_url: str, fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator
) -> None:
    simulator.boot_seconds = 10.0  # web-1 stays watched, under the first replica's lease, while the second runs
    settings = {"CONFIRM_TTL_SECONDS": "20", "LEASE_SECONDS": "6", "START_TIMEOUT_SECONDS": "60"}
    with ExitStack() as stack:

        def launch(name: str, poll: str, extra: dict[str, str]) -> tuple[int, Path]:
            port = free_port()
            env = run_env(fake_slack, simulator, postgres_url, port, REPLICA_ID=name, POLL_INTERVAL_SECONDS=poll)
            log_path = tmp_path / f"{name}.log"
            with log_path.open("w") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "bot", "run"],
                    env={**env, **settings, **extra},
                    cwd=tmp_path,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            stack.callback(stop_process, process)
            wait_until(lambda: _healthy(port), timeout=30, what=f"{name} to serve")
            return port, log_path

        right, _ = launch("clock-right", "0.3", {})
        slack = SlackDriver(f"http://127.0.0.1:{right}", fake_slack, SIGNING_SECRET)
        stack.callback(slack.close)
        slack.command("start web-1")
        first = slack.wait_confirmation()
        slack.click(first, action_ids.START)
        wait_until(lambda: simulator.status("web-1") == "BOOTING", timeout=10, what="web-1 to boot")

        # Now a replica whose clock is 30 s ahead joins, while clock-right holds web-1's lease (6 s, renewed).
        ahead, ahead_log = launch("clock-ahead", "0.3", skewed(SKEW_SECONDS))
        slack_ahead = SlackDriver(f"http://127.0.0.1:{ahead}", fake_slack, SIGNING_SECRET)
        stack.callback(slack_ahead.close)
        slack.command("start web-2")
        second = slack.wait_confirmation()  # the first one has no buttons left
        time.sleep(4.0)  # both engines run many steps and heartbeats: what a skewed clock misjudges, it would now

        assert metric(ahead, "vmbot_watcher_takeovers_total") == 0  # it took nobody's live lease
        assert has_buttons(slack.message(second))  # and a 20 s confirmation is still open after 4 s
        slack_ahead.click(second, action_ids.START)  # clicked on the replica that is ahead: taken, not expired
        slack.wait_thread(first, "All 1 instance RUNNING", timeout=30)
        slack.wait_thread(second, "All 1 instance RUNNING", timeout=30)
        assert sorted(start_calls(simulator)) == [["web-1"], ["web-2"]]  # one call each: nothing done twice
        assert not any(":x:" in text for c in (first, second) for text in slack.thread_texts(c))

        # It says how far off it is, once.
        offset = wait_until(lambda: metric(ahead, "vmbot_clock_offset_seconds"), timeout=10, what="the offset")
        assert SKEW_SECONDS - 3 < offset < SKEW_SECONDS + 3
        assert abs(metric(right, "vmbot_clock_offset_seconds") or 99) < 2
        warnings = [line for line in ahead_log.read_text().splitlines() if "clock is" in line and "ahead" in line]
        assert len(warnings) == 1 and "WARNING" in warnings[0], warnings


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_offset_is_warned_once_when_it_passes_2s_and_once_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from bot.db.clock import OffsetWatch

    watch = OffsetWatch()
    with caplog.at_level(logging.INFO, logger="bot.db.clock"):
        for offset in (0.1, -1.9, 2.5, 3.0, 30.0, 2.1):  # one warning, not one per beat
            watch.observe(offset)
        for offset in (0.4, 0.2, -2.6):
            watch.observe(offset)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == ["WARNING", "INFO", "WARNING"], lines
    assert "2.5 s ahead of" in lines[0][1] and "2.6 s behind" in lines[2][1]
