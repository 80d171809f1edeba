"""Slack's side of the surfaces beyond messages — the App Home, modals, type-ahead, global shortcuts and Workflow
Builder steps — as the payloads Slack sends, over either transport.

`SurfacesConversation` builds each payload as Slack does (`bot.devtools.slack_payloads`, with the state of a view as
`bot.devtools.slack_view_state` reports it), registers what the stand-in must recognise afterwards (each
interaction's trigger_id, a function execution's just-in-time token), hands the payload to a transport
(`deliver_event`, `deliver_interaction`: signed HTTP posts in `SlackDriver`, Socket Mode envelopes in the tests'
`SocketSlack`), and tells the stand-in what the bot answered, so a modal closes, shows field errors or changes as it
would in Slack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.devtools.slack_functions import FunctionExecution
from bot.devtools.slack_payloads import (
    function_executed_event,
    home_opened_event,
    parameters,
    shortcut_payload,
    view_payload,
)
from bot.devtools.slack_view_state import view_action, view_state
from bot.devtools.slack_views import SlackView, view_text
from bot.devtools.slack_web_api import FakeSlackWebApi


@dataclass(frozen=True)
class Delivery:
    """What the bot answered one request Slack sent: the HTTP status (200 for a Socket Mode ack) and the JSON body
    ({} for a bare ack, or when the body was not a JSON object; `text` then holds it)."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True)
class FunctionRun:
    """A function_executed event sent to the bot: the execution id, its just-in-time token, the bot's answer."""

    execution_id: str
    bot_access_token: str
    delivery: Delivery


