"""The start modal: opened from `/vm start` without arguments, the Home's button or the global shortcut; submitted,
it asks for the same confirmation a typed command does, after the same checks — made at submit time.

A submission's answer is its verdict (Slack keeps the modal open only for `response_action: errors` in the answer
itself), so the checks run before the answer, on the surfaces' pool, for at most SUBMIT_BUDGET_SECONDS. When Zenlayer
is slower than that, the modal turns into "checking…" and is updated with the outcome once it is known. Who submits
comes from Slack's payload and what is picked from the view's state; private_metadata is not read at all.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import Ack
from slack_sdk.errors import SlackApiError

from bot.domain.actions import START
from bot.domain.errors import UserError
from bot.domain.ids import is_instance_id, is_slack_channel_id
from bot.grants.authority import NotCovered, Question
from bot.operations.inventory import LookupFailed
from bot.operations.opening import DuplicatePending, NothingToDo
from bot.operations.starting import StartAsk
from bot.operations.surface_runs import DurationRefused
from bot.slack import action_ids
from bot.slack.listeners.background import require, soon
from bot.slack.listeners.context import Context, part
from bot.slack.slack_api import slack_error
from bot.slack.surfaces import Surfaces
from bot.slack.views import start_modal
from bot.slack.views.format import code

log = logging.getLogger(__name__)

SUBMIT_BUDGET_SECONDS = 2.2  # Slack waits 3 s for the answer; the rest is the network's and bolt's
CANNOT_POST_HERE = frozenset({"not_in_channel", "channel_not_found", "is_archived", "user_not_in_channel"})

Answer = dict[str, Any]


@dataclass(frozen=True)
class StartForm:
    """What a submission asks, read from Slack's payload: the submitter, the channel and instances picked."""

    user_id: str
    view_id: str
    channel_id: str | None
    ids: list[str]
    invalid: list[str]  # values no instance id could have (only a forged submission sends them)
    duration: str | None
    response_url: str | None
    picked: list[dict[str, Any]] = field(default_factory=list)  # the options as submitted, to show them again

    def problems(self) -> dict[str, str]:
        """Field errors found without asking anyone (Slack never sends these; a forged submission may)."""
        problems = {}
        if self.channel_id is None:
            problems[action_ids.MODAL_CHANNEL] = "Pick a channel."
        if self.invalid:
            problems[action_ids.MODAL_INSTANCES] = start_modal.not_instances(self.invalid)
        elif not self.ids:
            problems[action_ids.MODAL_INSTANCES] = start_modal.nothing_picked()
        return problems


def read_form(body: dict[str, Any]) -> StartForm:
    """Read a submission: the user from Slack's payload, the rest from the state of the view they submitted."""
    view = part(body, "view")
    values = part(view, "state").get("values")
    values = values if isinstance(values, dict) else {}

    def element(block_id: str) -> dict[str, Any]:
        block = values.get(block_id)
        found = block.get(block_id) if isinstance(block, dict) else None
        return found if isinstance(found, dict) else {}

    channel = str(element(action_ids.MODAL_CHANNEL).get("selected_conversation") or "")
    options = element(action_ids.MODAL_INSTANCES).get("selected_options")
    options = [o for o in options if isinstance(o, dict)] if isinstance(options, list) else []
    ids = list(dict.fromkeys(str(o.get("value", "")) for o in options))
    duration = element(action_ids.MODAL_DURATION).get("selected_option")
    chosen = str(duration.get("value", "")) if isinstance(duration, dict) else ""
    urls = body.get("response_urls")
    response_url = next(
        (
            str(u.get("response_url"))
            for u in (urls if isinstance(urls, list) else [])
            if isinstance(u, dict) and u.get("channel_id") == channel and u.get("response_url")
        ),
        None,
    )
    return StartForm(
        user_id=str(part(body, "user").get("id", "")),
        view_id=str(view.get("id", "")),
        channel_id=channel if is_slack_channel_id(channel) else None,
        ids=[i for i in ids if is_instance_id(i)][: start_modal.MAX_PICKED],
        invalid=[i for i in ids if not is_instance_id(i)],
        duration=None if chosen in ("", start_modal.NO_TIME_BOX) else chosen,
        response_url=response_url,
        picked=options,
    )


def open_soon(ctx: Context, body: dict[str, Any], channel_id: str | None) -> None:
    """Open the start modal with the trigger_id of the interaction in `body` (right after its ack)."""
    surfaces = require(ctx.surfaces)
    trigger_id = str(body.get("trigger_id", ""))
    user_id = str(part(body, "user").get("id") or body.get("user_id") or "")
    soon(surfaces, _open, surfaces, trigger_id, user_id, channel_id)


def _open(surfaces: Surfaces, trigger_id: str, user_id: str, channel_id: str | None) -> None:
    """Open the modal; a trigger that expired meanwhile (3 s) is said on the user's Home."""
    try:
        surfaces.open_start_modal(trigger_id, user_id, channel_id)
    except SlackApiError as exc:
        log.warning("could not open the start modal for %s (%s)", user_id, slack_error(exc))
        if slack_error(exc) == "expired_trigger_id":
            surfaces.tell(user_id, "Slack did not let me open the form in time: try again.")


