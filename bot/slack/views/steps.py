"""What the Workflow Builder step "Start Zenlayer instances" ends with: its outputs, or the one sentence it fails with
(plain text: Workflow Builder shows it as it is)."""

from __future__ import annotations

from typing import Any

from bot.domain.actions import Outcome
from bot.domain.errors import UserError
from bot.grants.authority import NotCovered
from bot.operations.inventory import LookupFailed
from bot.operations.opening import DuplicatePending, NothingToDo
from bot.operations.records import OperationRecord
from bot.operations.states import State
from bot.slack.views.format import shorten
from bot.slack.views.start_modal import named_id

SENTENCE_LIMIT = 500


def outputs(operation: OperationRecord, thread_link: str | None) -> dict[str, Any]:
    """The step's outputs once every instance is RUNNING: status, the instance ids, the thread."""
    ids = [i.instance_id for i in operation.included if i.outcome == Outcome.REACHED]
    return {"status": operation.action.goal, "instance_ids": ",".join(ids), "thread_link": thread_link or ""}


def ended(operation: OperationRecord) -> str:
    """Why an operation a step opened did not end with every instance RUNNING, in one sentence."""
    words = operation.action.words
    reached = sum(1 for i in operation.included if i.outcome == Outcome.REACHED)
    total = len(operation.included)
    who = operation.decided_by or "someone"
    state = operation.state
    if state == State.CANCELLED:
        sentence = f"Request {operation.id} was cancelled by {who}; nothing was {words.done}."
    elif state == State.REJECTED:
        sentence = f"Request {operation.id} was rejected by {who}; nothing was {words.done}."
    elif state == State.EXPIRED:
        sentence = f"Nobody confirmed request {operation.id} in time; nothing was {words.done}."
    elif state == State.WITHDRAWN:
        why = operation.error or "its confirmation could not be posted"
        sentence = f"Request {operation.id} was withdrawn ({why}); nothing was {words.done}."
    elif state == State.TIMED_OUT:
        sentence = f"Request {operation.id} timed out with {reached} of {total} instances {operation.action.goal}."
    else:
        sentence = f"Request {operation.id} ended with {reached} of {total} instances {operation.action.goal}."
    return shorten(sentence, SENTENCE_LIMIT)


def refused(exc: UserError) -> str:
    """Why a step could not even ask for its start, in one sentence."""
    if isinstance(exc, NotCovered):
        named = [named_id(i, exc.coverage.names.get(i)) for i in exc.coverage.uncovered]
        sentence = f"The requester may not start {', '.join(named[:10])} in that channel; nothing was started."
    elif isinstance(exc, NothingToDo):
        reasons = "; ".join(f"{s.name or s.instance_id} {s.reason}" for s in exc.prepared.skipped[:10])
        sentence = f"None of these instances can be started: {reasons}."
    elif isinstance(exc, DuplicatePending):
        sentence = "The requester already has a pending confirmation for these instances in that channel."
    elif isinstance(exc, LookupFailed):
        sentence = f"{exc} Nothing was started."
    else:
        sentence = str(exc).rstrip(".") + "."
    return shorten(sentence.replace("\n", " "), SENTENCE_LIMIT)
