"""Operating vm-bot: start-up errors as sentences, bad input kept cheap, /readyz, JSON logs — against `vm-bot run`."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bot.db import migrate
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import free_port, wait_until
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from tests.slack_support import ACCESS_KEY_SECRET, BOT_TOKEN, SIGNING_SECRET, stand_in_env

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def _env(fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str, **extra: str) -> dict[str, str]:
    return stand_in_env(
        fake_slack,
        simulator,
        database_url,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        HOST="127.0.0.1",
        POLL_INTERVAL_SECONDS="0.2",
        **extra,
    )


def _run_until_exit(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "run"], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _assert_one_sentence(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    problem = [line for line in done.stderr.splitlines() if line.startswith("vm-bot cannot start:")]
    assert len(problem) == 1, done.stderr
    for fragment in fragments:
        assert fragment in problem[0], problem[0]
    for secret in (BOT_TOKEN, SIGNING_SECRET, ACCESS_KEY_SECRET):
        assert secret not in done.stderr


# --- start-up errors are sentences --------------------------------------------------------------------------


def test_a_revoked_token_is_one_sentence(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str, tmp_path: Path
) -> None:
    fake_slack.fail_next("auth.test", error="invalid_auth")
    done = _run_until_exit(_env(fake_slack, simulator, database_url), tmp_path)
    _assert_one_sentence(done, "Slack refused SLACK_BOT_TOKEN (invalid_auth)", "OAuth & Permissions")


def test_unreachable_slack_is_one_sentence(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/api/"
    done = _run_until_exit(_env(fake_slack, simulator, database_url, SLACK_API_URL=nowhere), tmp_path)
    _assert_one_sentence(done, f"cannot reach Slack at {nowhere}", "SLACK_API_URL")


def test_a_read_only_sqlite_database_is_one_sentence(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, tmp_path: Path
) -> None:
    path = tmp_path / "vm-bot.db"
    migrate.upgrade(f"sqlite:///{path}")
    # SQLite's own read-only mode: file permissions do not bind root, which CI may be.
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    done = _run_until_exit(_env(fake_slack, simulator, url), tmp_path)
    _assert_one_sentence(done, "is read-only", "write access")


def test_a_missing_directory_is_one_sentence(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'vm-bot.db'}"
    done = _run_until_exit(_env(fake_slack, simulator, url), tmp_path)
    _assert_one_sentence(done, f"{tmp_path / 'no-such-dir'}", "does not exist")


def test_migrations_that_cannot_run_are_one_sentence(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, tmp_path: Path
) -> None:
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as db:  # as if a newer vm-bot had migrated it
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('9999')")
    done = _run_until_exit(_env(fake_slack, simulator, f"sqlite:///{path}"), tmp_path)
    _assert_one_sentence(done, "migrations cannot run", "newer vm-bot")


def test_an_unreachable_postgresql_is_one_sentence(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, tmp_path: Path
) -> None:
    url = f"postgresql://vmbot:shh-db-password@127.0.0.1:{free_port()}/vmbot"
    done = _run_until_exit(_env(fake_slack, simulator, url), tmp_path)
    _assert_one_sentence(done, "cannot reach the database at postgresql+psycopg://vmbot:***@127.0.0.1")
    assert "shh-db-password" not in done.stderr


def test_a_port_in_use_is_one_sentence(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run_until_exit(_env(fake_slack, simulator, database_url, PORT=str(port)), tmp_path)
    _assert_one_sentence(done, f"cannot listen on 127.0.0.1:{port}")


# --- a running bot ------------------------------------------------------------------------------------------


class Bot:
    """`vm-bot run` as a child process."""

    def __init__(self, process: subprocess.Popen[str], url: str, log: Path):
        self.process, self.url, self.log = process, url, log

    def peak_rss_mb(self) -> float:
        """Return the process's peak resident memory (VmHWM) in MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(li for li in status.splitlines() if li.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def vm_bot_run(env: dict[str, str], cwd: Path) -> Iterator[Bot]:
    port = free_port()
    log = cwd / "bot.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "run"],
            env={**env, "PORT": str(port)},
            cwd=cwd,
            stdout=out,
            stderr=out,
            text=True,
        )
    bot = Bot(process, f"http://127.0.0.1:{port}", log)
    try:

        def ready() -> bool:
            assert process.poll() is None, bot.output()
            try:
                return httpx.get(f"{bot.url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=30, what="vm-bot to be ready")
        yield bot
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def bot(fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str, tmp_path: Path) -> Iterator[Bot]:
    with vm_bot_run(_env(fake_slack, simulator, database_url, LOG_FORMAT="json"), tmp_path) as running:
        yield running


def _send_huge(url: str, *, chunked: bool, total: int = 300 * MB) -> str:
    """Stream an unsigned POST of total bytes (never held in memory here); return the status line answered."""
    host, port = url.removeprefix("http://").split(":")
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = f"POST /slack/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
    chunk = b"{" * MB
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(head.encode())
        sent = 0
        try:
            while sent < total:
                conn.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                sent += len(chunk)
            if chunked:
                conn.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed before we were done: that is the point
        answer = conn.recv(4096).decode("latin-1")
    return answer.split("\r\n", 1)[0]


def test_a_300_mb_body_is_refused_before_it_is_read(bot: Bot) -> None:
    before = bot.peak_rss_mb()
    assert " 413 " in _send_huge(bot.url, chunked=False)
    assert " 413 " in _send_huge(bot.url, chunked=True)
    grown = bot.peak_rss_mb() - before
    print(f"peak RSS {before:.0f} MiB before, grew {grown:.1f} MiB after two 300 MB bodies")
    assert grown < 64, f"peak RSS grew by {grown:.0f} MiB"
    assert httpx.get(f"{bot.url}/readyz").status_code == 200


def test_malformed_unsigned_requests_get_4xx_and_one_line_each(bot: Bot) -> None:
    cases = [
        ({}, b"\xff\xfe not a form"),
        ({"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=abc"}, b"command=/vm&text=start"),
        ({"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=00"}, b"{not json"),
    ]
    for headers, body in cases:
        answer = httpx.post(f"{bot.url}/slack/events", content=body, headers=headers)
        assert answer.status_code in (400, 401), answer.text
    log = bot.output()
    assert "Traceback" not in log
    assert log.count("refused a request to /slack/events") == len(cases)


def test_json_logs_carry_context_and_no_secret(bot: Bot) -> None:
    import json

    httpx.post(f"{bot.url}/slack/events", content=b"token=" + BOT_TOKEN.encode())
    entries = [json.loads(line) for line in bot.output().splitlines() if line.startswith("{")]
    assert entries and all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    refused = [e for e in entries if "refused a request" in e["message"]]
    assert refused and refused[0]["request_id"]
    for secret in (BOT_TOKEN, SIGNING_SECRET, ACCESS_KEY_SECRET):
        assert secret not in bot.output()


def test_readyz_says_why_when_the_database_is_not_at_head(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, tmp_path: Path
) -> None:
    path = tmp_path / "vm-bot.db"
    with vm_bot_run(_env(fake_slack, simulator, f"sqlite:///{path}"), tmp_path) as running:
        assert httpx.get(f"{running.url}/healthz").text == "ok\n"
        with sqlite3.connect(path) as other:  # e.g. a rollback of the schema under a running replica
            other.execute("UPDATE alembic_version SET version_num = 'older'")
        answer = httpx.get(f"{running.url}/readyz", timeout=20)
        assert answer.status_code == 503
        assert "not ready: the database is at migration older" in answer.text
        assert httpx.get(f"{running.url}/healthz").status_code == 200  # alive, just not ready


def test_readyz_needs_a_watcher_that_ticks(tmp_path: Path) -> None:
    from bot.db.session import Database
    from bot.health import Health

    url = f"sqlite:///{tmp_path / 'vm-bot.db'}"
    migrate.upgrade(url)
    db = Database(url)
    try:
        health = Health(db, migrate.head_revision(), poll_interval_seconds=0.1)
        assert health.readiness().reason == "the watcher has not finished a tick yet"
        health.ticked(0.01)
        assert health.readiness().ready
        health.max_tick_age = 0.0
        assert "the watcher last ticked" in health.readiness().reason
    finally:
        db.close()
