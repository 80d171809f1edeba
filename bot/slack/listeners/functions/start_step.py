"""The Workflow Builder step "Start Zenlayer instances": a start asked by a workflow, for a requester, in a channel.

It goes exactly where `/vm start` goes — the requester's grants (a step is never a way around one), the look-up, the
approval rules, the confirmation in the channel that the requester (or an approver) must press — and the step is
completed when the operation ends: with its outputs once every instance is RUNNING, else with one sentence. That can
be hours later, long after the step's just-in-time token (15 minutes) expired, so the execution id is recorded with
the operation it opens and the completion goes through the outbox with the bot token. A refusal before anything was
opened completes the step at once, with the bot token as well.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from bot.domain.errors import InvalidInput, UserError
from bot.domain.ids import is_slack_channel_id, is_slack_user_id
from bot.operations import steps
from bot.operations.starting import StartAsk, StepAlreadyStarted
from bot.slack.listeners.background import require, soon
from bot.slack.listeners.commands.parse import MAX_IDS, normalise, split_words
from bot.slack.listeners.context import Context
from bot.slack.views import steps as step_views
from bot.slack.views.format import shorten

log = logging.getLogger(__name__)


def read_inputs(inputs: dict[str, Any]) -> tuple[str, str, list[str], str | None]:
    """Return (requester, channel, words, duration) from the step's inputs; InvalidInput names what is wrong."""
    requester = str(inputs.get("requester") or "")
    channel = str(inputs.get("channel") or "")
    words = list(dict.fromkeys(split_words(normalise(str(inputs.get("instances") or "")))))
    duration = str(inputs.get("duration") or "").strip() or None
    problems = []
    if not is_slack_user_id(requester):
        problems.append("the requester is not a Slack user")
    if not is_slack_channel_id(channel):
        problems.append("the channel is not a Slack channel")
    if not words:
        problems.append("no instances are named")
    elif len(words) > MAX_IDS:
        problems.append(f"more than {MAX_IDS} instances are named")
    if problems:
        raise InvalidInput("This step cannot run: " + ", ".join(problems) + ".")
    return requester, channel, words, duration


class StartStep:
    """Handles function_executed for the start step (bolt acknowledges it; the work runs after)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.surfaces = require(ctx.surfaces)

    def __call__(self, event: dict[str, Any], inputs: dict[str, Any]) -> None:
        """bolt's entry point: hand the step to the surfaces' pool."""
        execution_id = str(event.get("function_execution_id") or "")
        if execution_id:
            soon(self.surfaces, self.run, execution_id, dict(inputs or {}))

    def run(self, execution_id: str, inputs: dict[str, Any]) -> None:
        """Open the start the step asks for, or complete the step at once with why not."""
        if self._opened(execution_id):
            return  # Slack delivered the event again: the first delivery opened the operation
        try:
            requester, channel, words, duration = read_inputs(inputs)
            ask = StartAsk(
                requester,
                channel,
                words,
                duration=duration,
                function_execution_id=execution_id,
                links=self.ctx.links.with_links,
            )
            self.surfaces.starting.start(ask)
        except UserError as exc:
            self._fail(execution_id, step_views.refused(exc))
        except StepAlreadyStarted:
            log.info("step %s already opened its operation", execution_id)  # a second delivery, at the same time
        except Exception:
            reference = uuid.uuid4().hex[:8]
            log.exception("unexpected failure running a start step (reference %s)", reference)
            self._fail(execution_id, f"Something went wrong in vm-bot; nothing was started. Reference: {reference}")

    def _opened(self, execution_id: str) -> bool:
        """True when this execution opened its operation already (completed when that ends, never before)."""
        with self.surfaces.db.session(readonly=True) as session:
            return steps.known(session, execution_id)

    def _fail(self, execution_id: str, sentence: str) -> None:
        """Complete the step with an error, with the bot token (unless a delivery of the same execution opened its
        operation meanwhile: the second delivery then finds that one pending, which is no reason to fail)."""
        if self._opened(execution_id):
            return
        try:
            error = shorten(sentence, step_views.SENTENCE_LIMIT)
            self.surfaces.client.functions_completeError(function_execution_id=execution_id, error=error)
        except Exception as exc:
            log.warning("could not complete step %s with its error (%s)", execution_id, type(exc).__name__)
