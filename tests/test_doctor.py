"""`vm-bot doctor` against the stand-ins: green when everything is set up, and each check red on its own fault."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bot import doctor
from bot.db import migrate
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import free_port
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.slack.scopes import BOT_SCOPES
from tests.db_support import chattr_problem
from tests.slack_support import ACCESS_KEY_SECRET, APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, stand_in_env

ROOT = Path(__file__).resolve().parent.parent
SECRETS = (BOT_TOKEN, SIGNING_SECRET, APP_TOKEN, ACCESS_KEY_SECRET)
ALL_CHECKS = doctor.CHECKS


def manifest_scopes(name: str) -> set[str]:
    """Return the bot scopes a manifest in the repository asks for."""
    manifest = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    return set(manifest["oauth_config"]["scopes"]["bot"])


def test_the_scopes_the_doctor_knows_are_the_ones_the_manifests_ask_for() -> None:
    assert manifest_scopes("manifest.yml") == set(BOT_SCOPES)
    assert manifest_scopes("manifest.socket-mode.yml") == set(BOT_SCOPES)


@dataclass
class Setup:
    """A bot set up right, against the stand-ins: its environment, and the stand-ins to break."""

    env: dict[str, str]
    fake_slack: FakeSlackWebApi
    simulator: ZenlayerSimulator
    tmp_path: Path

    def run(self, **changes: str | None) -> tuple[int, dict[str, str], str]:
        """Run the doctor with the environment changed (None removes a variable): exit code, verdicts, output."""
        env = {k: v for k, v in {**self.env, **changes}.items() if v is not None}
        checks = doctor.run_checks(env)
        output = "\n".join(c.line() for c in checks)
        print(output)
        for secret in SECRETS:
            assert secret not in output
        code = 0 if all(c.passed for c in checks) else 1
        return code, {c.name: c.verdict for c in checks}, output


@pytest.fixture
def setup(
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
    database_url: str,
    grant: Callable[..., None],
    tmp_path: Path,
) -> Setup:
    grant("U0ADMIN", "*", action="admin")  # migrates the database too
    fake_slack.granted_scopes = tuple(sorted(manifest_scopes("manifest.yml")))
    env = stand_in_env(fake_slack, simulator, database_url)
    return Setup(env, fake_slack, simulator, tmp_path)


def measured_offset(output: str) -> float:
    """Return the offset the clock check measured (the Date header counts whole seconds: it is ± 1 s)."""
    found = re.search(r"this host is ([0-9.]+) s", output)
    assert found, output
    return float(found.group(1))


def red(verdicts: dict[str, str]) -> set[str]:
    """Return the checks that failed."""
    return {name for name, verdict in verdicts.items() if verdict == doctor.FAIL}


def test_everything_set_up_right_is_all_green(setup: Setup) -> None:
    code, verdicts, output = setup.run()
    assert code == 0, output
    assert verdicts == dict.fromkeys(ALL_CHECKS, doctor.OK), output
    assert "auth.test" in [c.method for c in setup.fake_slack.calls]
    assert [c.action for c in setup.simulator.calls] == ["DescribeInstancesStatus"]  # read-only, and only that


def test_socket_mode_needs_the_app_token_instead_of_the_signing_secret(setup: Setup) -> None:
    code, _, output = setup.run(SLACK_SIGNING_SECRET=None, SLACK_APP_TOKEN=APP_TOKEN)
    assert code == 0, output
    assert "Socket Mode: SLACK_APP_TOKEN is set" in output


def _immutable_database(setup: Setup) -> dict[str, str | None]:
    reason = chattr_problem(setup.tmp_path)
    if reason is not None:
        pytest.skip(reason)
    subprocess.run(["chattr", "+i", str(setup.tmp_path / "vm-bot.db")], check=True)
    return {}


def _an_old_database(setup: Setup) -> dict[str, str | None]:
    url = f"sqlite:///{setup.tmp_path / 'old.db'}"
    migrate.upgrade(url, "0004")
    return {"DATABASE_URL": url}


def _grant_scopes(setup: Setup, *scopes: str) -> dict[str, str | None]:
    setup.fake_slack.granted_scopes = scopes
    return {}


ZENLAYER_RED = {"Zenlayer credentials"}
# (what is broken, how, the checks that must turn red: exactly these)
FAULTS: list[tuple[str, Callable[[Setup], dict[str, str | None]], set[str]]] = [
    ("a malformed setting", lambda s: {"COMMANDS_PER_MINUTE": "lots"}, {"settings"}),
    (
        "no SQLite file",
        lambda s: {"DATABASE_URL": f"sqlite:///{s.tmp_path / 'missing' / 'vm-bot.db'}"},
        {"database"},
    ),
    ("an unreachable PostgreSQL", lambda s: {"DATABASE_URL": f"postgresql://127.0.0.1:{free_port()}/v"}, {"database"}),
    ("a database one migration behind", _an_old_database, {"database migration"}),
    ("a database that takes no writes", _immutable_database, {"database writes"}),
    ("a revoked Slack token", lambda s: s.fake_slack.uninstall("token_revoked") or {}, {"Slack token"}),
    ("unreachable Slack", lambda s: {"SLACK_API_URL": f"http://127.0.0.1:{free_port()}/api/"}, {"Slack token"}),
    ("a token without chat:write", lambda s: _grant_scopes(s, "commands"), {"Slack scopes"}),
    # The settings refuse it too: a missing signing secret stops `vm-bot run` in HTTP mode.
    ("HTTP mode without a signing secret", lambda s: {"SLACK_SIGNING_SECRET": None}, {"settings", "Slack mode"}),
    ("a wrong Zenlayer key", lambda s: {"ZENLAYER_ACCESS_KEY_SECRET": "not-the-secret"}, {"Zenlayer credentials"}),
    ("a wrong Zenlayer token", lambda s: {"ZENLAYER_TOKEN": "zpat-not-the-token"}, {"Zenlayer credentials"}),
    ("unreachable Zenlayer", lambda s: {"ZENLAYER_API_URL": f"http://127.0.0.1:{free_port()}"}, ZENLAYER_RED),
]


@pytest.mark.parametrize(("fault", "make", "expected"), FAULTS, ids=[f[0] for f in FAULTS])
def test_each_fault_turns_its_own_check_red(
    setup: Setup, fault: str, make: Callable[[Setup], dict[str, str | None]], expected: set[str]
) -> None:
    try:
        code, verdicts, output = setup.run(**make(setup))
    finally:
        subprocess.run(["chattr", "-i", str(setup.tmp_path / "vm-bot.db")], capture_output=True, check=False)
    assert code == 1, output
    assert red(verdicts) == expected, output
    # What a broken check makes impossible is skipped, never called green; everything else is green.
    others = {name: v for name, v in verdicts.items() if name not in expected}
    assert set(others.values()) <= {doctor.OK, doctor.SKIP}, output


def test_a_postgresql_that_takes_the_connection_and_never_answers_is_red_within_seconds(setup: Setup) -> None:
    done: list[tuple[int, dict[str, str], str]] = []
    with socket.socket() as silent:  # the kernel accepts the connection; nothing ever answers on it
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql+psycopg://vmbot@127.0.0.1:{silent.getsockname()[1]}/vmbot"
        started = time.monotonic()
        worker = threading.Thread(target=lambda: done.append(setup.run(DATABASE_URL=url)), daemon=True)
        worker.start()
        worker.join(timeout=60)
    assert done, "the doctor was still waiting for the database after 60 s"
    code, verdicts, output = done[0]
    assert code == 1 and red(verdicts) == {"database"}, output
    assert time.monotonic() - started < 30, output


def test_no_admin_grant_is_red(setup: Setup, database_url: str) -> None:
    from bot.db.session import Database
    from bot.grants import rules

    db = Database(database_url)
    try:
        with db.session() as session:
            rules.revoke_grants(session, "U0ADMIN")
    finally:
        db.close()
    code, verdicts, output = setup.run()
    assert code == 1 and red(verdicts) == {"admin grant"}, output
    assert "vm-bot perms grant USER_ID --instances '*' --action admin" in output


def test_a_clock_off_by_more_than_a_minute_is_red_even_where_zenlayer_still_takes_it(setup: Setup) -> None:
    setup.simulator.max_skew_seconds = 3600  # a lenient cloud: the credentials pass, only the clock is wrong
    setup.simulator.clock_offset_seconds = 400
    code, verdicts, output = setup.run()
    assert code == 1 and red(verdicts) == {"clock"}, output
    assert measured_offset(output) == pytest.approx(400, abs=1.5) and "behind Zenlayer's clock" in output


def test_a_clock_off_by_more_than_zenlayer_takes_explains_the_refused_signature(setup: Setup) -> None:
    setup.simulator.clock_offset_seconds = -400  # this host ahead of the cloud, past its 300 s
    _, verdicts, output = setup.run()
    assert red(verdicts) == {"Zenlayer credentials", "clock"}, output
    assert "SIGNATURE_EXPIRED" in output and "ahead of Zenlayer's clock" in output


def test_a_small_offset_passes(setup: Setup) -> None:
    setup.simulator.clock_offset_seconds = 20
    code, _, output = setup.run()
    assert code == 0, output
    assert measured_offset(output) == pytest.approx(20, abs=1.5)


def test_extra_scopes_are_a_warning_not_a_failure(setup: Setup) -> None:
    setup.fake_slack.granted_scopes = (*BOT_SCOPES, "users:read", "channels:history")
    code, verdicts, output = setup.run()
    assert code == 0, output
    assert verdicts["Slack scopes"] == doctor.WARN
    assert "channels:history, users:read, which vm-bot never uses" in output


@pytest.fixture
def cli(setup: Setup) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    def run(**changes: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", ""), **setup.env, **changes}
        return subprocess.run(
            [sys.executable, "-m", "bot", "doctor"],
            cwd=setup.tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    yield run


def test_the_command_prints_a_line_per_check_and_exits_0_only_when_all_pass(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = cli()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0].split()[-1] for line in lines[:-1]][:2] == ["settings", "database"]
    assert len(lines) == len(ALL_CHECKS) + 1 and lines[-1] == f"all {len(ALL_CHECKS)} checks passed"

    broken = cli(ZENLAYER_ACCESS_KEY_SECRET="not-the-secret-either")
    assert broken.returncode == 1, broken.stdout
    assert "FAIL  Zenlayer credentials: refused (INVALID_SIGNATURE)" in broken.stdout
    assert broken.stdout.splitlines()[-1] == f"1 of {len(ALL_CHECKS)} checks did not pass"
    for secret in (*SECRETS, "not-the-secret-either"):
        assert secret not in done.stdout + done.stderr + broken.stdout + broken.stderr
