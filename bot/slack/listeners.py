"""Slack listeners: acknowledge at once, then hand the work to vm-bot's own executors."""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk.errors import SlackApiError

from bot.domain.commands import MAX_IDS, MAX_TEXT_LENGTH, Command, parse
from bot.domain.errors import UserError
from bot.domain.grant_admin import GrantService, parse_grant_args
from bot.domain.grants import Coverage
from bot.domain.ids import is_instance_id, is_pattern
from bot.domain.inventory import Inventory
from bot.domain.ports import InstanceInfo, VmApi
from bot.domain.rate_limit import Admission, CommandLimiter
from bot.domain.starts import (
    ClickOutcome,
    ClickResult,
    Decision,
    DuplicatePending,
    NotCovered,
    NothingToStart,
    StartService,
)
from bot.domain.vocabulary import GrantAction
from bot.logging_setup import log_context
from bot.metrics import Metrics
from bot.slack import action_ids, blocks
from bot.slack.ack_first import AckFirst
from bot.slack.inbound import is_request_number
from bot.slack.messages import CANNOT_POST, ChannelHeld, SlackMessages, slack_error

log = logging.getLogger(__name__)

_DECISIONS = {
    action_ids.START: Decision.START,
    action_ids.CANCEL: Decision.CANCEL,
    action_ids.APPROVE: Decision.APPROVE,
    action_ids.REJECT: Decision.REJECT,
}


def picked_ids(body: dict[str, Any]) -> list[str]:
    """Return the instance ids ticked in a picker's checkboxes (valid ids only, in order, at most MAX_IDS)."""
    values = body.get("state", {}).get("values", {})
    ids: list[str] = []
    if not isinstance(values, dict):
        return ids
    for block_id, actions in values.items():
        if not str(block_id).startswith(action_ids.PICK_BLOCK_PREFIX) or not isinstance(actions, dict):
            continue
        selected = (actions.get(action_ids.PICK) or {}).get("selected_options") or []
        for option in selected if isinstance(selected, list) else []:
            value = str(option.get("value", "")) if isinstance(option, dict) else ""
            if is_instance_id(value) and value not in ids:
                ids.append(value)
    return ids[:MAX_IDS]


