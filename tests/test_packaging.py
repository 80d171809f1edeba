"""Installs the way operators install: the wheel carries the migrations; the container and compose file hold up."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import yaml

from bot.config import load_settings
from bot.db import migrate

ROOT = Path(__file__).resolve().parent.parent


def test_migrations_live_at_the_top_level_and_ship_inside_the_package() -> None:
    assert migrate.MIGRATIONS_DIR == ROOT / "migrations"
    assert not (ROOT / "bot" / "migrations").exists(), "the migrations live at the top level of the repository"
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["bot.migrations"] == "migrations"  # installed as bot/migrations
    globs = setuptools["package-data"]["bot.migrations"]
    files = [
        p.relative_to(ROOT / "migrations").as_posix()
        for p in (ROOT / "migrations").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert "env.py" in files and any(f.startswith("versions/0001") for f in files)
    for file in files:
        assert any(fnmatch(file, g) for g in globs), f"{file} would be missing from the wheel"


def test_every_package_under_bot_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "bot").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert listed == found | {"bot.migrations"}


def test_ci_runs_the_wheel_check_which_builds_installs_and_runs_from_elsewhere() -> None:
    assert ".ci/wheel-check.sh" in (ROOT / ".ci" / "run").read_text()
    script = (ROOT / ".ci" / "wheel-check.sh").read_text()
    for step in ("pip wheel", "-m venv", "vm-bot db upgrade", "vm-bot demo", 'cd "$work/run"'):
        assert step in script


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions as (keyword, arguments), continuation lines joined, comments dropped."""
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def test_the_dockerfile_installs_the_wheel_as_a_non_root_user_with_a_health_check() -> None:
    steps = dockerfile_instructions()
    froms = [args for keyword, args in steps if keyword == "FROM"]
    runs = " ".join(args for keyword, args in steps if keyword == "RUN")
    copies = [args for keyword, args in steps if keyword == "COPY"]
    assert froms and all(f.startswith("python:3.12-slim") for f in froms)
    assert "bot ./bot" in copies and "migrations ./migrations" in copies  # the wheel is built with its migrations
    assert "pip wheel" in runs and "vm_bot-*.whl)[postgres]" in runs
    assert [args for keyword, args in steps if keyword == "USER"] == ["vmbot"]
    assert "useradd" in runs and "vmbot" in runs
    healthcheck = next(args for keyword, args in steps if keyword == "HEALTHCHECK")
    assert "/readyz" in healthcheck
    assert [args for keyword, args in steps if keyword == "CMD"] == ['["vm-bot", "run"]']


def test_compose_runs_postgresql_and_two_replicas_sharing_it() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    bots = [s for name, s in services.items() if name.startswith("vm-bot")]
    assert len(bots) == 2
    for bot in bots:
        assert bot["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_a_plain_postgresql_url_uses_psycopg_3() -> None:
    settings = load_settings({"DATABASE_URL": "postgresql://u:p@db/vmbot"}, slack=False, zenlayer=False)
    assert settings.database_url == "postgresql+psycopg://u:p@db/vmbot"


HIDE_PSYCOPG = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'psycopg':
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Hide())
from bot.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_postgresql_without_the_driver_is_one_sentence_naming_the_extra(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", HIDE_PSYCOPG, "db", "upgrade"],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "DATABASE_URL": "postgresql://u@db/x"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "pip install 'vm-bot[postgres]'" in done.stderr
    assert "Traceback" not in done.stderr
