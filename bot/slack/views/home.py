"""The App Home: what is running for you, what waits for your approval, your recent requests, and a Start button.
Pure: a Home model in, a `home` view out (at most 100 blocks, whatever the model holds)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.operations.app_home import HomeModel
from bot.operations.records import HomeRun, OperationRecord
from bot.operations.states import State
from bot.slack import action_ids
from bot.slack.views import runs
from bot.slack.views.format import (
    ELLIPSIS,
    Block,
    context,
    count,
    label,
    listing,
    mention,
    section,
    slack_date,
)

View = dict[str, Any]
Link = Callable[[str, str | None], str | None]  # (channel, message ts) -> a permalink, if one can be made

VIEW_BLOCKS = 100  # Slack's limit for a Home
INSTANCES_PER_REQUEST = 5  # lines of instances shown under a request waiting for approval
NO_GRANT = (
    ":wave: You hold no vm-bot grant yet: ask a vm-bot admin to give you one (`/vm grant @you --names 'web-*'` in "
    "Slack, or `vm-bot perms grant` where vm-bot runs), and this page will show what you can start."
)
NOTHING_YET = ":information_source: Nothing here yet: no runs, nothing waiting for your approval, no requests."
STATE_WORDS = {
    State.APPROVED: ":hourglass_flowing_sand: {doing}",
    State.STARTING: ":hourglass_flowing_sand: {doing}",
    State.WATCHING: ":hourglass_flowing_sand: {doing}",
    State.DONE: ":large_green_circle: done",
    State.FAILED: ":warning: failed",
    State.TIMED_OUT: ":warning: timed out",
    State.CANCELLED: ":x: cancelled",
    State.REJECTED: ":x: rejected",
    State.WITHDRAWN: ":no_entry_sign: withdrawn",
    State.EXPIRED: ":hourglass: expired",
}


def home_view(model: HomeModel, link: Link) -> View:
    """Render someone's Home."""
    blocks: list[Block] = []
    if model.notice:
        blocks.append(section(f":warning: {model.notice}"))  # our own sentence, escaped where it quotes anything
    if not model.has_grants and not (model.runs or model.waiting or model.recent):
        blocks.append(section(NO_GRANT))
        return {"type": "home", "blocks": blocks}
    if model.may_start:
        blocks.append(_start_button())
    if model.runs:
        blocks += [_header("Running for you"), *(_run(run, link) for run in model.runs)]
        if model.runs_more:
            blocks.append(context(f"{ELLIPSIS}and {model.runs_more} more — `/vm runs` lists them all."))
    if model.waiting:
        blocks.append(_header("Waiting for your approval"))
        for operation in model.waiting:
            blocks += _waiting(operation, link)
        if model.waiting_more:
            blocks.append(context(f"{ELLIPSIS}and {model.waiting_more} more, in their channels."))
    if model.recent:
        blocks += [_header("Your recent requests"), section("\n".join(_recent(op, link) for op in model.recent))]
    if not (model.runs or model.waiting or model.recent):
        blocks.append(section(NOTHING_YET))
    blocks.append(context(f"Updated {slack_date(model.as_of, '{date_short_pretty} at {time}')}"))
    return {"type": "home", "blocks": blocks[:VIEW_BLOCKS]}


def _header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


def _start_button() -> Block:
    button = {
        "type": "button",
        "text": {"type": "plain_text", "text": "Start instances"},
        "action_id": action_ids.HOME_START,
        "value": "home",
        "style": "primary",
    }
    return {"type": "actions", "block_id": "vm_home_start", "elements": [button]}


def _thread(link: Link, channel_id: str, message_ts: str | None) -> str:
    """Return ` in #channel · thread` (a link to the thread, when one can be made)."""
    url = link(channel_id, message_ts)
    return f" in <#{channel_id}>" + (f" · <{url}|thread>" if url else "")


def _run(run: HomeRun, link: Link) -> Block:
    """One run: what, when it stops, and an overflow menu with Extend (when the cap allows) and Stop."""
    stops = f"stops {slack_date(run.stop_at, '{time}')}" if run.stop_at else "starting"
    left = f", in {_left(run.seconds_left)}" if run.seconds_left is not None else ""
    text = f"• {label(run.instance_id, run.name)} — {stops}{left}{_thread(link, run.channel_id, run.message_ts)}"
    options = []
    key = f"{run.request_id}:{run.instance_id}"
    if run.can_extend:
        options.append(_option("Extend 1 h", f"extend:{key}"))
    options.append(_option("Stop now", f"stop:{key}"))
    return {
        **section(text),
        "block_id": f"vm_home_run_{key}"[:255],
        "accessory": {"type": "overflow", "action_id": action_ids.HOME_RUN, "options": options},
    }


def _option(text: str, value: str) -> Block:
    return {"text": {"type": "plain_text", "text": text}, "value": value}


def _waiting(operation: OperationRecord, link: Link) -> list[Block]:
    """A request waiting for approval: who wants what where, its instances, when it expires, and the buttons."""
    words = operation.action.words
    wants = f"{words.emoji} {mention(operation.requester_id)} wants to {words.verb} {count(len(operation.included))}"
    lines = [f"• {label(i.instance_id, i.name, i.zone)}" for i in operation.included]
    shown = listing(lines, limit=INSTANCES_PER_REQUEST, hint=f" — `/vm status --request {operation.id}`")
    expires = f"Expires {slack_date(operation.expires_at)}."
    text = "\n".join([f"{wants}{_thread(link, operation.channel_id, operation.message_ts)}", *shown, expires])
    buttons = [
        _button("Approve", action_ids.HOME_APPROVE, operation.id, "primary"),
        _button("Reject", action_ids.HOME_REJECT, operation.id, "danger"),
    ]
    return [section(text), {"type": "actions", "block_id": f"vm_home_wait_{operation.id}", "elements": buttons}]


def _button(text: str, action_id: str, operation_id: int, style: str) -> Block:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": str(operation_id),
        "style": style,
    }


def _recent(operation: OperationRecord, link: Link) -> str:
    """One line of "Your recent requests": the action, its instances, where, how it stands, and its thread."""
    words = operation.action.words
    included = operation.included or list(operation.instances)
    first = label(included[0].instance_id, included[0].name) if included else "nothing"
    more = f" and {len(included) - 1} more" if len(included) > 1 else ""
    if operation.state == State.PENDING:
        state = ":hourglass: waiting for approval" if operation.needs_approval else ":point_right: waiting for you"
    else:
        state = STATE_WORDS.get(operation.state, operation.state.value).format(doing=words.doing.lower())
    time_box = runs.run_line(operation)
    if time_box is not None and operation.runs:
        state += f" · {time_box.rstrip('.')}"
    url = link(operation.channel_id, operation.message_ts)
    thread = f" · <{url}|thread>" if url else ""
    return f"• {words.emoji} {words.verb} {first}{more} in <#{operation.channel_id}> — {state}{thread}"


def _left(seconds: float) -> str:
    """Say a time left the short way: "3 h 20 min", "45 min", "30 s"."""
    left = max(0, round(seconds))
    hours, rest = divmod(left, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else f"{secs} s"
