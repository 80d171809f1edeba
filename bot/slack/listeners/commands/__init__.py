"""The `/vm` slash command: acknowledge at once, then hand each verb's work to vm-bot's executors.

Each verb is one entry in VERBS (its module acknowledges it and says how it went, for the metrics).
"""

from __future__ import annotations

import logging

from slack_bolt import Ack, App, BoltRequest, Respond

from bot.domain.actions import ACTIONS
from bot.logging_setup import log_context
from bot.slack.listeners.commands import admin, help, listing, runs, start, status
from bot.slack.listeners.commands.invocation import Invocation, Verb
from bot.slack.listeners.commands.parse import MAX_IDS, MAX_TEXT_LENGTH, parse
from bot.slack.listeners.context import Context, answering, signed_request
from bot.slack.listeners.rate_limit import Admission, CommandLimiter
from bot.slack.views import help as help_views

log = logging.getLogger(__name__)

VERBS: dict[str, Verb] = {
    # Every power action is a verb of its own: `/vm start`, and whatever the action table adds.
    **{action.words.verb: start.verb_of(action) for action in ACTIONS.values()},
    "status": status.acknowledge,
    "list": listing.acknowledge,
    "runs": runs.acknowledge,
    "help": help.acknowledge_help,
    "grants": help.acknowledge_grants,
    "grant": admin.acknowledge_grant,
    "revoke": admin.acknowledge_revoke,
}


def register(app: App, ctx: Context) -> None:
    """Attach the `/vm` command to a bolt app."""
    app.command("/vm")(SlashCommand(ctx))


class SlashCommand:
    """Answers `/vm`; work handed off after the ack waits while acks are being answered (AckFirst)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def __call__(self, ack: Ack, command: dict[str, object], respond: Respond, request: BoltRequest) -> None:
        """bolt's entry point for the command."""
        answered = answering.set(signed_request(request))
        try:
            with self.ctx.ack_first.acknowledging():
                self._acknowledge(ack, command, respond)
        finally:
            answering.reset(answered)

    def _acknowledge(self, ack: Ack, command: dict[str, object], respond: Respond) -> None:
        """Count the command and hold back users over the rate limit; then handle it."""
        parsed = parse(str(command.get("text", "")))
        call = Invocation(
            str(command.get("user_id", "")),
            str(command.get("channel_id", "")),
            parsed,
            trigger_id=str(command.get("trigger_id", "")),
        )
        limiter = self.ctx.limiter
        with log_context(user=call.user_id, channel=call.channel_id, instance_ids=list(parsed.ids) or None):
            admission = limiter.admit(call.user_id)
            if admission == Admission.ALLOWED:
                outcome = self._handle(ack, call, respond)
            else:
                ack(**help_views.slow_down(limiter.per_minute).payload())
                if admission == Admission.REFUSED_FIRST:
                    log.warning("user over the command rate limit (%d per minute)", limiter.per_minute)
                    self.ctx.later(self.ctx.lookups, respond, _record_rate_limit, limiter, call)
                outcome = "rate_limited"
        self.ctx.metrics.commands.labels(parsed.verb, outcome).inc()

    def _handle(self, ack: Ack, call: Invocation, respond: Respond) -> str:
        """Answer usage problems in the ack itself; each verb answers the rest."""
        parsed = call.parsed
        if parsed.too_long:
            too_much = f":warning: That is too much at once: at most {MAX_IDS} ids, {MAX_TEXT_LENGTH} characters."
            ack(**help_views.usage(too_much).payload())
            return "usage"
        if parsed.option_problem:
            ack(**help_views.usage(f":warning: {parsed.option_problem}").payload())
            return "usage"
        return VERBS[parsed.verb](self.ctx, ack, call, respond)


def _record_rate_limit(limiter: CommandLimiter, call: Invocation, respond: Respond) -> None:
    """Audit the first refusal of a user over the rate limit in this window."""
    limiter.record_refusal(call.user_id, call.channel_id, call.parsed.verb)
