"""`/vm list [PATTERN] [--page N]`: what the caller may start in this channel, to tick and start."""

from __future__ import annotations

from slack_bolt import Ack, Respond

from bot.domain.actions import START
from bot.domain.ids import is_pattern
from bot.grants.authority import Question
from bot.slack.listeners.commands.invocation import Invocation
from bot.slack.listeners.context import Context, reply
from bot.slack.views import help as help_views
from bot.slack.views import picker
from bot.slack.views.message import Message


def acknowledge(ctx: Context, ack: Ack, call: Invocation, respond: Respond) -> str:
    """Refuse a bad pattern or a caller with no start grant here at once; else list after the ack."""
    args = call.parsed.args
    if len(args) > 1 or (args and not is_pattern(args[0])):
        ack(**help_views.usage(":warning: `/vm list [PATTERN]` takes one name or id pattern, like `web-*`.").payload())
        return "usage"
    if not ctx.authority.check(Question(call.user_id, START.grant, [], call.channel_id), quick=True).usable_here:
        ack(":information_source: You hold no grant to start instances in this channel.")
        return "denied"
    ack(**Message(":mag: Looking up the instances you may start here…").payload())
    ctx.later(ctx.lookups, respond, _list, ctx, call)
    return "accepted"


def _list(ctx: Context, call: Invocation, respond: Respond) -> None:
    """Answer privately, with the STOPPED ones to tick."""
    pattern = call.parsed.args[0] if call.parsed.args else None
    found = ctx.inventory.startable(call.user_id, call.channel_id, pattern)
    reply(respond, picker.list_message(call.channel_id, pattern, found, page=call.parsed.page))
