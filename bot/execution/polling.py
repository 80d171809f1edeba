"""The one poll path: what a status poll means for each watched operation (a pure plan), and asking Zenlayer.

The same plan serves a batch of operations and a single one; the Journal writes every plan of a poll in one
transaction. Reconciliation lives here too: an instance missing from one poll is declared gone only after
MISSING_POLLS in a row, and after a call whose outcome is unknown, leaving the status the action needs shows it
was applied, while the same status CONFIRM_POLLS polls in a row shows it was not (it is called once more, or fails).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from bot.db.models import OperationInstance
from bot.db.sql import length_of
from bot.domain.actions import RUNNING, Action, Outcome
from bot.domain.ports import VmApi
from bot.domain.vm_errors import VmError
from bot.execution.ports import ACCEPTED, Ending, PollPlan, Target, Watched

log = logging.getLogger(__name__)

# After a call whose outcome is unknown, an instance still unchanged this many polls later was not acted on.
CONFIRM_POLLS = 3
# An instance is declared gone only after this many consecutive polls that did not return it.
MISSING_POLLS = 3
# The first call, and one more after it was shown not to have taken effect; Zenlayer refuses to act on an
# instance not in the status the action needs, so the second can only be accepted if the first was not.
MAX_CALLS = 2
STATUS_LENGTH = length_of(OperationInstance, "last_status")


def classify(action: Action, last: str | None, status: str) -> Outcome | None:
    """Decide what a freshly polled status means for an instance whose call was applied (None: still changing)."""
    left = last not in (None, action.needs)  # seen on its way since the call
    if status == action.goal and (action.goal != action.needs or left):
        return Outcome.REACHED
    if status in action.off_path:
        return Outcome.FAILED
    if status == action.needs and left and action.goal != action.needs:
        return Outcome.FAILED  # it moved, then went back (booted, then stopped again)
    return None


def plan_poll(watched: Watched, statuses: dict[str, str] | None, error: str | None = None) -> PollPlan:
    """Plan what one poll (None: the poll failed) means for one watched operation."""
    plan = PollPlan(watched.operation_id)
    outcomes = {t.row_id: t.outcome for t in watched.targets}
    if statuses is not None:
        for target in watched.targets:
            if target.outcome is None:
                outcomes[target.row_id] = _plan_target(plan, watched.action, target, statuses.get(target.instance_id))
    retrying = {t.row_id for t in plan.retry}
    open_rows = [t for t in watched.targets if outcomes[t.row_id] is None]
    if not open_rows:
        reached = bool(outcomes) and all(o == Outcome.REACHED for o in outcomes.values())
        plan.ending = Ending.DONE if reached else Ending.FAILED
    elif watched.past_deadline:
        for target in open_rows:
            plan.updates.setdefault(target.row_id, {})["outcome"] = Outcome.TIMED_OUT
            retrying.discard(target.row_id)
        plan.retry = [t for t in plan.retry if t.row_id in retrying]
        plan.ending, plan.error = Ending.TIMED_OUT, error
    return plan


def _plan_target(plan: PollPlan, action: Action, target: Target, status: str | None) -> Outcome | None:
    """Add one instance's part of a poll to the plan; return its outcome after this poll (None: still open)."""
    values: dict[str, Any] = {}
    outcome: Outcome | None = None
    if status is None:
        values["missing_polls"] = target.missing_polls + 1
        if values["missing_polls"] >= MISSING_POLLS:
            outcome = Outcome.FAILED
            values.update(outcome=outcome, last_status=None, status_changed=True)
            plan.told = True
    else:
        status = status[:STATUS_LENGTH]  # unknown statuses are shown verbatim, but must fit the column
        if target.missing_polls:
            values["missing_polls"] = 0
        result = target.call_result
        if result != ACCEPTED:
            if action.applied(status):
                values["call_result"] = result = ACCEPTED
            elif target.unchanged_polls + 1 < CONFIRM_POLLS:
                values["unchanged_polls"] = target.unchanged_polls + 1
            elif target.calls < MAX_CALLS and action.visible:
                plan.retry.append(target)
            else:
                outcome = Outcome.FAILED
                why = "did not take effect" if action.visible else "outcome unknown, and its status cannot tell"
                values.update(outcome=outcome, skip_reason=f"{action.zenlayer_action} {why}")
                plan.told = True
        if result == ACCEPTED:
            outcome = classify(action, target.last_status, status)
            if outcome is None and not action.visible and status == action.goal:
                # Accepted, yet never seen away from its goal: quicker than a poll, once it stays put a while.
                values["unchanged_polls"] = target.unchanged_polls + 1
                if values["unchanged_polls"] >= CONFIRM_POLLS:
                    outcome = Outcome.REACHED
            changed = status != target.last_status
            if changed or outcome is not None:
                values.update(last_status=status, outcome=outcome, status_changed=True)
            plan.told = plan.told or changed
            if outcome == Outcome.REACHED and action.goal == RUNNING:
                plan.reached[target.row_id] = target.instance_id
    if outcome is not None:
        plan.ended.append(target.instance_id)
    if values:
        plan.updates[target.row_id] = values
    return outcome


class Poller:
    """Asks Zenlayer about every watched instance in as few calls as possible and plans each operation's poll."""

    def __init__(self, vm: VmApi):
        self.vm = vm

    def poll(self, watched: Sequence[Watched]) -> list[PollPlan]:
        """Read the statuses of every open instance at once (batched inside the client), then plan each operation."""
        ids = sorted({t.instance_id for w in watched for t in w.targets if t.outcome is None})
        statuses: dict[str, str] | None = None
        error = None
        if ids:
            try:
                statuses = self.vm.describe_instances_status(ids)
            except VmError as exc:
                log.warning("polling %d instances failed: %s", len(ids), exc.describe())
                error = exc.describe()
        return [plan_poll(w, statuses, error) for w in watched]

    def addresses(self, plans: Sequence[PollPlan]) -> dict[str, str]:
        """Return the addresses of instances that just came up; best effort (the thread can do without)."""
        ids = [i for plan in plans for i in plan.reached.values()]
        if not ids:
            return {}
        try:
            found = self.vm.describe_instances(ids)
        except VmError as exc:
            log.warning("could not look up the addresses of %d running instances: %s", len(ids), exc.describe())
            return {}
        return {i: info.ip for i, info in found.items() if info.ip}
