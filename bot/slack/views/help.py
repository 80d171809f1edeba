"""Help, grants and the answers to commands that need no lookup: usage, slow-down, checking, admin replies."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.durations import say_duration
from bot.domain.vocabulary import ANY_CHANNEL, GrantAction
from bot.grants.admin import GrantArgs
from bot.grants.rules import GrantRecord, selector_of
from bot.slack.views.format import code, escape, listing, mention, quoted
from bot.slack.views.message import Message

USAGE = (
    "*vm-bot* starts, stops and reboots the Zenlayer VMs you are allowed to.\n"
    "• `/vm start NAME_OR_ID [...] [--for DURATION]` — ask to start instances by name or id (separated by spaces, "
    "commas or newlines); you confirm before anything happens. `--for 4h` (or `45s`, `30m`, `1d`, `1h30m`) stops "
    "them again that long after they are RUNNING, with a reminder to extend first\n"
    "• `/vm start` alone — a form: pick a channel and type to find the instances you may start (also from "
    "vm-bot's Home tab, and the *Start instances* shortcut)\n"
    "• `/vm stop NAME_OR_ID [...]`, `/vm reboot NAME_OR_ID [...]` — the same, to stop or reboot running ones "
    "(your own time-boxed runs you may always stop)\n"
    "• `/vm runs` — your running time-boxed runs, to extend or stop (`--all`: everyone's, for admins)\n"
    "• `/vm status NAME_OR_ID [...] [--page N]` — show instances' current status, 50 a page\n"
    "• `/vm status --request N` — every instance of start request N (the number its thread points at)\n"
    "• `/vm list [PATTERN] [--page N]` — the instances you may start here, 50 a page; tick the stopped ones and "
    "press *Start selected*\n"
    "• `/vm grants` — show what you may do\n"
    "• `/vm help` — what you can do here"
)
ADMIN_USAGE = (
    "• `/vm grant @user [PATTERN ...] [--instances PATTERN] [--names PATTERN] [--resource-group ID_OR_NAME] "
    "[--tag KEY=VALUE] [--channel #channel ...] [--action start|stop|reboot|approve|admin] [--needs-approval] "
    "[--max-run DURATION]` — let someone act on instances (by id glob, name glob, resource group or tag); "
    "`--max-run` makes every start the grant allows a time-boxed run of at most that long\n"
    "• `/vm revoke @user [selectors as for grant] [--channel #channel ...] [--action ACTION]` — take grants away"
)
ACTION_PHRASES: dict[str, str] = {
    GrantAction.START: "start",
    GrantAction.STOP: "stop",
    GrantAction.REBOOT: "reboot",
    GrantAction.APPROVE: "approve others' starts of",
    GrantAction.ADMIN: "manage grants for",
}


def slow_down(per_minute: int) -> Message:
    """The private reply to someone over the command rate limit."""
    return Message(
        f":snail: Slow down: at most {per_minute} `/vm` commands a minute each. "
        "Nothing was done with this one; try again in a minute."
    )


def usage(problem: str | None = None) -> Message:
    """The usage reply, optionally preceded by what was wrong (already escaped by the caller)."""
    return Message(f"{problem}\n\n{USAGE}" if problem else USAGE)


def _grant_line(grant: GrantRecord) -> str:
    """Describe one grant for its holder."""
    where = "in any channel" if grant.channel_id == ANY_CHANNEL else f"in <#{grant.channel_id}>"
    approval = " (needs a second person's approval)" if grant.needs_approval else ""
    cap = f", runs of at most {say_duration(grant.max_run_seconds)}" if grant.max_run_seconds is not None else ""
    what = escape(selector_of(grant).describe())
    return f"• {ACTION_PHRASES.get(grant.action, grant.action)} {what} {where}{cap}{approval}"


def grants(held: Sequence[GrantRecord]) -> Message:
    """Show a user their own grants."""
    if not held:
        return Message("You have no vm-bot grants yet. Ask a vm-bot admin for one.")
    return Message("\n".join(["*Your vm-bot grants*", *listing([_grant_line(g) for g in held])]))


def help_for(held: Sequence[GrantRecord], channel_id: str) -> Message:
    """Help that shows only what this caller may do, and where."""
    if not held:
        return Message(
            "*vm-bot* starts Zenlayer VMs for people who hold a grant. You have none yet — ask a vm-bot admin.\n"
            "• `/vm grants` — show what you may do\n• `/vm help` — this text"
        )
    here = [g for g in held if g.channel_id in (ANY_CHANNEL, channel_id)]
    actions = {g.action for g in held}
    lines = ["*What you can do with vm-bot*"]
    if GrantAction.START in actions:
        lines.append(
            "• `/vm start NAME_OR_ID [...]` — ask to start instances; you confirm before anything happens\n"
            "• `/vm start` alone — a form to find them by typing (also in vm-bot's Home tab)\n"
            "• `/vm status NAME_OR_ID [...] [--page N]` — show instances' current status, 50 a page\n"
            "• `/vm status --request N` — every instance of start request N (the number its thread points at)\n"
            "• `/vm list [PATTERN] [--page N]` — the instances you may start here, 50 a page, to tick and start"
        )
    if GrantAction.START in actions:
        lines.append(
            "• `/vm start NAME_OR_ID [...] --for DURATION` — a time-boxed run (`45s`, `30m`, `4h`, `1d`, `1h30m`): "
            "stopped that long after it is RUNNING, with a reminder to extend; `/vm runs` lists yours"
        )
    for action, verb in ((GrantAction.STOP, "stop"), (GrantAction.REBOOT, "reboot")):
        if action in actions:
            lines.append(f"• `/vm {verb} NAME_OR_ID [...]` — ask to {verb} running instances; you confirm first")
    if GrantAction.APPROVE in actions:
        lines.append("• press *Approve* or *Reject* on others' requests that need a second person")
    if GrantAction.ADMIN in actions:
        lines.append(ADMIN_USAGE)
    lines.append("• `/vm grants` — show your grants")
    lines.append("*Your grants*")
    lines.extend(listing([_grant_line(g) for g in held]))
    if not here:
        lines.append(":information_source: None of your grants can be used in this channel.")
    return Message("\n".join(lines))


def _where(channels: Sequence[str]) -> str:
    """Name the channels a grant change applies to; `*` (or none given) is said as "any channel", always."""
    given = list(dict.fromkeys(channels)) or [ANY_CHANNEL]
    return ", ".join("any channel" if c == ANY_CHANNEL else f"<#{c}>" for c in given)


def grant_done(args: GrantArgs, added: int) -> Message:
    """Confirm a grant made from Slack."""
    patterns = ", ".join(escape(s.describe()) for s in args.selectors)
    approval = ", with a second person's approval" if args.needs_approval else ""
    if args.max_run_seconds is not None:
        approval += f", runs of at most {say_duration(args.max_run_seconds)}"
    verb = "Granted" if added else "Already granted (updated)"
    action = args.action or GrantAction.START
    where = _where(args.channels)
    return Message(f":white_check_mark: {verb}: {mention(args.user_id)} may {action} {patterns} in {where}{approval}.")


def revoke_done(args: GrantArgs, removed: int) -> Message:
    """Confirm grants removed from Slack (naming the channels when the revoke named some)."""
    if not removed:
        return Message(f":information_source: {mention(args.user_id)} had no matching grants; nothing changed.")
    where = f" in {_where(args.channels)}" if args.channels else ""
    noun = "grant" if removed == 1 else "grants"
    return Message(f":wastebasket: Removed {removed} {noun} from {mention(args.user_id)}{where}.")


def checking(ids: Sequence[str]) -> Message:
    """Acknowledge a command that needs a lookup."""
    shown = ", ".join(code(i) for i in ids[:10])
    return Message(f":mag: Checking {shown}{'…' if len(ids) > 10 else ''}")


def invalid_ids(invalid: Sequence[str]) -> Message:
    """Explain which words are not valid instance ids."""
    shown = ", ".join(quoted(word) for word in invalid[:10])
    more = f" and {len(invalid) - 10} more" if len(invalid) > 10 else ""
    return usage(f":warning: Not valid instance ids: {shown}{more}. Ids use letters, digits, `.`, `_` and `-` only.")
