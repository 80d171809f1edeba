"""Time-boxed runs as people read them: when a run stops, the reminder with its buttons, `/vm runs`, and what a
run's button did. Pure functions over read models; times are the database's, said in UTC and "in 4 h"."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.domain.durations import say_duration
from bot.domain.vocabulary import SYSTEM_ACTOR
from bot.operations.click_model import ClickOutcome
from bot.operations.records import OperationRecord, RunRecord, RunState
from bot.slack import action_ids
from bot.slack.views.format import (
    REASON_LIMIT,
    REPLY_BUDGET,
    Block,
    context,
    label,
    listing,
    mention,
    outside,
    section,
    sections,
)
from bot.slack.views.message import Message

MAX_RUNS_LISTED = 20  # starts with buttons in one `/vm runs` answer (each is a few blocks; Slack allows 50)


def at(moment: datetime, as_of: datetime) -> str:
    """Say a moment in UTC: "18:30 UTC" today ("18:30:15 UTC" within minutes), with the day when further off."""
    away = abs((moment - as_of).total_seconds())
    if away < 600:
        return moment.strftime("%H:%M:%S UTC")
    if away < 20 * 3600:
        return moment.strftime("%H:%M UTC")
    return moment.strftime("%a %d %b %H:%M UTC")


def stops(runs: Sequence[RunRecord]) -> str | None:
    """Say when the first of these running runs stops: "stops at 18:30 UTC, in 4 h" (None: no clock runs)."""
    running = [r for r in runs if r.state == RunState.RUNNING and r.stop_at is not None]
    if not running:
        return None
    first = min(running, key=lambda r: r.stop_at or r.as_of)
    assert first.stop_at is not None
    return f"stops at {at(first.stop_at, first.as_of)}, in {say_duration(first.seconds_left or 0)}"


def run_line(operation: OperationRecord) -> str | None:
    """The time box on a start's confirmation: its length before RUNNING, its stop while running, how it ended."""
    if operation.action.name != "start" or operation.run_seconds is None:
        return None
    length = say_duration(operation.run_seconds)
    if not operation.runs:
        return f":stopwatch: Time-boxed: stopped {length} after it is RUNNING."
    when = stops(operation.runs)
    if when is not None:
        extended = max(r.extensions for r in operation.runs)
        more = {0: "", 1: " (extended once)"}.get(extended, f" (extended {extended} times)")
        return f":stopwatch: Time-boxed run: {when}{more}."
    ended = [r for r in operation.runs if r.state == RunState.STOPPED]
    if ended:
        return f":stop_button: {stopped_after(ended)}"
    if any(r.state == RunState.STOPPING for r in operation.runs):
        return ":hourglass_flowing_sand: Time is up: stopping…"
    if any(r.state == RunState.WAITING for r in operation.runs):
        return f":stopwatch: Time-boxed: stopped {length} after it is RUNNING."
    return None


def stopped_after(runs: Sequence[RunRecord]) -> str:
    """Say how a run ended: "Stopped after 4 h (time-boxed run)" on time, or how long it ran when stopped early."""
    if any(r.ended_reason == "early" for r in runs):
        return f"Stopped early, after {say_duration(max((r.ran_seconds or 0.0) for r in runs))} (time-boxed run)"
    return f"Stopped after {say_duration(max(r.duration_seconds for r in runs))} (time-boxed run)"


def stop_final(operation: OperationRecord) -> str | None:
    """The headline of a run's stop in its start's thread (None: this stop ended no run)."""
    stopped = [r for r in operation.runs if r.state == RunState.STOPPED and r.stop_request_id == operation.id]
    if not stopped:
        return None
    return f":stop_button: {stopped_after(stopped)}"


def stop_again(operation: OperationRecord) -> str | None:
    """What a failed stop of a run adds: an auto-stop is tried again (bot.operations.runs.retry_delay), a stop
    someone pressed leaves the run's time box standing (None: not a run's stop)."""
    if operation.action.name != "stop" or operation.parent_id is None:
        return None
    if operation.decided_by == SYSTEM_ACTOR:
        return ":repeat: I will try again in a minute, then less often (at most an hour apart) until it is stopped."
    return ":stopwatch: The run stays time-boxed: I will still stop it when its time is up, unless it stops before."


def nothing_to_stop(operation: OperationRecord) -> str:
    """Say that a run's time came but its instances were stopped, released or recycled elsewhere already."""
    lines = [
        f"• {label(i.instance_id, i.name)} — {outside(i.skip_reason or 'gone', REASON_LIMIT)}"
        for i in operation.instances
    ]
    return "\n".join([":information_source: Time is up, but nothing was left to stop:", *listing(lines)])


