"""What a person did in a view, as Slack reports it: a view's `state` (each element's value, picked or preset) and
the `actions` item of block_actions, from values given by action_id — options looked up among an element's own or
those the bot answered type-ahead with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.devtools.slack_payloads import event_ts
from bot.devtools.slack_views import SlackView, interactive_elements

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


def view_action(
    block: dict[str, Any], element: dict[str, Any], choice: Any, suggested: list[dict[str, Any]]
) -> dict[str, Any]:
    """Return the `actions` item of block_actions for a press on a button, or `choice` made in a select."""
    kind = str(element.get("type"))
    action: dict[str, Any] = {
        "action_id": element["action_id"],
        "block_id": block["block_id"],
        "type": kind,
        "action_ts": event_ts(),
    }
    if kind == "button":
        action.update({k: element[k] for k in ("text", "value", "style") if k in element})
    elif kind in STATE_FIELDS:
        name, shape = STATE_FIELDS[kind]
        action[name] = _chosen(element, shape, choice, suggested)
    elif kind == "overflow":
        action["selected_option"] = _option(element, choice, [], external=False)
    return action


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
