"""Start-up checks for `vm-bot run`: each problem an operator can fix becomes one sentence naming the fix."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.config import Settings
from bot.db import migrate
from bot.db.session import Database, is_sqlite
from bot.health import database_problem

log = logging.getLogger(__name__)

# auth.test errors that mean the token itself is wrong, revoked or belongs to a removed app or user.
BAD_TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive", "no_permission"}
)
SLACK_CHECK_TIMEOUT_SECONDS = 10


class StartupError(Exception):
    """A problem that stops `vm-bot run`; the message says what is wrong and how to fix it."""


def preflight(settings: Settings) -> None:
    """Check the database (reachable, migrated, writable) and the Slack token; raise StartupError on a problem."""
    check_database(settings.database_url)
    check_slack(settings)


def _safe(url: str) -> str:
    """Return url with any password masked."""
    return make_url(url).render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    """Return the first line of the most specific message an exception carries."""
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


def _sqlite_path(url: str) -> Path | None:
    """Return the file of an SQLite URL, or None for memory databases and other backends."""
    if not is_sqlite(url):
        return None
    database = make_url(url).database or ""
    database = database.removeprefix("file:").split("?", 1)[0]  # an SQLite URI filename (uri=true)
    return Path(database) if database and database != ":memory:" else None


def _database_sentence(url: str, detail: str) -> str:
    """Turn a database failure into a sentence naming the likely fix."""
    path = _sqlite_path(url)
    lowered = detail.lower()
    if path is not None:
        if "readonly" in lowered or "read-only" in lowered or not os.access(path.parent, os.W_OK):
            return (
                f"the SQLite database {path} is read-only ({detail}); give the user running vm-bot write access to "
                f"the file and to its directory {path.parent} (SQLite writes a journal beside it), "
                "or point DATABASE_URL elsewhere"
            )
        if "unable to open" in lowered:
            return (
                f"cannot open the SQLite database {path} ({detail}); create the directory {path.parent} and make it "
                "writable for the user running vm-bot, or point DATABASE_URL elsewhere"
            )
        return f"the SQLite database {path} cannot be used ({detail}); check the file, or point DATABASE_URL elsewhere"
    if "connect" in lowered or "could not translate host" in lowered or "timeout" in lowered:
        return (
            f"cannot reach the database at {_safe(url)} ({detail}); check that it is running and that DATABASE_URL's "
            "host, port, user, password and database name are right"
        )
    return f"the database at {_safe(url)} cannot be used ({detail}); check DATABASE_URL and the database's logs"


def check_database(url: str) -> None:
    """Migrate the database to head and prove it takes writes; raise StartupError naming the fix otherwise."""
    log.info("using database %s", _safe(url))
    path = _sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        raise StartupError(
            f"the directory {path.parent} for the SQLite database {path.name} does not exist; create it "
            "or point DATABASE_URL elsewhere"
        )
    try:
        migrate.upgrade(url)
    except SQLAlchemyError as exc:
        raise StartupError(_database_sentence(url, _first_line(exc))) from None
    except Exception as exc:
        # Alembic's own errors (e.g. a database newer than this vm-bot: an unknown revision).
        raise StartupError(
            f"the migrations cannot run on {_safe(url)} ({_first_line(exc)}); if the database was migrated by a "
            "newer vm-bot, run that version (or restore a backup); otherwise run `vm-bot db upgrade` to see more"
        ) from None
    db = Database(url)
    try:
        problem = database_problem(db, migrate.head_revision())
    finally:
        db.close()
    if problem is not None:
        raise StartupError(_database_sentence(url, problem.removeprefix("the database is not usable: ")))


def check_slack(settings: Settings) -> None:
    """Ask Slack who the token belongs to (auth.test); raise StartupError when it is refused or unreachable."""
    if settings.slack_bot_token is None:
        return
    client = WebClient(
        token=settings.slack_bot_token.reveal(), base_url=settings.slack_api_url, timeout=SLACK_CHECK_TIMEOUT_SECONDS
    )
    try:
        identity = client.auth_test()
    except SlackApiError as exc:
        error = str(exc.response.get("error", "")) if exc.response is not None else ""
        if error in BAD_TOKEN_ERRORS:
            raise StartupError(
                f"Slack refused SLACK_BOT_TOKEN ({error}): it is wrong, revoked or its app was uninstalled. Copy the "
                "Bot User OAuth Token (xoxb-…) from your app's OAuth & Permissions page again (reinstall the app to "
                "the workspace if it was revoked)"
            ) from None
        status = exc.response.status_code if exc.response is not None else "?"
        raise StartupError(
            f"Slack answered auth.test with {error or f'HTTP {status}'} at {settings.slack_api_url}; check "
            "SLACK_API_URL (normally https://slack.com/api/) and Slack's status page"
        ) from None
    except OSError as exc:  # URLError, timeouts and refused connections are all OSErrors
        reason = getattr(exc, "reason", None) or exc
        raise StartupError(
            f"cannot reach Slack at {settings.slack_api_url} ({reason}); check the network, any proxy "
            "(HTTPS_PROXY) and SLACK_API_URL"
        ) from None
    log.info("Slack token belongs to %s in team %s", identity.get("user_id"), identity.get("team_id"))
