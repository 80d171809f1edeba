"""`/vm help` and `/vm grants`: only what the caller may do, from their own grants."""

from __future__ import annotations

from slack_bolt import Ack, Respond

from bot.slack.listeners.commands.invocation import Invocation
from bot.slack.listeners.context import Context, reply
from bot.slack.views import help as help_views
from bot.slack.views.format import quoted


def acknowledge_help(ctx: Context, ack: Ack, call: Invocation, respond: Respond) -> str:
    """An unknown verb is a usage error in the ack; help itself is read from the grants after it."""
    if call.parsed.args:
        ack(**help_views.usage(f":warning: Unknown command {quoted(call.parsed.args[0], 40)}.").payload())
        return "usage"
    ack()
    ctx.later(ctx.lookups, respond, _help, ctx, call)
    return "accepted"


def acknowledge_grants(ctx: Context, ack: Ack, call: Invocation, respond: Respond) -> str:
    """Acknowledge, then show the caller their own grants."""
    ack()
    ctx.later(ctx.lookups, respond, _grants, ctx, call)
    return "accepted"


def _help(ctx: Context, call: Invocation, respond: Respond) -> None:
    """Show the caller only what they may do."""
    reply(respond, help_views.help_for(ctx.grants.grants_of(call.user_id), call.channel_id))


def _grants(ctx: Context, call: Invocation, respond: Respond) -> None:
    """Show the caller their own grants."""
    reply(respond, help_views.grants(ctx.grants.grants_of(call.user_id)))
