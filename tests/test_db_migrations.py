"""Migrations: they build the schema the models describe, undo it, and run safely from several places at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from bot.db import migrate
from bot.db.models import Base
from bot.db.session import make_engine
from tests.db_support import BACKENDS, empty_database_url, run_together

TABLES = {"grants", "operations", "operation_instances", "audit_events"}
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path):
    with empty_database_url(request.param, tmp_path) as url:
        yield url


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    head = migrate.head_revision()
    assert head is not None
    assert migrate.current_revision(empty_url) is None

    assert migrate.upgrade(empty_url) == head
    assert _tables(empty_url) >= TABLES

    assert migrate.downgrade(empty_url, "base") is None
    assert not (_tables(empty_url) & TABLES)

    assert migrate.upgrade(empty_url) == head
    assert _tables(empty_url) >= TABLES
    assert migrate.upgrade(empty_url) == head  # at head already: nothing to do, no error


def test_models_match_migrations(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_constraint_names_follow_the_convention(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        inspector = inspect(engine)
        uniques = {u["name"] for u in inspector.get_unique_constraints("grants")}
        foreign = {f["name"] for f in inspector.get_foreign_keys("operation_instances")}
        indexes = {i["name"] for i in inspector.get_indexes("operations") if not i.get("duplicates_constraint")}
    finally:
        engine.dispose()
    assert uniques == {"uq_grants_user_id_action_kind_pattern_channel_id"}
    assert foreign == {"fk_operation_instances_request_id_operations"}
    assert indexes == {"ix_operations_requester_id", "ix_operations_state_expires_at", "ix_operations_parent_id"}


def test_concurrent_upgrades_from_several_processes_all_succeed(empty_url: str) -> None:
    # Several replicas run `db upgrade` as they start; none may fail or apply a revision twice.
    code = "import sys; from bot.db import migrate; print(migrate.upgrade(sys.argv[1]))"
    env = {"PATH": os.environ.get("PATH", "")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, empty_url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outcomes = [(p.wait(60), *p.communicate()) for p in processes]
    assert [(rc, out.strip()) for rc, out, _ in outcomes] == [(0, migrate.head_revision())] * 3, outcomes
    assert _tables(empty_url) >= TABLES


def test_concurrent_upgrades_from_threads_of_one_process_all_succeed(empty_url: str) -> None:
    results = run_together(4, lambda _: migrate.upgrade(empty_url))
    assert set(results) == {migrate.head_revision()}


def test_alembic_command_line_reads_database_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url}
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini")]
    done = subprocess.run([*alembic, "upgrade", "head"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert migrate.current_revision(url) == migrate.head_revision()
