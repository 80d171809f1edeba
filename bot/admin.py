"""Handlers for the operator commands: `vm-bot db upgrade|prune`, `vm-bot perms ...` and `vm-bot audit`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bot import audit_export
from bot.config import Settings
from bot.db import audit as audit_log
from bot.db import migrate
from bot.db.session import Database
from bot.domain.durations import parse_duration, say_duration, typed_duration
from bot.domain.errors import InvalidInput
from bot.domain.vocabulary import ANY_CHANNEL
from bot.grants.admin import GrantArgs, add_audited, revoke_audited
from bot.grants.rules import GrantRecord, list_grants
from bot.grants.selectors import OPTION_OF_KIND, problem
from bot.operations import retention

log = logging.getLogger(__name__)

CLI_ACTOR = "cli"
# How `perms list` names each selector kind: the option that makes it, without the dashes.
KIND_WORDS = {kind.value: option.removeprefix("--") for kind, option in OPTION_OF_KIND.items()}
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def announce_database(settings: Settings) -> None:
    """Say which database this command uses (absolute for SQLite), so two directories cannot silently differ."""
    log.info("using database %s", _safe_url(settings.database_url))


def _safe_url(url: str) -> str:
    """Return url with any password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable DATABASE_URL)"


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    """Print message on stderr and return the exit code."""
    print(f"vm-bot: {message}", file=sys.stderr)
    return code


def _database_error(exc: SQLAlchemyError, settings: Settings) -> int:
    """Report a database failure in one line, without SQL or parameters."""
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return _fail(f"database error on {_safe_url(settings.database_url)}: {first_line}")


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Hide Alembic's INFO chatter while a command migrates as a side effect."""
    logger = logging.getLogger("alembic")
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _open(settings: Settings) -> Database:
    """Bring the database to the newest migration and open it."""
    announce_database(settings)
    with _quiet_alembic():
        migrate.upgrade(settings.database_url)
    return Database(settings.database_url)


def _clean(value: object) -> str:
    """Render a table cell on one line, with control characters (terminal escapes) made visible."""
    text = "" if value is None else str(value)
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as a plain-text table with a header line."""
    cells = [[_clean(h) for h in headers], *[[_clean(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _when(moment: datetime | None) -> str:
    """Format a UTC time for a table."""
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _grants_table(grants: Sequence[GrantRecord]) -> str:
    """Format grants with every field."""
    headers = ("USER", "ACTION", "KIND", "PATTERN", "CHANNEL", "NEEDS APPROVAL", "MAX RUN", "GRANTED BY", "WHEN")
    rows = [
        (
            g.user_id,
            g.action,
            KIND_WORDS.get(g.kind, g.kind),
            g.pattern,
            "* (any)" if g.channel_id == ANY_CHANNEL else g.channel_id,
            "yes" if g.needs_approval else "no",
            say_duration(g.max_run_seconds) if g.max_run_seconds else "-",
            g.granted_by,
            _when(g.created_at),
        )
        for g in grants
    ]
    return _table(headers, rows)


def _plural(count: int, noun: str) -> str:
    """Return e.g. '1 grant' or '2 grants'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def db_upgrade(settings: Settings) -> int:
    """`vm-bot db upgrade`: migrate to the newest revision and say which it is."""
    announce_database(settings)
    try:
        revision = migrate.upgrade(settings.database_url)
    except SQLAlchemyError as exc:
        return _database_error(exc, settings)
    print(f"database at head ({revision})")
    return EXIT_OK


def perms(args: argparse.Namespace, settings: Settings) -> int:
    """`vm-bot perms grant|revoke|list`."""
    try:
        database = _open(settings)
    except SQLAlchemyError as exc:
        return _database_error(exc, settings)
    try:
        if args.perms_command == "grant":
            return _grant(database, args)
        if args.perms_command == "revoke":
            return _revoke(database, args)
        if args.perms_command == "list":
            return _list(database, args)
        raise AssertionError(f"unhandled perms command {args.perms_command!r}")
    except InvalidInput as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SQLAlchemyError as exc:
        return _database_error(exc, settings)
    finally:
        database.close()


def _grant(database: Database, args: argparse.Namespace) -> int:
    """Add grants, audit them, and show the user's grants."""
    with database.session() as session:
        added = add_audited(session, CLI_ACTOR, _grant_args(args))
        grants = list_grants(session, args.user_id)
    print(f"granted {args.user_id}: {_plural(added, 'new grant')}")
    print(_grants_table(grants))
    return EXIT_OK


