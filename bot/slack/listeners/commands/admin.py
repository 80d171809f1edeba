"""`/vm grant` and `/vm revoke`: admins manage grants from chat, within their own reach."""

from __future__ import annotations

from slack_bolt import Ack, Respond

from bot.grants.admin import parse_grant_args
from bot.slack.listeners.commands.invocation import Invocation
from bot.slack.listeners.context import Context, reply
from bot.slack.views import help as help_views


def acknowledge_grant(ctx: Context, ack: Ack, call: Invocation, respond: Respond) -> str:
    """Acknowledge, then grant after the ack (the admin's reach is checked there)."""
    ack()
    ctx.later(ctx.lookups, respond, _grant, ctx, call)
    return "accepted"


def acknowledge_revoke(ctx: Context, ack: Ack, call: Invocation, respond: Respond) -> str:
    """Acknowledge, then revoke after the ack (the admin's reach is checked there)."""
    ack()
    ctx.later(ctx.lookups, respond, _revoke, ctx, call)
    return "accepted"


def _grant(ctx: Context, call: Invocation, respond: Respond) -> None:
    """An admin gives someone a grant."""
    args = parse_grant_args(call.parsed.args, revoking=False)
    added = ctx.grants.grant(call.user_id, call.channel_id, args)
    reply(respond, help_views.grant_done(args, added))


def _revoke(ctx: Context, call: Invocation, respond: Respond) -> None:
    """An admin takes grants away."""
    args = parse_grant_args(call.parsed.args, revoking=True)
    removed = ctx.grants.revoke(call.user_id, call.channel_id, args)
    reply(respond, help_views.revoke_done(args, removed))
