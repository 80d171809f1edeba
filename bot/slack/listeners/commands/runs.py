"""`/vm runs [--all]`: your running time-boxed runs (an admin's `--all`: everyone's they reach), with buttons."""

from __future__ import annotations

from slack_bolt import Ack, Respond

from bot.slack.listeners.commands.invocation import Invocation
from bot.slack.listeners.context import Context, reply
from bot.slack.views import runs


def acknowledge(ctx: Context, ack: Ack, call: Invocation, respond: Respond) -> str:
    """Acknowledge at once; the list is read after the ack."""
    ack()
    ctx.later(ctx.lookups, respond, _list, ctx, call)
    return "accepted"


def _list(ctx: Context, call: Invocation, respond: Respond) -> None:
    """Answer privately with the runs the user may extend or stop."""
    everyone = call.parsed.everyone
    found, names = ctx.run_book.running(None if everyone else call.user_id)
    if everyone:
        reaches = ctx.authority.admin_reach(call.user_id)
        found = [r for r in found if reaches(r.channel_id, [r.instance_id])]
    reply(respond, runs.run_list(found, names, everyone=everyone, extend_seconds=ctx.extend_seconds))
