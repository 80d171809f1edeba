"""Thread replies under a confirmation: what changed, the outcome, and private notes when a message failed."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.actions import Outcome
from bot.operations.records import InstanceRecord, OperationRecord
from bot.operations.states import State
from bot.slack.views import runs
from bot.slack.views.confirmation import progress_line, state_phrase, status_hint, took
from bot.slack.views.format import (
    REASON_LIMIT,
    REPLY_BUDGET,
    STATUS_EMOJI,
    WORD_LIMIT,
    address,
    code,
    count,
    label,
    listing,
    mention,
    outside,
    quoted,
    shorten,
)
from bot.slack.views.message import Message


def progress(operation: OperationRecord, untold: Sequence[InstanceRecord]) -> Message:
    """One thread reply listing the statuses that changed since the last one (`untold`: their instances)."""
    head = []
    if all(i.reported_status is None for i in untold):
        ids = sorted({i.zenlayer_request_id for i in operation.instances if i.zenlayer_request_id})
        shown = ", ".join(listing([quoted(r) for r in ids], budget=REPLY_BUDGET // 6))
        requested = operation.action.words.requested
        head.append(f"{requested} (Zenlayer requestId {shown})." if ids else f"{requested}.")
        if operation.error:
            head.append(f":warning: {outside(operation.error, REASON_LIMIT)}")
    lines = []
    for instance in untold:
        new, old = instance.last_status, instance.reported_status
        shown_new = outside(new, WORD_LIMIT) if new else "no longer found"
        emoji = STATUS_EMOJI.get(new or "", ":large_orange_circle:")
        before = f"{outside(old, WORD_LIMIT)} → " if old else ""
        where = address(instance.ip_address, new)
        lines.append(f"• {label(instance.instance_id, instance.name)}: {before}{emoji} {shown_new}{where}")
    return Message(_reply(head, lines, [], status_hint(operation)))


def final(operation: OperationRecord) -> Message:
    """The last thread reply, addressed to the requester: all at the goal and how long it took, or what failed."""
    goal = operation.action.goal
    included = operation.included
    who = mention(operation.requester_id)
    if operation.state == State.DONE and not included:
        return Message(f"{who} {runs.nothing_to_stop(operation)}")
    if operation.state == State.DONE:
        done = f"{who} :white_check_mark: All {count(len(included))} {goal}{took(operation)}."
        stopped = runs.stop_final(operation)
        if stopped is not None:
            done = f"{who} {stopped}: all {count(len(included))} {goal}."
        time_box = runs.stops(operation.runs)
        if time_box is not None:
            done += f" :stopwatch: Time-boxed: {time_box}."
        reach = [
            f"• {label(i.instance_id, i.name)}{address(i.ip_address, 'RUNNING')}" for i in included if i.ip_address
        ]
        return Message(_reply([done], reach, [], status_hint(operation)))
    lines = []
    if operation.state == State.TIMED_OUT:
        head = [f"{who} :alarm_clock: Stopped watching{took(operation)}; not {goal} yet:"]
        lines = [
            f"• {label(i.instance_id, i.name)} — {outside(i.last_status or 'unknown', WORD_LIMIT)}"
            for i in included
            if i.outcome == Outcome.TIMED_OUT
        ]
    else:
        head = [f"{who} :x: Not every instance {operation.action.words.done}:"]
        for i in included:
            if i.outcome == Outcome.REACHED:
                continue
            why = i.skip_reason or (f"went {i.last_status}" if i.last_status else "no longer found at Zenlayer")
            lines.append(f"• {label(i.instance_id, i.name)} — {outside(why, REASON_LIMIT)}")
    tail = []
    up = [i for i in included if i.outcome == Outcome.REACHED]
    if up:
        shown = [f"{code(i.instance_id)}{address(i.ip_address, 'RUNNING')}" for i in up]
        tail.append(f"{goal}: {', '.join(listing(shown, budget=REPLY_BUDGET // 4))}")
    if operation.error:
        tail.append(f"Details: {outside(operation.error, REASON_LIMIT)}")
    again = runs.stop_again(operation)
    if again is not None:
        tail.append(again)
    return Message(_reply(head, lines, tail, status_hint(operation)))


def _reply(head: Sequence[str], lines: Sequence[str], tail: Sequence[str], hint: str) -> str:
    """Join a reply's fixed lines around its list, summarising the list so the whole stays within budget."""
    fixed = sum(len(line) + 1 for line in (*head, *tail))
    return "\n".join([*head, *listing(lines, budget=max(REPLY_BUDGET - fixed, 200), hint=hint), *tail])


def decision_not_shown(operation: OperationRecord, error: str) -> Message:
    """Tell the clicker privately that their decision stands although the confirmation could not be updated."""
    problem = f"I could not update the confirmation message ({quoted(shorten(error or 'no answer', WORD_LIMIT))})"
    words = operation.action.words
    if operation.state not in (State.CANCELLED, State.REJECTED, State.WITHDRAWN):
        return Message(
            f":warning: {words.button} confirmed: the instances are being {words.done} and I will reply in the "
            f"thread as they do, but {problem}. Its buttons no longer do anything."
        )
    verb = "Rejected" if operation.state == State.REJECTED else "Cancelled"
    return Message(f":warning: {verb}: nothing will be {words.done}, but {problem}. Its buttons no longer do anything.")


def not_delivered(operation: OperationRecord, final_reply: bool, error: str) -> Message:
    """Tell the requester privately that a thread reply about their operation could not be posted, and where it
    stands."""
    verb = operation.action.words.verb
    what = f"the outcome of your {verb}" if final_reply else f"progress of your {verb}"
    stands = progress_line(operation) or state_phrase(operation)
    error_shown = quoted(shorten(error or "no answer", WORD_LIMIT))
    return Message(
        f":warning: I could not post {what} of {count(len(operation.included))} in "
        f"<#{operation.channel_id}> ({error_shown}). Where it stands: {stands}"
    )
