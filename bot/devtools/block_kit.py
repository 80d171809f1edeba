"""Slack's Block Kit rules as the stand-in applies them: blocks in messages, views (modals and the App Home), and
the options an external select is answered with.

Each check runs slack_sdk's own models first (parsed and serialised, which validates nested elements too), then the
documented limits the models do not check. View problems are worded the way Slack words them in an
`invalid_arguments` answer, "[ERROR] <what> [json-pointer:/view/...]" — the format Slack was seen to answer (e.g.
"[ERROR] must be less than 24 characters [json-pointer:/view/title/text]"); the sentences themselves are ours.
"""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

# Slack's documented limits for messages and Block Kit.
MAX_BLOCKS = 50
SECTION_TEXT_LIMIT = 3000
SECTION_FIELDS = 10
FIELD_TEXT_LIMIT = 2000
HEADER_TEXT_LIMIT = 150
CONTEXT_ELEMENTS = 10
ACTIONS_ELEMENTS = 25
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
ID_LIMIT = 255  # action_id, block_id
CONFIRM_TITLE_LIMIT = 100
CONFIRM_TEXT_LIMIT = 300
INPUT_LABEL_LIMIT = 2000
HINT_LIMIT = 2000
OPTION_TEXT_LIMIT = 75  # an option's text and description, an option group's label
OPTION_VALUE_LIMIT = 150
SELECT_OPTIONS_LIMIT = 100  # options (or option groups) of a static select, and of an external select's answer
CHOICE_OPTIONS_LIMIT = 10  # checkboxes, radio buttons

# Views (modals and the App Home).
VIEW_MAX_BLOCKS = 100
VIEW_TITLE_LIMIT = 24
VIEW_BUTTON_LIMIT = 24  # a modal's submit and close texts
PRIVATE_METADATA_LIMIT = 3000
CALLBACK_ID_LIMIT = 255
EXTERNAL_ID_LIMIT = 255
# Slack documents `view_too_large` as "greater than 250kb" without saying kB or KiB; this takes the larger.
VIEW_SIZE_LIMIT = 250 * 1024

SELECTS = frozenset({"static_select", "multi_static_select"})
CHOICES = frozenset({"checkboxes", "radio_buttons"})