class Listeners:
    """The `/vm` command and the confirmation buttons; slow work runs on our executors, never on bolt's pool."""

    def __init__(
        self,
        *,
        starts: StartService,
        grants: GrantService,
        inventory: Inventory,
        vm: VmApi,
        messages: SlackMessages,
        lookups: Executor,
        decisions: Executor,
        wake_watcher: Callable[[], None],
        metrics: Metrics | None = None,
        commands_per_minute: int = 0,
        owner: str = "vm-bot",
        ack_first: AckFirst | None = None,
    ):
        self.owner = owner  # recorded with each click, so a restarted replica finds the clicks it must decide
        self.metrics = metrics or Metrics()
        self.limiter = CommandLimiter(starts.db, commands_per_minute)
        self.starts = starts
        self.grants = grants
        self.inventory = inventory
        self.vm = vm
        self.messages = messages
        self.lookups = lookups
        self.decisions = decisions
        self.wake_watcher = wake_watcher
        self.ack_first = ack_first or AckFirst()

    def register(self, app: App) -> None:
        """Attach the listeners to a bolt app."""
        app.command("/vm")(self.on_command)
        for action_id in action_ids.DECISION_ACTIONS:
            app.action(action_id)(self.on_click)
        app.action(action_ids.PICK)(self.on_tick)
        app.action(action_ids.START_SELECTED)(self.on_start_selected)

    # --- /vm ---------------------------------------------------------------------------------------------

    def on_command(self, ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        """Answer the command; work handed off after the ack waits while acks are being answered (AckFirst)."""
        with self.ack_first.acknowledging():
            self._acknowledge_command(ack, command, respond)

    def _acknowledge_command(self, ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        """Count the command and hold back users over the rate limit; then handle it."""
        parsed = parse(str(command.get("text", "")))
        user_id, channel_id = str(command.get("user_id", "")), str(command.get("channel_id", ""))
        with log_context(user=user_id, channel=channel_id, instance_ids=list(parsed.ids) or None):
            admission = self.limiter.admit(user_id)
            if admission == Admission.ALLOWED:
                outcome = self._handle_command(ack, command, parsed, respond)
            else:
                ack(blocks.slow_down_text(self.limiter.per_minute))
                if admission == Admission.REFUSED_FIRST:
                    log.warning("user over the command rate limit (%d per minute)", self.limiter.per_minute)
                    self._submit(self.lookups, respond, self._record_rate_limit, user_id, channel_id, parsed.verb)
                outcome = "rate_limited"
        self.metrics.commands.labels(parsed.verb, outcome).inc()

    def _handle_command(self, ack: Ack, command: dict[str, Any], parsed: Command, respond: Respond) -> str:
        """Answer usage problems in the ack itself; anything that needs the database or Zenlayer runs later."""
        if parsed.too_long:
            ack(
                blocks.usage_text(
                    f":warning: That is too much at once: at most {MAX_IDS} ids, {MAX_TEXT_LENGTH} characters."
                )
            )
            return "usage"
        if parsed.option_problem:
            ack(blocks.usage_text(f":warning: {parsed.option_problem}"))
            return "usage"
        if parsed.verb in ("start", "status"):
            if parsed.invalid:
                ack(blocks.invalid_ids_text(parsed.invalid))
                return "invalid_ids"
            if not parsed.ids and parsed.request_id is None:
                ack(blocks.usage_text(f":warning: Name at least one instance: `/vm {parsed.verb} ID [ID ...]`"))
                return "usage"
            user_id, channel_id = command["user_id"], command["channel_id"]
            checked = self.starts.check_before_ack(user_id, channel_id, parsed.ids)
            coverage = checked.coverage
            if not coverage.ok and not checked.usable_here:
                # Nothing could cover these (names included): refuse in the ack itself, from a fresh read; the
                # audit write happens after. Anyone holding a grant here has the words looked up first.
                ack(blocks.not_covered_text(GrantAction.START, coverage))
                self._submit(self.lookups, respond, self._record_denial, user_id, channel_id, coverage)
                return "denied"
            ack(blocks.checking_text(parsed.ids))
            work = self._start if parsed.verb == "start" else self._status
            self._submit(self.lookups, respond, work, command, parsed)
            return "accepted"
        if parsed.verb == "list":
            if len(parsed.args) > 1 or (parsed.args and not is_pattern(parsed.args[0])):
                ack(blocks.usage_text(":warning: `/vm list [PATTERN]` takes one name or id pattern, like `web-*`."))
                return "usage"
            if not self.starts.may_use_here(command["user_id"], command["channel_id"]):
                ack(":information_source: You hold no grant to start instances in this channel.")
                return "denied"
            ack(":mag: Looking up the instances you may start here…")
            self._submit(self.lookups, respond, self._list, command, parsed)
            return "accepted"
        if parsed.verb == "help" and parsed.args:
            ack(blocks.usage_text(f":warning: Unknown command {blocks.quoted(parsed.args[0], 40)}."))
            return "usage"
        ack()
        work = {"help": self._help, "grants": self._grants, "grant": self._grant, "revoke": self._revoke}[parsed.verb]
        self._submit(self.lookups, respond, work, command, parsed)
        return "accepted"

    def _record_rate_limit(self, user_id: str, channel_id: str, verb: str, respond: Respond) -> None:
        """Audit the first refusal of a user over the rate limit in this window."""
        self.limiter.record_refusal(user_id, channel_id, verb)

    def _start(self, command: dict[str, Any], parsed: Command, respond: Respond) -> None:
        """Resolve names, ask which namesake was meant if need be, else post the confirmation in the channel."""
        user_id, channel_id = command["user_id"], command["channel_id"]
        if self._channel_held(channel_id, respond):
            return
        resolution = self.starts.resolve(user_id, channel_id, parsed.ids)
        if resolution.ambiguous:
            respond(blocks.choice_message(resolution.ambiguous, list(resolution.instances.values())))
            return
        self._ask(user_id, channel_id, resolution.ids, respond, known=resolution.instances)

    def _ask(
        self,
        user_id: str,
        channel_id: str,
        ids: list[str],
        respond: Respond,
        known: dict[str, InstanceInfo] | None = None,
    ) -> bool:
        """Check, look up and post the confirmation in the channel; return True once it is posted."""
        if self._channel_held(channel_id, respond):
            return False
        prepared = self.starts.open_request(
            self.messages.with_links(self.starts.look_up(user_id, channel_id, ids, known))
        )
        request = prepared.request
        assert request is not None
        try:
            message_ts = self.messages.post_confirmation(request, prepared.approvers)
        except ChannelHeld:
            self.starts.abandon(request.id, "Slack was rate-limiting the channel")
            self._channel_held(channel_id, respond)
            return False
        except SlackApiError as exc:
            error = slack_error(exc)
            self.starts.abandon(request.id, f"could not post the confirmation: {error}")
            if self._channel_held(channel_id, respond):  # a 429: the channel is held for its Retry-After
                return False
            if error in CANNOT_POST:
                respond(blocks.cannot_post_text(channel_id, error))
                return False
            raise
        except Exception as exc:  # a timeout or a lost connection: Slack may have posted it all the same
            reason = f"Slack did not confirm the post ({type(exc).__name__})"
            if not self.starts.abandon(request.id, reason):
                # A click on the posted confirmation decided it first (and noted its ts): it was posted after all.
                log.warning("posting the confirmation of request %s timed out, but it was clicked", request.id)
                return True
            # A timeout or a lost connection is Slack's or the network's; anything else is ours, so keep its trace.
            log.warning("withdrew request %s: %s", request.id, reason, exc_info=not isinstance(exc, OSError))
            respond(blocks.post_unconfirmed_text(channel_id), response_type="ephemeral", replace_original=False)
            return False
        self.starts.attach_message(request.id, message_ts)
        return True

    def _channel_held(self, channel_id: str, respond: Respond) -> bool:
        """Tell the user privately when Slack is holding this channel back (429), without calling Slack."""
        seconds = self.messages.held_for(channel_id)
        if seconds <= 0:
            return False
        respond(blocks.rate_limited_text(channel_id, seconds), response_type="ephemeral", replace_original=False)
        return True

    def _list(self, command: dict[str, Any], parsed: Command, respond: Respond) -> None:
        """`/vm list [PATTERN]`: what the caller may start here, privately, with the STOPPED ones to tick."""
        pattern = parsed.args[0] if parsed.args else None
        listing = self.inventory.startable(command["user_id"], command["channel_id"], pattern)
        respond(**blocks.list_message(command["channel_id"], pattern, listing, page=parsed.page))

    def _record_denial(self, user_id: str, channel_id: str, coverage: Coverage, respond: Respond) -> None:
        """Audit a refusal already given in the ack."""
        self.starts.record_denial(user_id, channel_id, coverage)

    def _help(self, command: dict[str, Any], parsed: Command, respond: Respond) -> None:
        """Show the caller only what they may do."""
        respond(blocks.help_text(self.grants.grants_of(command["user_id"]), command["channel_id"]))

    def _grants(self, command: dict[str, Any], parsed: Command, respond: Respond) -> None:
        """Show the caller their own grants."""
        respond(blocks.grants_text(self.grants.grants_of(command["user_id"])))

    def _grant(self, command: dict[str, Any], parsed: Command, respond: Respond) -> None:
        """`/vm grant`: an admin gives someone a grant."""
        args = parse_grant_args(parsed.args, revoking=False)
        added = self.grants.grant(command["user_id"], command["channel_id"], args)
        respond(blocks.grant_done_text(args, added))

    def _revoke(self, command: dict[str, Any], parsed: Command, respond: Respond) -> None:
        """`/vm revoke`: an admin takes grants away."""
        args = parse_grant_args(parsed.args, revoking=True)
        removed = self.grants.revoke(command["user_id"], command["channel_id"], args)
        respond(blocks.revoke_done_text(args, removed))

    def _status(self, command: dict[str, Any], parsed: Command, respond: Respond) -> None:
        """Answer `/vm status` privately for the names and ids the user holds a grant on (every namesake shown)."""
        user_id, channel_id = command["user_id"], command["channel_id"]
        words = list(parsed.ids)
        typed = "/vm status " + " ".join(parsed.args)
        if parsed.request_id is not None:
            of_request = self.starts.instances_of(parsed.request_id)
            words = [*of_request, *(w for w in parsed.ids if w not in of_request)]
            typed += f" --request {parsed.request_id}"
        resolution = self.starts.resolve(user_id, channel_id, words)
        found = dict(resolution.instances)
        ids = list(resolution.ids)
        for group in resolution.ambiguous.values():
            found.update((c.instance_id, c) for c in group)
            ids.extend(c.instance_id for c in group if c.instance_id not in ids)
        text, status_blocks = blocks.status_message(ids, found, page=parsed.page, command=" ".join(typed.split()))
        respond(text=text, blocks=status_blocks)

    # --- the instance picker -------------------------------------------------------------------------------

    def on_tick(self, ack: Ack) -> None:
        """A checkbox was ticked or cleared: Slack tells us, but only Start selected acts on it."""
        ack()

    def on_start_selected(self, ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        """Acknowledge Start selected, then treat the ticked instances as a `/vm start` of their ids."""
        ack()
        user_id = str(body.get("user", {}).get("id", ""))
        channel_id = str(body.get("channel", {}).get("id") or body.get("container", {}).get("channel_id") or "")
        ids = picked_ids(body)
        self._submit(self.lookups, respond, self._start_picked, user_id, channel_id, ids)

    def _start_picked(self, user_id: str, channel_id: str, ids: list[str], respond: Respond) -> None:
        """Run the ticked ids through the same checks and confirmation as `/vm start`."""
        if not ids:
            respond(blocks.nothing_picked_text(), response_type="ephemeral", replace_original=False)
            return
        if self._ask(user_id, channel_id, ids, respond):
            respond(blocks.picked_text(len(ids), channel_id), response_type="ephemeral", replace_original=True)

    # --- buttons -----------------------------------------------------------------------------------------

    def on_click(self, ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        """Record a click, acknowledge it, then decide it: an acknowledged click survives any crash."""
        with self.ack_first.acknowledging():
            self._acknowledge_click(ack, body, respond)

    def _acknowledge_click(self, ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        """Record the click (an urgent write, which does not wait for other acks), ack, and submit the decision."""
        action = body.get("actions", [{}])[0]
        value = str(action.get("value", ""))
        decision = _DECISIONS.get(str(action.get("action_id")))
        if not is_request_number(value) or decision is None:
            ack()
            log.warning("ignoring a click with an unexpected value or action")
            return
        user_id = str(body.get("user", {}).get("id", ""))
        message_ts = str(body.get("container", {}).get("message_ts", "")) or None
        channel_id = str(body.get("channel", {}).get("id", "")) or None
        with log_context(user=user_id, channel=channel_id, start_request_id=int(value)):
            self._record_and_decide(ack, respond, int(value), user_id, decision, message_ts)

    def _record_and_decide(
        self, ack: Ack, respond: Respond, request_id: int, user_id: str, decision: Decision, message_ts: str | None
    ) -> None:
        """Record the click, acknowledge it, and decide it on the decisions pool."""
        try:
            click_id = self.starts.record_click(
                request_id, user_id, decision, message_ts=message_ts, replica=self.owner
            )
        except Exception as exc:
            ack()
            failure = exc
            self._submit(self.decisions, respond, lambda respond: _raise(failure))
            return
        ack()
        self._submit(self.decisions, respond, self._decide, click_id, decision)

    def _decide(self, click_id: int, decision: Decision, respond: Respond) -> None:
        """Decide a recorded click and show the outcome (nothing, if recovery already decided it)."""
        result = self.starts.decide_click(click_id, response_url=getattr(respond, "response_url", None))
        if result is not None:
            self.metrics.clicks.labels(decision.value, result.outcome.value).inc()
            self._show_decision(result, respond)

    def _show_decision(self, result: ClickResult, respond: Respond) -> None:
        """Show a decided click: the confirmation's edit is in the outbox (the sender tells the clicker if it fails);
        a refusal is explained privately."""
        if result.outcome in (ClickOutcome.APPROVED, ClickOutcome.CANCELLED, ClickOutcome.REJECTED):
            if result.outcome == ClickOutcome.APPROVED:
                self.wake_watcher()
            return
        links = {i: self.messages.permalink(h.channel_id, h.message_ts) for i, h in result.holders.items()}
        respond(
            blocks.click_refusal_text(result.outcome, result.request, result.coverage, result.busy, links),
            response_type="ephemeral",
            replace_original=False,
        )
        if result.outcome == ClickOutcome.EXPIRED and result.request is not None:
            self.wake_watcher()  # the watcher marks it expired and edits the message

    # --- the one error handler -----------------------------------------------------------------------------

    def _submit(self, executor: Executor, respond: Respond, work: Callable[..., None], *args: Any) -> None:
        """Run work on vm-bot's executor; user errors become private replies, the rest a quotable reference."""

        def run() -> None:
            self.ack_first.wait_turn()
            try:
                work(*args, respond)
            except Exception as exc:  # the single place failures are turned into replies
                try:
                    self._reply_to_failure(exc, respond)
                except Exception:
                    # Nothing else would see this: an executor keeps a task's exception to itself.
                    log.exception("could not turn a failure into a reply")

        executor.submit(contextvars.copy_context().run, run)

    def _reply_to_failure(self, exc: Exception, respond: Respond) -> None:
        """Tell the user privately what went wrong; log unexpected failures with an id they can quote."""
        if isinstance(exc, UserError):
            text = self._user_error_text(exc)
        else:
            reference = uuid.uuid4().hex[:8]
            log.exception("unexpected failure (reference %s)", reference)
            text = f":boom: Something went wrong on my side. Nothing more will happen. Reference: `{reference}`"
        try:
            respond(text, response_type="ephemeral", replace_original=False)
        except Exception:
            log.exception("could not deliver a private reply")

    def _user_error_text(self, exc: UserError) -> str:
        """Render a user-facing error, with links where the domain points at another request."""
        if isinstance(exc, NotCovered):
            return blocks.not_covered_text(exc.action, exc.coverage)
        if isinstance(exc, NothingToStart):
            return blocks.nothing_to_start_text(self.messages.with_links(exc.prepared))
        if isinstance(exc, DuplicatePending):
            return blocks.duplicate_text(self.messages.permalink(exc.channel_id, exc.message_ts))
        return f":warning: {blocks.escape(str(exc))}"  # UserError messages are plain text


def _raise(exc: Exception) -> None:
    """Re-raise exc inside the error handler, so a failure before the ack is answered like any other."""
    raise exc
