"""Slack's side of the surfaces beyond messages — the App Home, modals, type-ahead, global shortcuts and Workflow
Builder steps — as the payloads Slack sends, over either transport.

`SurfacesConversation` builds each payload exactly as Slack does (the shapes bolt-python parses: `event_callback`
with `app_home_opened` or `function_executed`, `shortcut`, `view_submission`, `block_suggestion`, `block_actions`
from a view container), registers what the stand-in must recognise afterwards (each interaction's trigger_id, a
function execution's just-in-time token), hands the payload to a transport (`deliver_event`,
`deliver_interaction`: signed HTTP posts in `SlackDriver`, Socket Mode envelopes in the tests' `SocketSlack`), and
tells the stand-in what the bot answered, so a modal closes, shows field errors or changes as it would in Slack.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.devtools.slack_surfaces import APP_ID, TEAM_ID, FunctionExecution, SlackView, interactive_elements
from bot.devtools.slack_web_api import BOT_USER_ID, FakeSlackWebApi

TEAM = {"id": TEAM_ID, "domain": "example"}

# Where Slack puts an element's current value in `state.values`, and what kind of value it is.
STATE_FIELDS: dict[str, tuple[str, str]] = {
    "plain_text_input": ("value", "scalar"),
    "number_input": ("value", "scalar"),
    "email_text_input": ("value", "scalar"),
    "url_text_input": ("value", "scalar"),
    "static_select": ("selected_option", "option"),
    "external_select": ("selected_option", "option"),
    "radio_buttons": ("selected_option", "option"),
    "multi_static_select": ("selected_options", "options"),
    "multi_external_select": ("selected_options", "options"),
    "checkboxes": ("selected_options", "options"),
    "users_select": ("selected_user", "scalar"),
    "multi_users_select": ("selected_users", "list"),
    "conversations_select": ("selected_conversation", "scalar"),
    "multi_conversations_select": ("selected_conversations", "list"),
    "channels_select": ("selected_channel", "scalar"),
    "multi_channels_select": ("selected_channels", "list"),
    "datepicker": ("selected_date", "scalar"),
    "timepicker": ("selected_time", "scalar"),
    "datetimepicker": ("selected_date_time", "scalar"),
}
# Where an element's preset value is, for each state field.
INITIAL_FIELDS = {
    "value": "initial_value",
    "selected_option": "initial_option",
    "selected_options": "initial_options",
    "selected_user": "initial_user",
    "selected_users": "initial_users",
    "selected_conversation": "initial_conversation",
    "selected_conversations": "initial_conversations",
    "selected_channel": "initial_channel",
    "selected_channels": "initial_channels",
    "selected_date": "initial_date",
    "selected_time": "initial_time",
    "selected_date_time": "initial_date_time",
}


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


# --- payloads, as Slack sends them ---------------------------------------------------------------------------


def home_opened_event(user: str, home: SlackView | None) -> dict[str, Any]:
    """Return app_home_opened for the Home tab (carrying the user's current Home view, once there is one)."""
    event: dict[str, Any] = {
        "type": "app_home_opened",
        "user": user,
        "channel": dm_channel(user),
        "tab": "home",
        "event_ts": _event_ts(),
    }
    if home is not None:
        event["view"] = home.body
    return event_callback(event)


def shortcut_payload(callback_id: str, user: str, trigger_id: str) -> dict[str, Any]:
    """Return a global shortcut's payload (it carries no channel)."""
    return {
        "type": "shortcut",
        "token": "deprecated",
        "action_ts": _event_ts(),
        "team": TEAM,
        "user": slack_user(user),
        "is_enterprise_install": False,
        "enterprise": None,
        "callback_id": callback_id,
        "trigger_id": trigger_id,
    }


def view_payload(kind: str, view: SlackView, state: dict[str, Any], user: str, **fields: Any) -> dict[str, Any]:
    """Return the fields every payload about a view shares (view_submission, view_closed, block_actions and
    block_suggestion from a view): the view as Slack holds it, with the state the user sees, plus `fields`."""
    return {
        "type": kind,
        "team": TEAM,
        "user": slack_user(user),
        "api_app_id": APP_ID,
        "token": "deprecated",
        "view": {**view.body, "state": state},
        "is_enterprise_install": False,
        "enterprise": None,
        **fields,
    }


def view_action(
    block: dict[str, Any], element: dict[str, Any], choice: Any, suggested: list[dict[str, Any]]
) -> dict[str, Any]:
    """Return the `actions` item of block_actions for a press on a button, or `choice` made in a select."""
    kind = str(element.get("type"))
    action: dict[str, Any] = {
        "action_id": element["action_id"],
        "block_id": block["block_id"],
        "type": kind,
        "action_ts": _event_ts(),
    }
    if kind == "button":
        action.update({k: element[k] for k in ("text", "value", "style") if k in element})
    elif kind in STATE_FIELDS:
        name, shape = STATE_FIELDS[kind]
        action[name] = _chosen(element, shape, choice, suggested)
    elif kind == "overflow":
        action["selected_option"] = _option(element, choice, [], external=False)
    return action


def function_executed_event(
    execution: FunctionExecution, inputs: Mapping[str, Any], definition: Mapping[str, Any]
) -> dict[str, Any]:
    """Return function_executed for an execution the stand-in started, described by its manifest definition."""
    now = int(time.time())
    function = {
        "id": f"Fn{execution.id.removeprefix('Fx')}",
        "callback_id": execution.callback_id,
        "title": definition.get("title", execution.callback_id),
        "description": definition.get("description", ""),
        "type": "app",
        "input_parameters": parameters(definition.get("input_parameters"), described=inputs),
        "output_parameters": parameters(definition.get("output_parameters")),
        "app_id": APP_ID,
        "date_created": now - 86_400,
        "date_updated": now - 3_600,
        "date_deleted": 0,
    }
    event = {
        "type": "function_executed",
        "function": function,
        "inputs": dict(inputs),
        "function_execution_id": execution.id,
        "workflow_execution_id": f"Wx{execution.id.removeprefix('Fx')}",
        "event_ts": _event_ts(),
        "bot_access_token": execution.token,
    }
    return event_callback(event)


def event_callback(event: dict[str, Any]) -> dict[str, Any]:
    """Wrap an event as the Events API delivers it."""
    return {
        "token": "deprecated",
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{secrets.token_hex(5).upper()}",
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def slack_user(user: str) -> dict[str, str]:
    """Return the `user` object of an interaction payload."""
    return {"id": user, "username": "someone", "name": "someone", "team_id": TEAM_ID}


def dm_channel(user: str) -> str:
    """Return the id of the bot's direct-message channel with a user (where its Home tab lives)."""
    return "D" + user.removeprefix("U").removeprefix("W")


def view_text(view: SlackView) -> str:
    """Return all human-visible text of a view: its title and every text in its blocks."""
    parts = [view.title]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and "text" in node:
                parts.append(str(node["text"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(view.blocks)
    return "\n".join(p for p in parts if p)


def parameters(
    declared: Mapping[str, Any] | Sequence[Any] | None, *, described: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Return a function's parameters as function_executed lists them, from a manifest's `input_parameters` or
    `output_parameters` (a map of name to parameter, or {properties, required}); with none declared, each of
    `described` as a required string."""
    if declared is None:
        return [
            {"type": "string", "name": name, "title": name, "description": "", "is_required": True}
            for name in described or {}
        ]
    if isinstance(declared, Sequence):
        return [dict(p) for p in declared]
    properties = declared.get("properties", declared)
    required = set(declared.get("required", []))
    return [
        {
            "type": spec.get("type", "string"),
            "name": name,
            "title": spec.get("title", name),
            "description": spec.get("description", ""),
            "is_required": bool(spec.get("is_required", name in required)),
        }
        for name, spec in properties.items()
    ]


def view_state(
    view: SlackView, values: Mapping[str, Any], suggested: Mapping[tuple[str, str], list[dict[str, Any]]]
) -> tuple[dict[str, Any], list[str]]:
    """Return a view's `state` as Slack sends it (every element that holds a value: the value given by action_id,
    else its initial value) and the labels of required inputs left empty."""
    state: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    used: set[str] = set()
    for block in view.blocks:
        for element in interactive_elements(block):
            kind = str(element.get("type"))
            if kind not in STATE_FIELDS:
                continue
            action_id = str(element["action_id"])
            name, shape = STATE_FIELDS[kind]
            if action_id in values:
                used.add(action_id)
                chosen = _chosen(element, shape, values[action_id], suggested.get((view.id, action_id), []))
            else:
                chosen = _initial(element, name, shape, view)
            state.setdefault(str(block["block_id"]), {})[action_id] = {"type": kind, name: chosen}
            if block.get("type") == "input" and not block.get("optional") and chosen in (None, "", []):
                missing.append(str(block.get("label", {}).get("text", block["block_id"])))
    unknown = set(values) - used
    if unknown:
        raise KeyError(f"view {view.callback_id!r} has no input with action_id {sorted(unknown)}")
    return {"values": state}, missing


def _initial(element: dict[str, Any], name: str, shape: str, view: SlackView) -> Any:
    """Return what an element holds before the user touches it (Slack fills in the current conversation)."""
    initial = element.get(INITIAL_FIELDS[name])
    if initial is None and element.get("default_to_current_conversation") and view.opened_from:
        initial = view.opened_from if shape == "scalar" else [view.opened_from]
    if initial is None and shape in ("options", "list"):
        return []
    return initial


def _chosen(element: dict[str, Any], shape: str, choice: Any, suggested: list[dict[str, Any]]) -> Any:
    """Turn what a user picked into the value Slack reports for an element of this shape."""
    external = str(element.get("type", "")).endswith("external_select")
    if shape == "option":
        return None if choice is None else _option(element, choice, suggested, external=external)
    if shape == "options":
        picks = [choice] if isinstance(choice, (str, dict)) else list(choice or [])
        return [_option(element, pick, suggested, external=external) for pick in picks]
    if shape == "list":
        return [choice] if isinstance(choice, str) else list(choice or [])
    return choice


def _option(element: dict[str, Any], pick: Any, suggested: list[dict[str, Any]], *, external: bool) -> dict[str, Any]:
    """Return the option object for a picked value (a dict is taken as it is)."""
    if isinstance(pick, dict):
        return pick
    groups = element.get("option_groups") or []
    offered = [*(element.get("options") or []), *(o for g in groups for o in g.get("options", [])), *suggested]
    found = next((o for o in offered if o.get("value") == pick), None)
    if found is not None:
        return dict(found)
    if external:  # an option the bot did not offer here (a forged pick, or one from an earlier search)
        return {"text": {"type": "plain_text", "text": str(pick)}, "value": str(pick)}
    raise ValueError(f"{element.get('action_id')!r} offers no option with value {pick!r}")


def _event_ts() -> str:
    return f"{time.time():.6f}"
