"""`/vm start NAMES_OR_IDS…` (and every other action's verb): check, look up, and have the confirmation posted."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from slack_bolt import Ack, Respond

from bot.domain.actions import START, Action
from bot.domain.ports import InstanceInfo
from bot.grants.authority import Question
from bot.grants.rules import Coverage
from bot.slack.listeners.commands.invocation import Invocation, Verb
from bot.slack.listeners.context import Context, reply, response_url
from bot.slack.listeners.views.start_modal import open_soon
from bot.slack.views import help as help_views
from bot.slack.views import picker, refusals

# A confirmation held back longer than this by Slack's pacing or a 429 is worth a private word.
DELAY_WORTH_SAYING = 2.0


def verb_of(action: Action) -> Verb:
    """Return the `/vm VERB` acknowledgement of an action: refuse at once when nothing could be covered here, else
    acknowledge and look the words up after the ack."""

    def acknowledge(ctx: Context, ack: Ack, call: Invocation, respond: Respond) -> str:
        def work(ctx: Context, call: Invocation, respond: Respond) -> None:
            _act(ctx, call, respond, action)

        if action is START and not call.parsed.args and call.trigger_id and ctx.surfaces is not None:
            ack()  # `/vm start` alone: the start modal, with this channel preset
            open_soon(ctx, {"trigger_id": call.trigger_id, "user_id": call.user_id}, call.channel_id)
            return "modal"

        return acknowledge_lookup(ctx, ack, call, respond, work, action)

    return acknowledge


Work = Callable[[Context, Invocation, Respond], None]


def acknowledge_lookup(
    ctx: Context, ack: Ack, call: Invocation, respond: Respond, work: Work, action: Action = START
) -> str:
    """The acknowledgement `/vm start` and `/vm status` share: validate the words, refuse from a fresh read when
    no grant could cover them here (anyone holding one has the words looked up first), else say we are checking."""
    parsed = call.parsed
    if parsed.invalid:
        ack(**help_views.invalid_ids(parsed.invalid).payload())
        return "invalid_ids"
    if not parsed.ids and parsed.request_id is None:
        ack(**help_views.usage(f":warning: Name at least one instance: `/vm {parsed.verb} ID [ID ...]`").payload())
        return "usage"
    question = Question(call.user_id, action.grant, parsed.ids, call.channel_id)
    coverage = ctx.authority.check(question, quick=True)
    if not coverage.ok and not coverage.usable_here:
        ack(**refusals.not_covered(action.grant, coverage).payload())
        ctx.later(ctx.lookups, respond, _record_denial, ctx, question, coverage)
        return "denied"
    ack(**help_views.checking(parsed.ids).payload())
    ctx.later(ctx.lookups, respond, work, ctx, call)
    return "accepted"


def _record_denial(ctx: Context, question: Question, coverage: Coverage, respond: Respond) -> None:
    """Audit a refusal already given in the ack."""
    ctx.authority.record_denial(question, coverage)


def _act(ctx: Context, call: Invocation, respond: Respond, action: Action) -> None:
    """Resolve names, ask which namesake was meant if need be, else have the confirmation posted."""
    resolution = ctx.opening.resolve(call.user_id, call.channel_id, action, call.parsed.ids)
    if resolution.ambiguous:
        found = list(resolution.instances.values())
        reply(respond, picker.choice_message(resolution.ambiguous, found, action, call.parsed.run_seconds))
        return
    ask(
        ctx,
        call.user_id,
        call.channel_id,
        action,
        resolution.ids,
        respond,
        known=resolution.instances,
        typed=resolution.typed,
        run_seconds=call.parsed.run_seconds,
    )


def ask(
    ctx: Context,
    user_id: str,
    channel_id: str,
    action: Action,
    ids: Sequence[str],
    respond: Respond,
    known: Mapping[str, InstanceInfo] | None = None,
    typed: Mapping[str, str] | None = None,
    run_seconds: float | None = None,
) -> None:
    """Check and look up, then open the operation: its confirmation is posted through the channel's gate (a
    rate-limited channel delays it, and the user is told so privately; it is never dropped)."""
    prepared = ctx.opening.look_up(user_id, channel_id, action, ids, known, typed, run_seconds)
    opened = ctx.opening.open(ctx.links.with_links(prepared), response_url=response_url(respond))
    if opened.wait_seconds >= DELAY_WORTH_SAYING:
        reply(respond, refusals.confirmation_delayed(channel_id, opened.wait_seconds))