class SurfacesConversation:
    """Slack's side of the App Home, modals, shortcuts and Workflow Builder steps, over any transport."""

    def __init__(self, fake: FakeSlackWebApi):
        self.fake = fake
        # The options the bot last answered per (view id, action id), to resolve picks from external selects.
        self._suggested_options: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def deliver_event(self, body: dict[str, Any]) -> Delivery:
        """Send an Events API body (event_callback) to the bot and return its answer."""
        raise NotImplementedError

    def deliver_interaction(self, payload: dict[str, Any]) -> Delivery:
        """Send an interactivity payload (shortcut, block_actions, view_submission, block_suggestion) to the bot."""
        raise NotImplementedError

    # --- the App Home and shortcuts ---------------------------------------------------------------------

    def open_home(self, user: str = "U0REQUEST") -> Delivery:
        """Open the bot's Home tab as `user`: app_home_opened (tab home; with the current Home view, if any)."""
        return self.deliver_event(home_opened_event(user, self.fake.home(user)))

    def click_home_button(
        self, action_id: str, *, user: str = "U0REQUEST", choice: Any = None, values: Mapping[str, Any] | None = None
    ) -> Delivery:
        """Press a button (or pick from a menu) on the Home tab published for `user`."""
        home = self.fake.home(user)
        if home is None:
            raise LookupError(f"no Home tab has been published for {user}")
        return self.click_in_view(home, action_id, user=user, choice=choice, values=values)

    def shortcut(self, callback_id: str, *, user: str = "U0REQUEST") -> Delivery:
        """Run a global shortcut (no channel), with a fresh trigger_id the bot may open a modal with."""
        return self.deliver_interaction(shortcut_payload(callback_id, user, self.fake.issue_trigger(user, None)))

    # --- modals -----------------------------------------------------------------------------------------

    def wait_modal(self, user: str = "U0REQUEST", callback_id: str | None = None, timeout: float = 10.0) -> SlackView:
        """Wait for the view on screen in the modal `user` has open (with that callback_id, if given)."""

        def find() -> SlackView | None:
            stack = self.fake.modals(user)
            top = stack[-1] if stack else None
            return top if top is not None and callback_id in (None, top.callback_id) else None

        return self.fake.wait_for(find, timeout, what=f"a modal {callback_id or ''} open for {user}")

    def wait_home(self, user: str = "U0REQUEST", contains: str | None = None, timeout: float = 10.0) -> SlackView:
        """Wait for a Home tab published for `user` (showing `contains` somewhere, if given)."""

        def find() -> SlackView | None:
            home = self.fake.home(user)
            return home if home is not None and (contains is None or contains in view_text(home)) else None

        return self.fake.wait_for(find, timeout, what=f"a Home for {user} showing {contains!r}")

    def submit_view(
        self, view: SlackView, values: Mapping[str, Any] | None = None, *, user: str | None = None
    ) -> dict[str, Any]:
        """Submit a modal with `values` keyed by action_id (other fields keep their initial values); return the
        bot's answer ({} for a bare ack; `{"response_action": "errors", "errors": {...}}` keeps it open).

        A value is what the user picked: text for an input, a channel or user id, an option's value (or option
        values, for a multi-select) — looked up among the element's options, or among the options the bot
        answered `suggest` with for an external select. An option given as a dict is sent as it is (a forged
        submission). Like Slack, it refuses (ValueError) to submit a modal whose required inputs are empty.
        """
        current = self._open_view(view)
        if current.body.get("submit") is None:
            raise ValueError(f"view {current.callback_id!r} has no submit button")
        state, missing = view_state(current, values or {}, self._suggested_options)
        if missing:
            raise ValueError(f"Slack would not submit {current.callback_id!r}: {', '.join(missing)} must be filled in")
        who = user or current.user
        payload = view_payload(
            "view_submission",
            current,
            state,
            who,
            trigger_id=self.fake.issue_trigger(who, current.opened_from),
            response_urls=self._response_urls(current, state),
        )
        delivery = self._answered(self.deliver_interaction(payload), "view_submission")
        self.fake.view_submission_answered(current.id, delivery.status, delivery.body)
        return delivery.body

    def close_modal(self, view: SlackView, *, user: str | None = None) -> Delivery | None:
        """Press Cancel on a modal's view as the user does: that view closes (the whole modal with
        clear_on_close), and the bot hears view_closed only if the view asked for it (notify_on_close)."""
        current = self._open_view(view)
        cleared = bool(current.body.get("clear_on_close"))
        self.fake.close_view(current.id, everything=cleared)
        if not current.body.get("notify_on_close"):
            return None
        payload = view_payload("view_closed", current, current.body.get("state", {}), user or current.user)
        payload["is_cleared"] = cleared
        return self.deliver_interaction(payload)

    def suggest(
        self,
        view: SlackView,
        action_id: str,
        value: str = "",
        *,
        user: str | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Type `value` into an external select of a view (block_suggestion, with the view's current `values`);
        return the options the bot answered (option groups flattened). The answer is checked like Slack does."""
        current = self._open_view(view)
        block, _ = current.element(action_id)
        state, _ = view_state(current, values or {}, self._suggested_options)
        payload = view_payload("block_suggestion", current, state, user or current.user)
        payload.update(
            container={"type": "view", "view_id": current.id},
            action_id=action_id,
            block_id=block["block_id"],
            value=value,
        )
        delivery = self._answered(self.deliver_interaction(payload), "block_suggestion")
        self.fake.options_answered(action_id, delivery.status, delivery.body)
        groups = delivery.body.get("option_groups") or []
        options = list(delivery.body.get("options") or []) + [o for g in groups for o in g.get("options", [])]
        self._suggested_options[(current.id, action_id)] = options
        return options

    def click_in_view(
        self,
        view: SlackView,
        action_id: str,
        *,
        user: str | None = None,
        choice: Any = None,
        values: Mapping[str, Any] | None = None,
    ) -> Delivery:
        """Press a button (or pick `choice` in a select, tick options in checkboxes) in a modal or Home tab:
        block_actions from a view container, with a fresh trigger_id and the view's current `values`."""
        current = self.fake.view(view.id) if view.type == "home" else self._open_view(view)
        block, element = current.element(action_id)
        who = user or current.user
        state, _ = view_state(current, values or {}, self._suggested_options)
        payload = view_payload("block_actions", current, state, who)
        payload.update(
            container={"type": "view", "view_id": current.id},
            trigger_id=self.fake.issue_trigger(who, current.opened_from),
            actions=[view_action(block, element, choice, self._suggested_options.get((current.id, action_id), []))],
        )
        return self.deliver_interaction(payload)

    # --- Workflow Builder steps -------------------------------------------------------------------------

    def execute_function(
        self, callback_id: str, inputs: Mapping[str, Any], *, definition: Mapping[str, Any] | None = None
    ) -> FunctionRun:
        """Run the bot's custom step `callback_id` with `inputs`, as a workflow does: function_executed with a new
        function_execution_id and a just-in-time `xwfp-` token the stand-in accepts for 15 minutes and until the
        execution completes. `definition` is the step's entry under `functions` in the manifest (its title and
        parameters; required output parameters must then be in the outputs); without it the inputs are described
        as strings and any outputs are accepted."""
        definition = definition or {}
        required = [p["name"] for p in parameters(definition.get("output_parameters")) if p.get("is_required")]
        execution = self.fake.start_function(callback_id, required)
        event = function_executed_event(execution, inputs, definition)
        return FunctionRun(execution.id, execution.token, self.deliver_event(event))

    def wait_completion(self, execution_id: str, timeout: float = 10.0) -> FunctionExecution:
        """Wait until the bot completed a function execution (functions.completeSuccess or completeError)."""

        def find() -> FunctionExecution | None:
            execution = self.fake.function_execution(execution_id)
            return execution if execution.outcome is not None else None

        return self.fake.wait_for(find, timeout, what=f"the completion of {execution_id}")

    # --- helpers ----------------------------------------------------------------------------------------

    def _open_view(self, view: SlackView) -> SlackView:
        """Return a modal view as it stands now; a user cannot act in a modal that closed."""
        current = self.fake.view(view.id)
        if current.closed:
            raise ValueError(f"view {view.id} ({current.callback_id!r}) is no longer open")
        return current

    def _response_urls(self, view: SlackView, state: dict[str, Any]) -> list[dict[str, str]]:
        """Return the response_urls Slack adds for channel pickers with response_url_enabled in input blocks."""
        urls = []
        for block in view.blocks:
            element = block.get("element") if block.get("type") == "input" else None
            if not isinstance(element, dict) or not element.get("response_url_enabled"):
                continue
            picked = state["values"].get(block["block_id"], {}).get(element["action_id"], {})
            channel = picked.get("selected_conversation") or picked.get("selected_channel")
            if channel:
                key = f"view-{view.id}-{element['action_id']}"
                urls.append(
                    {
                        "block_id": block["block_id"],
                        "action_id": element["action_id"],
                        "channel_id": channel,
                        "response_url": self.fake.response_url(key),
                    }
                )
        return urls

    @staticmethod
    def _answered(delivery: Delivery, kind: str) -> Delivery:
        """Insist that the bot answered: Slack shows the user an error for anything but a 200."""
        if delivery.status != 200:
            raise AssertionError(f"the bot answered a {kind} with HTTP {delivery.status}: {delivery.text[:200]!r}")
        return delivery
