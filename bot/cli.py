"""The `vm-bot` command line: parse arguments, load settings, hand over to the right part."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TypeAlias

from bot.config import ConfigError, Settings, load_settings, settings_help
from bot.domain.durations import parse_duration
from bot.domain.errors import InvalidInput
from bot.domain.vocabulary import GrantAction
from bot.logging_setup import configure_logging, secrets_of

# What add_subparsers returns: each _add_* below adds its commands to it.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _build_parser() -> argparse.ArgumentParser:
    """Return the parser for every `vm-bot` command."""
    parser = argparse.ArgumentParser(
        prog="vm-bot",
        description="Slack ChatOps bot: let engineers start the Zenlayer VMs they are granted.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=_log_level,
        help="logging level: DEBUG, INFO, WARNING or ERROR (default INFO)",
    )
    parser.add_argument("--version", action="version", version=f"vm-bot {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser(
        "run",
        help="serve Slack (HTTP on $PORT, or Socket Mode when SLACK_APP_TOKEN is set)",
        description="Serve Slack: HTTP on $HOST:$PORT, or Socket Mode when SLACK_APP_TOKEN is set "
        "(health and metrics stay on $PORT). Migrates the database first.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    _add_db_commands(commands)
    _add_perms_commands(commands)
    _add_audit_command(commands)
    _add_simulator_command(commands)
    commands.add_parser("demo", help="play a whole conversation locally, with no Slack or Zenlayer account")
    commands.add_parser(
        "doctor",
        help="check the set-up: one line per check and its verdict; exit 0 only when all pass",
        description="Checks the settings, the database, the Slack token and its scopes, the mode's secret, the "
        "Zenlayer credentials and clock, and that an admin grant exists. Changes nothing.",
    )
    return parser


def _add_db_commands(commands: Subcommands) -> None:
    """Add `vm-bot db upgrade` and `vm-bot db prune`."""
    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    db_commands.add_parser("upgrade", help="bring the database to the newest migration")
    prune = db_commands.add_parser(
        "prune",
        help="delete finished work's rows older than a duration (audit events only with --audit)",
        description="Deletes decided clicks, the instance rows and Zenlayer calls of settled operations and delivered "
        "messages older than DURATION. Pending, active and untold operations, undecided clicks and pending messages "
        "are never touched; audit events (and the operations they name) only with --audit.",
    )
    prune.add_argument(
        "--older-than", required=True, type=_duration, metavar="DURATION", help="e.g. 90d or 2160h (at least 1d)"
    )
    prune.add_argument("--audit", action="store_true", help="also delete audit events older than that (export first)")
    prune.add_argument("--dry-run", action="store_true", help="only count what would be deleted")


def _add_perms_commands(commands: Subcommands) -> None:
    """Add `vm-bot perms grant|revoke|list`."""
    perms = commands.add_parser("perms", help="manage who may start which instances")
    perms_commands = perms.add_subparsers(dest="perms_command", metavar="PERMS_COMMAND", required=True)
    grant = perms_commands.add_parser(
        "grant",
        help="allow a Slack user to act on instances",
        description="Each selector value becomes its own grant (in each --channel given). Give at least one.",
    )
    grant.add_argument("user_id", metavar="USER_ID", help="Slack member id (U… or W…)")
    _add_selector_options(grant)
    grant.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="CHANNEL_ID",
        help="only from this channel (repeatable)",
    )
    grant.add_argument(
        "--action",
        choices=[a.value for a in GrantAction],
        default=GrantAction.START.value,
        help="what is granted (default start)",
    )
    grant.add_argument(
        "--needs-approval",
        action="store_true",
        help="starts under this grant need a second person's approval",
    )
    grant.add_argument(
        "--max-run",
        metavar="DURATION",
        help="start grants: every start is time-boxed, at most this long (45s, 30m, 4h, 1d, 1h30m)",
    )
    revoke = perms_commands.add_parser(
        "revoke",
        help="remove grants (all of the user's when no selector)",
        description="Removes the user's grants that match every kind of option given.",
    )
    revoke.add_argument("user_id", metavar="USER_ID")
    _add_selector_options(revoke)
    revoke.add_argument("--channel", action="append", default=[], metavar="CHANNEL_ID")
    revoke.add_argument("--action", choices=[a.value for a in GrantAction], default=None)
    listing = perms_commands.add_parser("list", help="show grants as a table (only those with the selectors given)")
    listing.add_argument("user_id", metavar="USER_ID", nargs="?")
    _add_selector_options(listing)


def _add_audit_command(commands: Subcommands) -> None:
    """Add `vm-bot audit` (the table, or an export)."""
    audit = commands.add_parser(
        "audit",
        help="print the latest audit events, or export them (--format json|csv)",
        description="text: a table of the latest events, newest first. json (one object per line) and csv: every "
        "event in the window, oldest first, streamed (for compliance exports of any size).",
    )
    audit.add_argument(
        "--limit", type=int, default=None, help="how many events (default 50 in the table, all in an export)"
    )
    audit.add_argument("--user", metavar="USER_ID", default=None, help="only events by or about this user")
    audit.add_argument(
        "--since", type=_moment, metavar="DATE", help="events at or after DATE: 2026-10-01 or an ISO 8601 time (UTC)"
    )
    audit.add_argument("--until", type=_moment, metavar="DATE", help="events before DATE")
    audit.add_argument("--format", choices=("text", "json", "csv"), default="text", help="default text")


def _add_simulator_command(commands: Subcommands) -> None:
    """Add `vm-bot simulator`."""
    simulator = commands.add_parser("simulator", help="a local Zenlayer-compatible VM API for demos and staging")
    simulator.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    simulator.add_argument("--port", type=int, default=8089, help="port to listen on (default 8089; 0 = any free)")
    simulator.add_argument(
        "--boot-seconds",
        type=float,
        default=5.0,
        help="seconds a started instance spends BOOTING (default 5)",
    )
    simulator.add_argument(
        "--stop-seconds",
        type=float,
        default=5.0,
        help="seconds a stopped instance spends STOPPING (default 5)",
    )
    simulator.add_argument(
        "--reboot-seconds",
        type=float,
        default=5.0,
        help="seconds a rebooted instance spends in REBOOT (default 5)",
    )
    simulator.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="SPEC",
        help=INSTANCE_SPEC_HELP,
    )


# Kept here rather than imported, so that `vm-bot` does not load the simulator to print help (see its cli module).
INSTANCE_SPEC_HELP = (
    "an instance to serve (repeatable): ID[:STATUS] as before, optionally followed by comma-separated "
    "name=NAME, group=RESOURCE_GROUP_NAME, zone=ZONE, type=INSTANCE_TYPE, status=STATUS and tag=KEY=VALUE "
    "(repeatable); leave the ID out (start with a key=) for a generated opaque id. Status defaults to STOPPED, "
    "the group to 'Default Resource Group'. Example: --instance 'name=web-1,group=dev-team,tag=team=web'"
)


def _add_selector_options(parser: argparse.ArgumentParser) -> None:
    """Add the four instance selectors, each repeatable, shared by perms grant, revoke and list."""
    parser.add_argument(
        "--instances",
        action="append",
        default=[],
        metavar="PATTERN",
        help="shell-style glob over instance ids (repeatable): '*', 'web-*', an exact id",
    )
    parser.add_argument(
        "--names",
        action="append",
        default=[],
        metavar="PATTERN",
        help="shell-style glob over instance names as the console shows them (repeatable)",
    )
    parser.add_argument(
        "--resource-group",
        action="append",
        default=[],
        metavar="ID_OR_NAME",
        help="every instance in this Zenlayer resource group, by id or exact name (repeatable)",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="every instance carrying this tag, matched exactly (repeatable)",
    )


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: str) -> str:
    """Accept a logging level name (any case); anything else is a usage error."""
    level = value.upper()
    if level not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not a level; use one of {', '.join(_LOG_LEVELS)}")
    return level


def _duration(value: str) -> float:
    """Accept a duration like 90d (as seconds); anything else is a usage error."""
    try:
        return parse_duration(value, what="The duration", minimum=0, maximum=None)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _moment(value: str) -> datetime:
    """Accept a date (midnight UTC) or an ISO 8601 time (UTC unless it names its offset)."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a date like 2026-10-01 or an ISO 8601 time, got {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _version() -> str:
    """Return the installed vm-bot version."""
    try:
        return version("vm-bot")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `vm-bot` command line and return the process exit code."""
    args = _build_parser().parse_args(argv)
    configure_logging(args.log_level)
    _quiet_library_noise()
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped early (`vm-bot perms list | head`): that is its choice, not our failure. Point stdout
        # at /dev/null so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _quiet_library_noise() -> None:
    """Drop log lines that say nothing to an operator: one per HTTP request, and a warning we cannot act on."""
    # Our Zenlayer client logs each call (with its requestId) at DEBUG already; httpx would add one INFO per poll.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # bolt reads SLACK_BOT_TOKEN itself and warns that the client we pass (which carries that token) wins.
    logging.getLogger("slack_bolt.App").addFilter(lambda record: "`token` will be unused" not in record.getMessage())


def _settings(*, slack: bool = True, zenlayer: bool = True) -> Settings:
    """Load the settings and switch logging to the format they ask for (secrets redacted in every line)."""
    settings = load_settings(slack=slack, zenlayer=zenlayer)
    configure_logging(logging.getLevelName(logging.getLogger().level), settings.log_format, secrets_of(settings))
    return settings


def _dispatch(args: argparse.Namespace) -> int:
    """Call the handler for the parsed command."""
    if args.command == "run":
        from bot.server import run

        return run(_settings())
    if args.command == "simulator":
        from bot.devtools.zenlayer_simulator import main as simulator_main

        return simulator_main(args, _settings(slack=False, zenlayer=False))
    if args.command == "demo":
        from bot.devtools.demo import main as demo_main

        return demo_main()
    if args.command == "doctor":
        from bot.doctor import main as doctor_main

        return doctor_main()
    settings: Settings = _settings(slack=False, zenlayer=False)
    from bot import admin

    if args.command == "db" and args.db_command == "prune":
        return admin.db_prune(args, settings)
    if args.command == "db":
        return admin.db_upgrade(settings)
    if args.command == "perms":
        return admin.perms(args, settings)
    if args.command == "audit":
        return admin.audit(args, settings)
    raise AssertionError(f"unhandled command {args.command!r}")