def block_problem(block: dict[str, Any]) -> str | None:
    """Say what is wrong with one block by Slack's rules (None when nothing is): slack_sdk's own validation first,
    then the documented limits it does not check."""
    try:
        parsed = Block.parse(block)
        if parsed is None or type(parsed) is Block:
            return f"unknown block type {block.get('type')!r}"
        parsed.to_dict()  # validates the block and every element and text object in it
    except (SlackObjectFormationError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return str(exc) or type(exc).__name__
    kind = block.get("type")
    if len(str(block.get("block_id", ""))) > ID_LIMIT:
        return "block_id too long"
    if kind == "section":
        fields = block.get("fields") or []
        if len(fields) > SECTION_FIELDS:
            return "too many fields"
        problems = [_text_problem(block.get("text"), SECTION_TEXT_LIMIT, optional=bool(fields))]
        problems += [_text_problem(f, FIELD_TEXT_LIMIT) for f in fields]
        if block.get("accessory") is not None:
            problems.append(_element_problem(block["accessory"]))
        return next((p for p in problems if p), None)
    if kind == "header":
        return _text_problem(block.get("text"), HEADER_TEXT_LIMIT, plain=True)
    if kind == "context":
        elements = block.get("elements") or []
        if not elements or len(elements) > CONTEXT_ELEMENTS:
            return "a context block needs 1 to 10 elements"
        texts = [e for e in elements if e.get("type") in ("mrkdwn", "plain_text")]
        return next((p for p in (_text_problem(e, SECTION_TEXT_LIMIT) for e in texts) if p), None)
    if kind == "actions":
        elements = block.get("elements") or []
        if not elements or len(elements) > ACTIONS_ELEMENTS:
            return "an actions block needs 1 to 25 elements"
        return next((p for p in map(_element_problem, elements) if p), None)
    if kind == "input":
        label = _text_problem(block.get("label"), INPUT_LABEL_LIMIT, plain=True)
        hint = _text_problem(block.get("hint"), HINT_LIMIT, plain=True, optional=True)
        element = block.get("element")
        return (
            (f"label: {label}" if label else None)
            or (f"hint: {hint}" if hint else None)
            or ("an input block needs an element" if not isinstance(element, dict) else _element_problem(element))
        )
    return None


def _element_problem(element: Any) -> str | None:
    """Check an interactive element's texts, ids and options against Slack's limits."""
    if not isinstance(element, dict):
        return "an element must be an object"
    if len(str(element.get("action_id", ""))) > ID_LIMIT:
        return "action_id too long"
    if element.get("type") == "button":
        if len(str(element.get("value", ""))) > BUTTON_VALUE_LIMIT:
            return "button value too long"
        problem = _text_problem(element.get("text"), BUTTON_TEXT_LIMIT, plain=True)
        if problem:
            return f"button {problem}"
    problem = _options_problem(element)
    if problem:
        return problem
    confirm = element.get("confirm")
    if confirm:
        return _text_problem(confirm.get("title"), CONFIRM_TITLE_LIMIT, plain=True) or _text_problem(
            confirm.get("text"), CONFIRM_TEXT_LIMIT
        )
    return None


def _options_problem(element: dict[str, Any]) -> str | None:
    """Check how many options an element offers and each option's (and initial option's) text and value."""
    kind = element.get("type")
    options = element.get("options") or []
    groups = element.get("option_groups") or []
    if kind in SELECTS and (len(options) > SELECT_OPTIONS_LIMIT or len(groups) > SELECT_OPTIONS_LIMIT):
        return f"a {kind} offers at most {SELECT_OPTIONS_LIMIT} options or option groups"
    if kind in CHOICES and len(options) > CHOICE_OPTIONS_LIMIT:
        return f"{kind} offer at most {CHOICE_OPTIONS_LIMIT} options"
    initial = [element["initial_option"]] if element.get("initial_option") else []
    initial += element.get("initial_options") or []
    problems = [_group_problem(g) for g in groups]
    problems += [option_problem(o, mrkdwn=kind in CHOICES) for o in [*options, *initial]]
    return next((p for p in problems if p), None)


def _group_problem(group: Any) -> str | None:
    """Check an option group: its label and its options."""
    if not isinstance(group, dict):
        return "an option group must be an object"
    options = group.get("options") or []
    if len(options) > SELECT_OPTIONS_LIMIT:
        return f"an option group holds at most {SELECT_OPTIONS_LIMIT} options"
    label = _text_problem(group.get("label"), OPTION_TEXT_LIMIT, plain=True)
    if label:
        return f"option group label: {label}"
    return next((p for p in map(option_problem, options) if p), None)


def option_problem(option: Any, *, mrkdwn: bool = False) -> str | None:
    """Check one option object: text (plain text, or mrkdwn in checkboxes and radio buttons) 1 to 75 characters,
    a value of at most 150 and a description of at most 75."""
    if not isinstance(option, dict):
        return "an option must be an object"
    text = _text_problem(option.get("text"), OPTION_TEXT_LIMIT, plain=not mrkdwn)
    if text:
        return f"option text: {text}"
    if not isinstance(option.get("value"), str) or len(option["value"]) > OPTION_VALUE_LIMIT:
        return f"an option needs a value of at most {OPTION_VALUE_LIMIT} characters"
    description = _text_problem(option.get("description"), OPTION_TEXT_LIMIT, plain=not mrkdwn, optional=True)
    return f"option description: {description}" if description else None


def _text_problem(obj: Any, limit: int, *, plain: bool = False, optional: bool = False) -> str | None:
    """Check a text object: the right type, and 1 to `limit` characters."""
    if obj is None and optional:
        return None
    if not isinstance(obj, dict) or obj.get("type") not in (("plain_text",) if plain else ("plain_text", "mrkdwn")):
        return "a text object of the wrong type"
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return "empty text"
    if len(text) > limit:
        return f"text longer than {limit} characters"
    return None


# --- views ------------------------------------------------------------------------------------------------


def view_error(view: Any, surface: str) -> tuple[str, list[str]] | None:
    """Return the error Slack answers a views.* call carrying this view — `view_too_large`, or `invalid_arguments`
    with its messages — or None when Slack takes it. `surface` is the view type the call needs: modal or home."""
    if len(json.dumps(view).encode("utf-8")) > VIEW_SIZE_LIMIT:
        return "view_too_large", []
    problems = view_problems(view, surface)
    return ("invalid_arguments", problems) if problems else None


def view_problems(view: Any, surface: str) -> list[str]:
    """Return what Slack would say is wrong with a view, one message per problem naming its JSON pointer."""
    if not isinstance(view, dict):
        return [_at("/view", "must be an object")]
    problems = [] if view.get("type") == surface else [_at("/view/type", f"must be {surface}")]
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        problems.append(_at("/view/blocks", "must provide at least one block"))
        blocks = []
    elif len(blocks) > VIEW_MAX_BLOCKS:
        problems.append(_at("/view/blocks", f"must provide no more than {VIEW_MAX_BLOCKS} items"))
    problems += _view_field_problems(view, surface, has_inputs=any(_is_input(b) for b in blocks))
    for index, block in enumerate(blocks):
        problem = block_problem(block) if isinstance(block, dict) else "must be an object"
        if problem:
            problems.append(_at(f"/view/blocks/{index}", problem))
    problems += _duplicate_block_ids(blocks)
    if not problems:  # slack_sdk's View model as a last word, for whatever the checks above do not cover
        try:
            View(**view).validate_json()
        except (SlackObjectFormationError, TypeError, ValueError) as exc:
            problems.append(_at("/view", str(exc)))
    return problems


def _view_field_problems(view: dict[str, Any], surface: str, *, has_inputs: bool) -> list[str]:
    """Check a view's own fields: title, submit and close, private_metadata, callback_id, external_id."""
    problems: list[str] = []
    if surface == "modal":
        title = _text_problem(view.get("title"), VIEW_TITLE_LIMIT, plain=True)
        if title:
            problems.append(_at("/view/title/text", f"must be 1 to {VIEW_TITLE_LIMIT} characters of plain_text"))
        for button in ("submit", "close"):
            if _text_problem(view.get(button), VIEW_BUTTON_LIMIT, plain=True, optional=True):
                problems.append(_at(f"/view/{button}/text", f"must be 1 to {VIEW_BUTTON_LIMIT} characters"))
        if has_inputs and view.get("submit") is None:
            problems.append(_at("/view/submit", "is required when the view has input blocks"))
    else:
        problems += [_at(f"/view/{b}", "is not allowed in a home view") for b in ("submit", "close") if b in view]
    for name, limit in (
        ("private_metadata", PRIVATE_METADATA_LIMIT),
        ("callback_id", CALLBACK_ID_LIMIT),
        ("external_id", EXTERNAL_ID_LIMIT),
    ):
        value = view.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            problems.append(_at(f"/view/{name}", f"must be a string of at most {limit} characters"))
    return problems


def _duplicate_block_ids(blocks: list[Any]) -> list[str]:
    """Name every block whose block_id an earlier block already uses (Slack needs them unique in a view)."""
    seen: set[str] = set()
    problems = []
    for index, block in enumerate(blocks):
        block_id = block.get("block_id") if isinstance(block, dict) else None
        if block_id is None:
            continue
        if block_id in seen:
            problems.append(_at(f"/view/blocks/{index}/block_id", f"duplicate block_id {block_id!r}"))
        seen.add(block_id)
    return problems


def _is_input(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "input"


def _at(pointer: str, problem: str) -> str:
    """Word one problem as Slack does in response_metadata.messages."""
    return f"[ERROR] {problem} [json-pointer:{pointer}]"


# --- what an external select is answered with -------------------------------------------------------------


def options_problems(answer: Any) -> list[str]:
    """Return what is wrong with an app's answer to a block_suggestion ([] when Slack can show it): options or
    option_groups, at most 100, each option's text plain and at most 75 characters, its value at most 150."""
    if not isinstance(answer, dict):
        return ["the answer must be a JSON object"]
    options, groups = answer.get("options"), answer.get("option_groups")
    if (options is None) == (groups is None):
        return ["the answer needs either options or option_groups"]
    items = options if options is not None else groups
    if not isinstance(items, list):
        return ["options and option_groups must be lists"]
    if len(items) > SELECT_OPTIONS_LIMIT:
        return [f"at most {SELECT_OPTIONS_LIMIT} options or option groups, not {len(items)}"]
    check = option_problem if options is not None else _group_problem
    return [f"item {i}: {p}" for i, p in enumerate(map(check, items)) if p]
