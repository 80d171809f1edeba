"""Settings you cannot get wrong: one table of settings, --version, --help, closed pipes, bad levels, bad globs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import SETTING_NAMES, SETTINGS, load_settings
from bot.db import migrate
from bot.db.session import Database
from bot.devtools import demo
from bot.grants import rules as grants

ROOT = Path(__file__).resolve().parent.parent


def _vm_bot(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_env_example_lists_exactly_the_settings_table() -> None:
    text = (ROOT / ".env.example").read_text()
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE)
    assert sorted(set(names)) == sorted(SETTING_NAMES)


def test_readme_settings_table_lists_exactly_the_settings_table() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    names = [name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)]
    assert sorted(names) == sorted(SETTING_NAMES)


def test_the_demo_clears_every_setting_for_its_children(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SETTING_NAMES:
        monkeypatch.setenv(name, "from-the-caller")
    env = demo.child_environment({"PORT": "1234"}, tmp_path)
    assert {name for name in SETTING_NAMES if name in env} == {"PORT"}


def test_every_default_parses_and_fills_the_settings() -> None:
    settings = load_settings({}, slack=False, zenlayer=False)
    for setting in SETTINGS:
        assert hasattr(settings, setting.attribute), setting.name


def test_run_help_lists_every_setting(tmp_path: Path) -> None:
    done = _vm_bot(tmp_path, "run", "--help")
    assert done.returncode == 0, done.stderr
    for name in SETTING_NAMES:
        assert name in done.stdout


def test_version(tmp_path: Path) -> None:
    done = _vm_bot(tmp_path, "--version")
    assert done.returncode == 0
    assert re.fullmatch(r"vm-bot \S+\n", done.stdout)


def test_a_bad_log_level_is_a_usage_error(tmp_path: Path) -> None:
    done = _vm_bot(tmp_path, "--log-level", "bogus", "perms", "list")
    assert done.returncode == 2
    assert "'bogus' is not a level" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'vm-bot.db'}"
    migrate.upgrade(url)
    db = Database(url)
    with db.session() as session:  # enough rows to overflow the pipe's buffer while printing
        grants.add_grants(session, "U0ALICE1", [f"web-{i:05d}-*" for i in range(3000)], granted_by="test")
    db.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "perms", "list"],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith("USER")  # `| head -1`
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=60) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_an_unbalanced_glob_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'vm-bot.db'}"
    for pattern, why in (("web-[", "without a closing ]"), ("web-]", "without an opening ["), ("[", "not an instance")):
        done = _vm_bot(tmp_path, "perms", "grant", "U0ALICE1", "--instances", pattern, env={"DATABASE_URL": url})
        assert done.returncode == 2, done.stderr
        assert why in done.stderr
    done = _vm_bot(tmp_path, "perms", "grant", "U0ALICE1", "--instances", "web-[12]", env={"DATABASE_URL": url})
    assert done.returncode == 0, done.stderr


def test_the_default_sqlite_file_is_named_absolutely_by_every_command(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    done_here = _vm_bot(here, "perms", "list")
    done_there = _vm_bot(there, "db", "upgrade")
    assert f"using database sqlite:///{here / 'vm-bot.db'}" in done_here.stderr
    assert f"using database sqlite:///{there / 'vm-bot.db'}" in done_there.stderr
