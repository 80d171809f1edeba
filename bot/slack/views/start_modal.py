"""The start modal — a channel, instances by type-ahead, a duration when runs allow one — its other faces (checking,
done), the options its type-ahead answers with, and the sentences its field errors say. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.domain.durations import say_duration
from bot.domain.ports import InstanceInfo
from bot.grants.rules import Coverage
from bot.operations.opening import Prepared
from bot.operations.surface_runs import DurationTerms
from bot.slack import action_ids
from bot.slack.views.format import Block, context, count, escape, section, shorten

View = dict[str, Any]

TITLE = "Start instances"
OPTION_TEXT_LIMIT = 75
MAX_PICKED = 100
NO_TIME_BOX = "none"  # the duration option that keeps instances running until someone stops them


def _plain(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


def start_form(
    *,
    channel_id: str | None,
    terms: DurationTerms | None,
    problem: str | None = None,
    picked: Sequence[Block] = (),
) -> View:
    """The modal as opened (channel preset where it was opened from), or shown again with a problem to fix."""
    blocks: list[Block] = []
    if problem:
        blocks.append(section(f":warning: {escape(problem)}"))  # it may quote names Zenlayer gave
    channel: Block = {
        "type": "conversations_select",
        "action_id": action_ids.MODAL_CHANNEL,
        "placeholder": _plain("Pick a channel"),
        "default_to_current_conversation": True,
        "response_url_enabled": True,  # Slack then gives a response_url there, for private notes as with /vm
        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
    }
    if channel_id:
        channel["initial_conversation"] = channel_id
    blocks.append(_input(action_ids.MODAL_CHANNEL, "Confirm in channel", channel))
    instances: Block = {
        "type": "multi_external_select",
        "action_id": action_ids.MODAL_INSTANCES,
        "placeholder": _plain("Type a name or an id"),
        "min_query_length": 0,
        "max_selected_items": MAX_PICKED,
    }
    if picked:
        instances["initial_options"] = list(picked)
    hint = "Only instances you may start in that channel are offered (name · id · zone · status)."
    blocks.append(_input(action_ids.MODAL_INSTANCES, "Instances", instances, hint=hint))
    if terms is not None:
        blocks.append(_duration(terms))
    blocks.append(context("Nothing starts yet: you confirm in the channel, after the checks `/vm start` makes."))
    return {
        "type": "modal",
        "callback_id": action_ids.START_MODAL,
        "title": _plain(TITLE),
        "submit": _plain("Ask to start"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


def _input(block_id: str, label: str, element: Block, *, hint: str | None = None, optional: bool = False) -> Block:
    block: Block = {"type": "input", "block_id": block_id, "label": _plain(label), "element": element}
    if hint:
        block["hint"] = _plain(hint)
    if optional:
        block["optional"] = True
    return block


def _duration(terms: DurationTerms) -> Block:
    """The duration select: the choices the caller's cap allows ("until I stop it" only without a cap)."""
    options = [{"text": _plain(text), "value": text} for text, _ in terms.choices()]
    if terms.cap_seconds is None:
        options.append({"text": _plain("Until someone stops them"), "value": NO_TIME_BOX})
        hint = "Leave it empty to keep them running until someone stops them."
    else:
        hint = f"Your grants here cap runs at {say_duration(terms.cap_seconds)}; left empty, a run gets the cap."
    element: Block = {
        "type": "static_select",
        "action_id": action_ids.MODAL_DURATION,
        "options": options,
        "placeholder": _plain("For how long"),
    }
    return _input(action_ids.MODAL_DURATION, "Stop them after", element, hint=hint, optional=True)


def checking(channel_id: str) -> View:
    """Shown when the checks take longer than Slack waits for an answer: updated once they are done."""
    text = f":mag: Checking the instances with Zenlayer before asking in <#{channel_id}>… this updates in a moment."
    return _note(text)


def done(prepared: Prepared) -> View:
    """The request is made: where to confirm it (or who approves it), and what was skipped."""
    where = f"<#{prepared.channel_id}>"
    if prepared.needs_approval:
        then = f"It waits in {where} for someone with an approve grant."
    else:
        then = f"Press *Start* on the confirmation in {where}: nothing starts before."
    lines = [f":white_check_mark: Asked to start {count(len(prepared.ready))}. {then}"]
    if prepared.skipped:
        lines.append(f"{count(len(prepared.skipped))} skipped — the confirmation says why.")
    return _note("\n".join(lines))


def _note(text: str) -> View:
    return {
        "type": "modal",
        "callback_id": action_ids.START_MODAL,
        "title": _plain(TITLE),
        "close": _plain("Close"),
        "blocks": [section(text)],
    }


def option(info: InstanceInfo) -> Block:
    """A type-ahead option: name · id · zone · status (the name shortened first, so the id always shows)."""
    tail = " · ".join(part for part in (info.instance_id, info.zone, info.status) if part)
    room = max(12, OPTION_TEXT_LIMIT - len(tail) - 3)
    text = f"{shorten(info.name or info.instance_id, room)} · {tail}"
    return {"text": _plain(shorten(text, OPTION_TEXT_LIMIT)), "value": info.instance_id}


def picked_again(options: Sequence[Block]) -> list[Block]:
    """The options a submission picked, to show them picked when the form comes back (texts cut to fit)."""
    kept = []
    for picked in options[:100]:
        text = str(picked.get("text", {}).get("text", "")) or str(picked.get("value", ""))
        kept.append({"text": _plain(shorten(text, OPTION_TEXT_LIMIT) or "?"), "value": str(picked.get("value"))})
    return kept


# --- field errors: plain sentences under the field they concern --------------------------------------------------


def no_grant_here() -> str:
    return "You hold no grant to start instances in that channel: pick another one, or ask a vm-bot admin."


def not_member(error: str) -> str:
    """Why the confirmation cannot be posted in the channel picked."""
    if error == "user_not_in_channel":
        return "You are not a member of that channel: pick one you are in."
    if error == "is_archived":
        return "That channel is archived: pick another one."
    if error == "channel_not_found":
        return "I cannot post there: pick a channel I am a member of."
    return "I am not a member of that channel: invite me there with /invite @vm-bot, or pick another one."


def nothing_picked() -> str:
    return "Pick at least one instance."


def not_instances(values: Sequence[str]) -> str:
    shown = ", ".join(shorten(v, 40) for v in values[:3])
    return f"Not instance ids: {shown}. Pick instances from the list."


def not_covered(coverage: Coverage) -> str:
    """Which instances the grants do not cover there (named as the user picked them)."""
    names = [named_id(i, coverage.names.get(i)) for i in coverage.uncovered[:5]]
    more = f" and {len(coverage.uncovered) - 5} more" if len(coverage.uncovered) > 5 else ""
    return shorten(f"You may not start {', '.join(names)}{more} in that channel.", 2000)


def nothing_to_do(prepared: Prepared) -> str:
    """Why none of the instances picked can be started."""
    reasons = [f"{s.name or s.instance_id} {s.reason}" for s in prepared.skipped[:5]]
    return shorten(f"None of these can be started now: {'; '.join(reasons)}.", 2000)


def duplicate() -> str:
    return "You already asked to start exactly these there: use that confirmation."


def problem(text: str) -> str:
    """Any other refusal, as one line."""
    return shorten(text, 2000)


def named_id(instance_id: str, name: str | None) -> str:
    """Name an instance in plain text: `web-1 (1234…)`, or the id alone when the name says nothing more."""
    return f"{name} ({instance_id})" if name and name != instance_id else instance_id
