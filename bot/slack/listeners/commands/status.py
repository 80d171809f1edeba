"""`/vm status NAMES_OR_IDS… [--request N] [--page N]`: instances' current status, privately."""

from __future__ import annotations

from slack_bolt import Ack, Respond

from bot.domain.actions import START
from bot.slack.listeners.commands.invocation import Invocation
from bot.slack.listeners.commands.start import acknowledge_lookup
from bot.slack.listeners.context import Context, reply
from bot.slack.views import picker


def acknowledge(ctx: Context, ack: Ack, call: Invocation, respond: Respond) -> str:
    """Acknowledge like `/vm start` (the same grants decide who may see what), then answer after the ack."""
    return acknowledge_lookup(ctx, ack, call, respond, _status)


def _status(ctx: Context, call: Invocation, respond: Respond) -> None:
    """Answer for the names and ids the user holds a grant on (every namesake shown)."""
    parsed = call.parsed
    words = list(parsed.ids)
    typed = "/vm status " + " ".join(parsed.args)
    shown: dict[str, str] = {}  # a refusal names the request the user typed, not the ids it holds
    if parsed.request_id is not None:
        of_request = ctx.opening.instances_of(parsed.request_id)
        words = [*of_request, *(w for w in parsed.ids if w not in of_request)]
        typed += f" --request {parsed.request_id}"
        shown = {i: f"request {parsed.request_id}" for i in of_request if i not in parsed.ids}
    resolution = ctx.opening.resolve(call.user_id, call.channel_id, START, words, shown)
    found = dict(resolution.instances)
    ids = list(resolution.ids)
    for group in resolution.ambiguous.values():
        found.update((c.instance_id, c) for c in group)
        ids.extend(c.instance_id for c in group if c.instance_id not in ids)
    reply(respond, picker.status_message(ids, found, page=parsed.page, command=" ".join(typed.split())))
