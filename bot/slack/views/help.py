"""Help, grants and the answers to commands that need no lookup: usage, slow-down, checking, admin replies."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.vocabulary import ANY_CHANNEL, GrantAction
from bot.grants.admin import GrantArgs
from bot.grants.rules import GrantRecord, selector_of
from bot.slack.views.format import code, escape, listing, mention, quoted
from bot.slack.views.message import Message

USAGE = (
    "*vm-bot* starts Zenlayer VMs you are allowed to start.\n"
    "• `/vm start NAME_OR_ID [...]` — ask to start instances by name or id (separated by spaces, commas or "
    "newlines); you confirm before anything happens\n"
    "• `/vm start` alone — a form: pick a channel and type to find the instances you may start (also from "
    "vm-bot's Home tab, and the *Start instances* shortcut)\n"
    "• `/vm status NAME_OR_ID [...] [--page N]` — show instances' current status, 50 a page\n"
    "• `/vm status --request N` — every instance of start request N (the number its thread points at)\n"
    "• `/vm list [PATTERN] [--page N]` — the instances you may start here, 50 a page; tick the stopped ones and "
    "press *Start selected*\n"
    "• `/vm grants` — show what you may do\n"
    "• `/vm help` — what you can do here"
)
ADMIN_USAGE = (
    "• `/vm grant @user [PATTERN ...] [--instances PATTERN] [--names PATTERN] [--resource-group ID_OR_NAME] "
    "[--tag KEY=VALUE] [--channel #channel ...] [--action start|approve|admin] [--needs-approval]` — "
    "let someone act on instances (by id glob, name glob, resource group or tag)\n"
    "• `/vm revoke @user [selectors as for grant] [--channel #channel ...] [--action ACTION]` — take grants away"
)
ACTION_PHRASES: dict[str, str] = {
    GrantAction.START: "start",
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
    what = escape(selector_of(grant).describe())
    return f"• {ACTION_PHRASES.get(grant.action, grant.action)} {what} {where}{approval}"


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
