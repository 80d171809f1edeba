"""Alembic environment: migrate the database vm-bot is configured with (DATABASE_URL, via bot.config)."""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from bot.config import load_settings
from bot.db.models import Base, UtcDateTime
from bot.db.session import make_engine

# Any constant works; it only has to be the same for every replica that migrates the same PostgreSQL database.
_PG_MIGRATION_LOCK = 0x766D626F74  # "vmbot"

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    """Return the URL handed over by bot.db.migrate, or else DATABASE_URL as bot.config reads it."""
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    return load_settings(slack=False, zenlayer=False).database_url


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render UtcDateTime as the plain column type, so migrations never import application code."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _options() -> dict[str, Any]:
    """Return the context options shared by online and offline runs."""
    return {
        "target_metadata": target_metadata,
        "render_as_batch": True,
        "compare_type": True,
        "render_item": _render_item,
    }


def run_migrations_offline() -> None:
    """Emit the migration SQL to stdout instead of running it."""
    context.configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"}, **_options())
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection, *, own_engine: bool) -> None:
    """Run the migrations on connection in one transaction, serialised against other migrating replicas."""
    sqlite = connection.dialect.name == "sqlite"
    # Our SQLite engine issues its own BEGIN, so SQLite DDL is transactional there: a failed upgrade leaves the
    # database as it was.
    context.configure(connection=connection, transactional_ddl=True if sqlite and own_engine else None, **_options())
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        context.run_migrations()
        if sqlite:
            # Batch migrations copy tables with foreign keys off; make sure no copy broke a reference.
            problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise RuntimeError(f"migration left broken foreign keys: {problems[:10]}")


def run_migrations_online() -> None:
    """Run the migrations against the database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection, own_engine=False)
        return
    # Foreign keys off: batch migrations on SQLite drop and recreate tables, which must not cascade.
    engine = make_engine(_database_url(), foreign_keys=False)
    try:
        with engine.connect() as connection:
            _run(connection, own_engine=True)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