class StartModal:
    """Answers submissions of the start modal."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.surfaces = require(ctx.surfaces)

    def on_submit(self, ack: Ack, body: dict[str, Any]) -> None:
        """bolt's entry point for view_submission: check at once what needs nobody, the rest within the budget."""
        with self.ctx.ack_first.acknowledging():
            form = read_form(body)
            problems = form.problems()
            if problems:
                ack(response_action="errors", errors=problems)
                return
        future: Future[Answer] = self.surfaces.pool.submit(self.check, form)
        try:
            answer = future.result(timeout=SUBMIT_BUDGET_SECONDS)
        except FutureTimeout:
            assert form.channel_id is not None
            ack(response_action="update", view=start_modal.checking(form.channel_id))
            future.add_done_callback(lambda done: self._late(form, done))
            return
        except Exception:
            answer = self._failed()
        ack(**answer)

    def check(self, form: StartForm) -> Answer:
        """Everything `/vm start` checks, at submit time; return the answer to the submission."""
        assert form.channel_id is not None
        channel = form.channel_id
        question = Question(form.user_id, START.grant, [], channel)
        coverage = self.ctx.authority.check(question, quick=True)
        if not coverage.usable_here:
            self.ctx.authority.record_denial(question, self.ctx.authority.check(question), at="modal")
            return _errors(action_ids.MODAL_CHANNEL, start_modal.no_grant_here())
        cannot_post = self._cannot_post(form)
        if cannot_post is not None:
            return _errors(action_ids.MODAL_CHANNEL, start_modal.not_member(cannot_post))
        ask = StartAsk(
            form.user_id,
            channel,
            form.ids,
            duration=form.duration,
            response_url=form.response_url,
            links=self.ctx.links.with_links,
        )
        try:
            prepared = self.surfaces.starting.start(ask)
        except DurationRefused as exc:
            field = action_ids.MODAL_DURATION if form.duration else action_ids.MODAL_INSTANCES
            return _errors(field, start_modal.problem(str(exc)))
        except UserError as exc:
            return _refusal(exc)
        return {"response_action": "update", "view": start_modal.done(prepared)}

    def _cannot_post(self, form: StartForm) -> str | None:
        """Say privately in the channel that the instances are being checked, as `/vm start` does; Slack's refusal
        is why the confirmation could not be posted there (None: it can, or Slack did not say)."""
        assert form.channel_id is not None
        shown = ", ".join(code(i) for i in form.ids[:10]) + ("…" if len(form.ids) > 10 else "")
        try:
            self.surfaces.client.chat_postEphemeral(
                channel=form.channel_id, user=form.user_id, text=f":mag: Checking {shown} (from the start form)"
            )
        except SlackApiError as exc:
            error = slack_error(exc)
            return error if error in CANNOT_POST_HERE else None
        except Exception as exc:
            log.warning("could not say privately that a submission is being checked (%s)", type(exc).__name__)
        return None

    def _late(self, form: StartForm, done: Future[Answer]) -> None:
        """The checks outlived the answer: show their outcome in the modal (the form again, with the problem)."""
        try:
            answer = done.result()
        except Exception:
            answer = self._failed()
        if answer.get("response_action") == "update":
            view = answer["view"]
        else:
            terms = self.surfaces.runs.duration_terms(form.user_id, form.channel_id)
            problem = " ".join(answer.get("errors", {}).values())
            view = start_modal.start_form(
                channel_id=form.channel_id, terms=terms, problem=problem, picked=start_modal.picked_again(form.picked)
            )
        try:
            self.surfaces.client.views_update(view_id=form.view_id, view=view)
        except Exception as exc:
            reason = slack_error(exc) if isinstance(exc, SlackApiError) else type(exc).__name__
            log.warning("could not show the outcome of a start form in its modal (%s)", reason)

    @staticmethod
    def _failed() -> Answer:
        reference = uuid.uuid4().hex[:8]
        log.exception("unexpected failure checking a start form (reference %s)", reference)
        sentence = f"Something went wrong on my side; nothing was started. Reference: {reference}"
        return _errors(action_ids.MODAL_INSTANCES, sentence)


def _errors(block_id: str, sentence: str) -> Answer:
    return {"response_action": "errors", "errors": {block_id: sentence}}


def _refusal(exc: UserError) -> Answer:
    """Put a refusal under the field it concerns."""
    if isinstance(exc, NotCovered):
        return _errors(action_ids.MODAL_INSTANCES, start_modal.not_covered(exc.coverage))
    if isinstance(exc, NothingToDo):
        return _errors(action_ids.MODAL_INSTANCES, start_modal.nothing_to_do(exc.prepared))
    if isinstance(exc, DuplicatePending):
        return _errors(action_ids.MODAL_INSTANCES, start_modal.duplicate())
    if isinstance(exc, LookupFailed):
        return _errors(action_ids.MODAL_INSTANCES, start_modal.problem(f"{exc} Try again."))
    return _errors(action_ids.MODAL_INSTANCES, start_modal.problem(str(exc)))
