"""Run the Alembic migrations (top-level migrations/ in a checkout, bot/migrations/ in the wheel) from code."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import bot
from bot.db.session import make_engine

if TYPE_CHECKING:
    from alembic.config import Config

_PACKAGE = Path(bot.__file__).resolve().parent
# The wheel maps the top-level migrations/ folder into the package (pyproject.toml); a checkout has it beside bot/.
MIGRATIONS_DIR = next(
    (d for d in (_PACKAGE / "migrations", _PACKAGE.parent / "migrations") if (d / "env.py").is_file()),
    _PACKAGE.parent / "migrations",
)

# Alembic logs one INFO line per built-in plugin on import; that is noise on every `vm-bot` command. Alembic is
# imported inside the functions below so that this runs first.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

# Alembic runs env.py through module-level proxies (alembic.context, alembic.op), so one process may run only one
# migration command at a time; other processes are kept out by the database (see migrations/env.py).
_ALEMBIC_LOCK = threading.Lock()


def alembic_config(url: str) -> Config:
    """Return an Alembic config for the repo's migrations, aimed at url."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Handed over as an attribute, not an option: the config parser would choke on a % in a password.
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    return config


def head_revision() -> str | None:
    """Return the newest revision of the migrations."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str) -> str | None:
    """Return the revision the database at url is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    migration_log = logging.getLogger("alembic.runtime.migration")
    previous = migration_log.level
    migration_log.setLevel(logging.WARNING)  # "Context impl ..." says nothing when only reading the revision
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        migration_log.setLevel(previous)
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> str | None:
    """Migrate the database at url up to revision and return the revision it is now at."""
    from alembic import command

    with _ALEMBIC_LOCK:
        command.upgrade(alembic_config(url), revision)
    return current_revision(url)


def downgrade(url: str, revision: str) -> str | None:
    """Migrate the database at url down to revision ("base" for empty) and return the revision it is now at."""
    from alembic import command

    with _ALEMBIC_LOCK:
        command.downgrade(alembic_config(url), revision)
    return current_revision(url)
