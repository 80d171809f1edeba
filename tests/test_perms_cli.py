"""`vm-bot perms ...`, `vm-bot audit` and `vm-bot db upgrade` run as real processes against a temporary SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.db import audit, migrate
from bot.db.session import Database
from bot.grants.rules import list_grants

USER = "U0ALICE1"


def _env(url: str) -> dict[str, str]:
    # Only what the command needs: no Slack or Zenlayer credentials, so none may be required.
    return {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url, "PYTHONIOENCODING": "utf-8"}


def _start(tmp_path: Path, url: str, *args: str, script: bool = False) -> subprocess.Popen[str]:
    console_script = Path(sys.executable).with_name("vm-bot")
    command = [str(console_script)] if script else [sys.executable, "-m", "bot"]
    return subprocess.Popen(
        [*command, *args],
        cwd=tmp_path,  # no stray .env from the working tree
        env=_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def vm_bot(tmp_path: Path, url: str, *args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    process = _start(tmp_path, url, *args, script=script)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def _grants(url: str) -> list[tuple[str, str, str, str, bool, str]]:
    database = Database(url)
    try:
        with database.session(readonly=True) as s:
            return [
                (g.user_id, g.action, g.pattern, g.channel_id, g.needs_approval, g.granted_by) for g in list_grants(s)
            ]
    finally:
        database.close()


def _audit(url: str) -> list[tuple[str, str, str | None, dict[str, object]]]:
    database = Database(url)
    try:
        with database.session(readonly=True) as s:
            return [(e.event, e.actor, e.subject, audit.detail_of(e)) for e in audit.latest(s)]
    finally:
        database.close()


def test_db_upgrade_through_the_console_script(tmp_path: Path, url: str) -> None:
    done = vm_bot(tmp_path, url, "db", "upgrade", script=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"database at head ({migrate.head_revision()})"
    assert migrate.current_revision(url) == migrate.head_revision()


def test_grant_list_revoke_and_audit(tmp_path: Path, url: str) -> None:
    # A fresh database: the perms command migrates it first.
    done = vm_bot(
        tmp_path, url, "perms", "grant", USER, "--instances", "web-*", "--instances", "db-1",
        "--channel", "C0OPS", "--needs-approval",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 new grants" in done.stdout
    assert _grants(url) == [
        (USER, "start", "db-1", "C0OPS", True, "cli"),
        (USER, "start", "web-*", "C0OPS", True, "cli"),
    ]

    done = vm_bot(tmp_path, url, "perms", "grant", USER, "--instances", "web-*", "--channel", "C0OPS")
    assert done.returncode == 0, done.stderr
    assert "0 new grants" in done.stdout
    assert _grants(url)[1] == (USER, "start", "web-*", "C0OPS", False, "cli")  # updated, not duplicated

    done = vm_bot(tmp_path, url, "perms", "grant", "U0BOB1", "--instances", "*", "--action", "approve")
    assert done.returncode == 0, done.stderr

    done = vm_bot(tmp_path, url, "perms", "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    headers = [
        "USER",
        "ACTION",
        "KIND",
        "PATTERN",
        "CHANNEL",
        "NEEDS",
        "APPROVAL",
        "MAX",
        "RUN",
        "GRANTED",
        "BY",
        "WHEN",
    ]
    assert lines[0].split() == headers
    rows = [line.split() for line in lines[2:]]
    assert [r[:7] for r in rows] == [
        [USER, "start", "instances", "db-1", "C0OPS", "yes", "-"],
        [USER, "start", "instances", "web-*", "C0OPS", "no", "-"],
        ["U0BOB1", "approve", "instances", "*", "*", "(any)", "no"],
    ]
    assert all("cli" in r for r in rows)
    assert all(r[-1].endswith("Z") for r in rows)

    done = vm_bot(tmp_path, url, "perms", "list", "U0BOB1")
    assert [line.split()[0] for line in done.stdout.splitlines()[2:]] == ["U0BOB1"]

    done = vm_bot(tmp_path, url, "perms", "revoke", USER, "--instances", "db-1")
    assert done.returncode == 0, done.stderr
    assert "revoked 1 grant" in done.stdout
    assert [g[2] for g in _grants(url) if g[0] == USER] == ["web-*"]

    done = vm_bot(tmp_path, url, "perms", "revoke", USER)
    assert done.returncode == 0, done.stderr
    assert "revoked 1 grant" in done.stdout
    assert [g[0] for g in _grants(url)] == ["U0BOB1"]

    done = vm_bot(tmp_path, url, "audit", "--user", USER)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split()[:3] == ["WHEN", "ACTOR", "EVENT"]
    body = done.stdout.splitlines()[2:]
    assert [line.split()[2:4] for line in body] == [["cli", "grant_revoked"]] * 2 + [["cli", "grant_added"]] * 2
    assert "U0BOB1" not in done.stdout

    recorded = _audit(url)
    assert [(e, a, s) for e, a, s, _ in recorded] == [
        ("grant_revoked", "cli", USER),
        ("grant_revoked", "cli", USER),
        ("grant_added", "cli", "U0BOB1"),
        ("grant_added", "cli", USER),
        ("grant_added", "cli", USER),
    ]
    assert recorded[-1][3] == {
        "action": "start",
        "added": 2,
        "channels": ["C0OPS"],
        "needs_approval": True,
        "patterns": ["web-*", "db-1"],
    }
    assert json.dumps(recorded[0][3]) == json.dumps({"action": None, "channels": [], "patterns": [], "removed": 1})


BAD_INVOCATIONS = {
    "bad user id": (["perms", "grant", "alice", "--instances", "web-*"], ["alice"]),
    "empty pattern": (["perms", "grant", USER, "--instances", "web-*", "--instances", ""], ["empty"]),
    "bad channel": (["perms", "grant", USER, "--instances", "web-*", "--channel", "#ops"], ["#ops"]),
    "every problem at once": (
        ["perms", "grant", "bob", "--instances", "", "--channel", "ops"],
        ["bob", "empty", "ops"],
    ),
    "audit limit": (["audit", "--limit", "0"], ["--limit"]),
}


def test_bad_input_is_refused_and_nothing_is_written(tmp_path: Path, url: str) -> None:
    migrate.upgrade(url)
    processes = {name: _start(tmp_path, url, *args) for name, (args, _) in BAD_INVOCATIONS.items()}
    for name, process in processes.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 2, (name, out, err)
        assert "Traceback" not in err, name
        for fragment in BAD_INVOCATIONS[name][1]:
            assert fragment in err, (name, err)
    assert _grants(url) == []
    assert _audit(url) == []


def test_database_errors_are_reported_without_a_traceback(tmp_path: Path) -> None:
    done = vm_bot(tmp_path, f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}", "perms", "list")
    assert done.returncode == 1
    assert "database error" in done.stderr and "Traceback" not in done.stderr


def test_grant_list_and_revoke_by_name_resource_group_and_tag(tmp_path: Path, url: str) -> None:
    done = vm_bot(
        tmp_path,
        url,
        "perms",
        "grant",
        USER,
        "--names",
        "web-*",
        "--resource-group",
        "Default Resource Group",
        "--resource-group",
        "6704104051930231",
        "--tag",
        "team=web",
        "--channel",
        "C0OPS",
    )
    assert done.returncode == 0, done.stderr
    assert "4 new grants" in done.stdout

    listed = vm_bot(tmp_path, url, "perms", "list", USER, "--tag", "team=web")
    rows = [line.split()[:4] for line in listed.stdout.splitlines()[2:]]
    assert rows == [[USER, "start", "tag", "team=web"]]
    everything = vm_bot(tmp_path, url, "perms", "list")
    assert [line.split()[2] for line in everything.stdout.splitlines()[2:]] == [
        "resource-group",
        "resource-group",
        "names",
        "tag",
    ]

    bad = vm_bot(tmp_path, url, "perms", "grant", USER, "--tag", "team", "--names", "a b")
    assert bad.returncode == 2
    assert "`team` is not a tag: write KEY=VALUE" in bad.stderr and "`a b` is not a name pattern" in bad.stderr
    assert vm_bot(tmp_path, url, "perms", "grant", USER).returncode == 2  # no selector at all

    revoked = vm_bot(tmp_path, url, "perms", "revoke", USER, "--resource-group", "Default Resource Group")
    assert revoked.returncode == 0 and "revoked 1 grant" in revoked.stdout
    assert [(g[2]) for g in _grants(url)] == ["6704104051930231", "web-*", "team=web"]


def test_a_start_grant_may_cap_runs_and_only_a_start_grant(tmp_path: Path, url: str) -> None:
    done = vm_bot(tmp_path, url, "perms", "grant", USER, "--names", "dev-*", "--max-run", "1h30m")
    assert done.returncode == 0, done.stderr
    listed = vm_bot(tmp_path, url, "perms", "list").stdout.splitlines()
    assert listed[2].split()[:8] == [USER, "start", "names", "dev-*", "*", "(any)", "no", "1"]
    assert "1 h 30 min" in listed[2]

    refused = vm_bot(tmp_path, url, "perms", "grant", USER, "--names", "dev-*", "--action", "stop", "--max-run", "1h")
    assert refused.returncode != 0 and "--max-run caps the runs of start grants only" in refused.stderr
    bad = vm_bot(tmp_path, url, "perms", "grant", USER, "--names", "dev-*", "--max-run", "8d")
    assert bad.returncode != 0 and "at most 7 d" in bad.stderr
    assert [e[3].get("max_run_seconds") for e in _audit(url) if e[0] == "grant_added"] == [5400.0]