def _revoke(database: Database, args: argparse.Namespace) -> int:
    """Remove grants, audit it, and say how many went."""
    with database.session() as session:
        removed = revoke_audited(session, CLI_ACTOR, _grant_args(args))
        remaining = list_grants(session, args.user_id)
    if removed:
        print(f"revoked {_plural(removed, 'grant')} from {args.user_id}")
    else:
        print(f"no grants of {args.user_id} matched; nothing revoked")
    print(f"{args.user_id} now has {_plural(len(remaining), 'grant')}")
    return EXIT_OK


def _grant_args(args: argparse.Namespace) -> GrantArgs:
    """Translate `perms grant|revoke` arguments into the shape chat commands use too."""
    return GrantArgs(
        user_id=args.user_id,
        patterns=list(args.instances or []),
        channels=list(getattr(args, "channel", None) or []),
        action=getattr(args, "action", None),
        needs_approval=bool(getattr(args, "needs_approval", False)),
        max_run_seconds=parse_duration(args.max_run, what="--max-run") if getattr(args, "max_run", None) else None,
        names=list(args.names or []),
        groups=list(args.resource_group or []),
        tags=list(args.tag or []),
    )


def _list(database: Database, args: argparse.Namespace) -> int:
    """Print grants as a table."""
    selectors = _grant_args(argparse.Namespace(**{**vars(args), "user_id": args.user_id or ""})).selectors
    problems = [p for p in (problem(s) for s in selectors) if p]
    if problems:
        raise InvalidInput("; ".join(problems))
    with database.session(readonly=True) as session:
        grants = list_grants(session, args.user_id, selectors=selectors)
    if not grants:
        print(f"no grants for {args.user_id}" if args.user_id else "no grants")
        return EXIT_OK
    print(_grants_table(grants))
    return EXIT_OK


def db_prune(args: argparse.Namespace, settings: Settings) -> int:
    """`vm-bot db prune`: delete (or, with --dry-run, count) finished work's rows older than --older-than."""
    if args.older_than < retention.MINIMUM_AGE_SECONDS:
        return _fail(f"--older-than must be at least 1d, got {typed_duration(args.older_than)}", EXIT_USAGE)
    try:
        database = _open(settings)
        try:
            pruned = retention.prune(database, args.older_than, audit=args.audit, dry_run=args.dry_run)
        finally:
            database.close()
    except SQLAlchemyError as exc:
        return _database_error(exc, settings)
    verb = "would delete" if args.dry_run else "deleted"
    age = typed_duration(args.older_than)
    print(f"{verb} {_plural(pruned.total, 'row')} of finished work older than {age}:")
    print(_table(("TABLE", "ROWS"), list(pruned.counts().items())))
    if not args.audit:
        print("audit events kept (add --audit to delete those older than that too; export them first)")
    return EXIT_OK


def audit(args: argparse.Namespace, settings: Settings) -> int:
    """`vm-bot audit`: print the latest audit events, newest first, or export a window of them (json, csv)."""
    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit must be at least 1, got {args.limit}", EXIT_USAGE)
    if args.since is not None and args.until is not None and args.until <= args.since:
        return _fail("--until must be later than --since", EXIT_USAGE)
    window = audit_log.Window(user=args.user, since=args.since, until=args.until)
    if args.format != "text":
        return _export(settings, window, args.format, args.limit)
    try:
        database = _open(settings)
        try:
            with database.session(readonly=True) as session:
                events = audit_log.latest(session, limit=args.limit or 50, window=window)
        finally:
            database.close()
    except SQLAlchemyError as exc:
        return _database_error(exc, settings)
    if not events:
        print("no audit events")
        return EXIT_OK
    headers = ("WHEN", "ACTOR", "EVENT", "REQUEST", "SUBJECT", "ZENLAYER REQUEST", "DETAIL")
    rows = [
        (_when(e.created_at), e.actor, e.event, e.request_id, e.subject, e.zenlayer_request_id, e.detail)
        for e in events
    ]
    print(_table(headers, rows))
    return EXIT_OK


def _export(settings: Settings, window: audit_log.Window, fmt: str, limit: int | None) -> int:
    """Stream the window's events to stdout in fmt, oldest first, and say on stderr how many went."""
    try:
        database = _open(settings)
        try:
            count = audit_export.write(audit_log.stream(database, window, limit=limit), sys.stdout, fmt)
            sys.stdout.flush()
        finally:
            database.close()
    except SQLAlchemyError as exc:
        return _database_error(exc, settings)
    log.info("exported %s", _plural(count, "audit event"))
    return EXIT_OK
