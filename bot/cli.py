"""The `vm-bot` command line: parse arguments, load settings, hand over to the right part."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bot.config import ConfigError, Settings, load_settings
from bot.domain.vocabulary import GrantAction


def _build_parser() -> argparse.ArgumentParser:
    """Return the parser for every `vm-bot` command."""
    parser = argparse.ArgumentParser(
        prog="vm-bot",
        description="Slack ChatOps bot: let engineers start the Zenlayer VMs they are granted.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser("run", help="serve Slack (HTTP on $PORT, or Socket Mode when SLACK_APP_TOKEN is set)")

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    db_commands.add_parser("upgrade", help="bring the database to the newest migration")

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

    audit = commands.add_parser("audit", help="print the latest audit events")
    audit.add_argument("--limit", type=int, default=50, help="how many events (default 50)")
    audit.add_argument("--user", metavar="USER_ID", default=None, help="only events by or about this user")

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
        "--instance",
        action="append",
        default=[],
        metavar="SPEC",
        help=INSTANCE_SPEC_HELP,
    )

    commands.add_parser("demo", help="play a whole conversation locally, with no Slack or Zenlayer account")
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `vm-bot` command line and return the process exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _quiet_library_noise()
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


def _quiet_library_noise() -> None:
    """Drop log lines that say nothing to an operator: one per HTTP request, and a warning we cannot act on."""
    # Our Zenlayer client logs each call (with its requestId) at DEBUG already; httpx would add one INFO per poll.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # bolt reads SLACK_BOT_TOKEN itself and warns that the client we pass (which carries that token) wins.
    logging.getLogger("slack_bolt.App").addFilter(lambda record: "`token` will be unused" not in record.getMessage())


def _dispatch(args: argparse.Namespace) -> int:
    """Call the handler for the parsed command."""
    if args.command == "run":
        from bot.server import run

        return run(load_settings())
    if args.command == "simulator":
        from bot.devtools.zenlayer_simulator import main as simulator_main

        return simulator_main(args, load_settings(slack=False, zenlayer=False))
    if args.command == "demo":
        from bot.devtools.demo import main as demo_main

        return demo_main()
    settings: Settings = load_settings(slack=False, zenlayer=False)
    from bot import admin

    if args.command == "db":
        return admin.db_upgrade(settings)
    if args.command == "perms":
        return admin.perms(args, settings)
    if args.command == "audit":
        return admin.audit(args, settings)
    raise AssertionError(f"unhandled command {args.command!r}")