def reminder(operation: OperationRecord, extend_seconds: float) -> Message | None:
    """The thread reply before a run's stop: who, what, when, and the buttons (None: nothing runs any more)."""
    live = operation.live_runs
    when = stops(live)
    if when is None:
        return None
    names = {i.instance_id: i.name for i in operation.instances}
    shown = ", ".join(listing([label(r.instance_id, names.get(r.instance_id)) for r in live], budget=REPLY_BUDGET // 2))
    text = f"{mention(operation.requester_id)} :alarm_clock: Your time-boxed run of {shown} {when}."
    blocks = [section(text), _buttons(operation.id, live, extend_seconds), context(_buttons_note(live, extend_seconds))]
    return Message(text, blocks)


def _buttons(request_id: int, live: Sequence[RunRecord], extend_seconds: float) -> Block:
    """Extend 1 h (only when it stays within the cap) and Stop now; the value is only the start's number."""
    elements: list[Block] = []
    if all(r.can_extend(extend_seconds) for r in live):
        label = f"Extend {say_duration(extend_seconds)}"
        elements.append(_button(label, action_ids.EXTEND, request_id, "primary"))
    elements.append(_button("Stop now", action_ids.STOP_RUN, request_id, "danger"))
    return {"type": "actions", "block_id": f"{action_ids.RUN_BLOCK_PREFIX}{request_id}", "elements": elements}


def _button(text: str, action_id: str, request_id: int, style: str) -> Block:
    """One run button."""
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": str(request_id),
        "style": style,
    }


def _buttons_note(live: Sequence[RunRecord], extend_seconds: float) -> str:
    """Say what the buttons can do, and the cap when it keeps Extend away."""
    more = say_duration(extend_seconds)
    if all(r.can_extend(extend_seconds) for r in live):
        return f"Extend adds {more}; Stop now stops it at once. The requester or an admin may press them."
    caps = [r.cap_seconds for r in live if r.cap_seconds is not None]
    cap = say_duration(min(caps)) if caps else "its cap"
    return f"No Extend: {more} more would take it past the {cap} your grants allow from now."


def run_list(
    runs: Sequence[RunRecord], names: dict[str, str | None], *, everyone: bool, extend_seconds: float
) -> Message:
    """`/vm runs`: the running time-boxed runs (yours, or everyone's you administer), with their buttons."""
    if not runs:
        whose = "in the channels you administer" if everyone else "of yours"
        return Message(f":information_source: No time-boxed runs {whose} are running.")
    by_start: dict[int, list[RunRecord]] = {}
    for run in runs:
        by_start.setdefault(run.request_id, []).append(run)
    title = "*Time-boxed runs you administer*" if everyone else "*Your time-boxed runs*"
    blocks: list[Block] = [section(title)]
    for request_id, group in list(by_start.items())[:MAX_RUNS_LISTED]:
        lines = [f"• {label(r.instance_id, names.get(r.instance_id))} — {_left(r)}" for r in group]
        owner = f" for {mention(group[0].requester_id)}" if everyone else ""
        head = f"Start {request_id}{owner} in <#{group[0].channel_id}>:"
        blocks.extend(sections([head, *listing(lines, budget=REPLY_BUDGET // 2)], max_sections=2))
        live = [r for r in group if r.state == RunState.RUNNING]
        if live:
            blocks.append(_buttons(request_id, live, extend_seconds))
    if len(by_start) > MAX_RUNS_LISTED:
        blocks.append(context(f"…and {len(by_start) - MAX_RUNS_LISTED} more starts with runs."))
    return Message(title.strip("*"), blocks)


def _left(run: RunRecord) -> str:
    """Say where one run stands."""
    if run.state == RunState.STOPPING:
        return "stopping"
    if run.stop_at is None:
        return "not RUNNING yet"
    return f"{say_duration(run.seconds_left or 0)} left (stops at {at(run.stop_at, run.as_of)})"


def run_click(outcome: ClickOutcome, operation: OperationRecord | None, extend_seconds: float) -> Message:
    """Tell the clicker privately what a run's button did."""
    runs = operation.runs if operation else ()
    more = say_duration(extend_seconds)
    if outcome == ClickOutcome.EXTENDED:
        return Message(f":stopwatch: Extended by {more}: it {stops(runs) or 'stops later'}.")
    if outcome == ClickOutcome.RUN_STOPPING:
        return Message(":stop_button: Stopping it now; the thread says when it is stopped.")
    if outcome == ClickOutcome.RUN_OVER:
        return Message(":information_source: Too late: that run was already stopped or being stopped. Nothing changed.")
    if outcome == ClickOutcome.OVER_CAP:
        caps = [r.cap_seconds for r in runs if r.cap_seconds is not None]
        cap = f"the {say_duration(min(caps))} " if caps else "the cap "
        return Message(f":no_entry: Not extended: {more} more would take it past {cap}your grants allow from now.")
    if outcome == ClickOutcome.NOT_RUN_OWNER:
        return Message(":no_entry: Only the person who started this run, or a vm-bot admin, can extend or stop it.")
    if outcome == ClickOutcome.NOT_ALLOWED:
        return Message(":no_entry: Not extended: the grants that allowed this start no longer cover it.")
    return Message(":information_source: That run no longer exists. Nothing changed.")
