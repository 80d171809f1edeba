"""The buttons of a time-boxed run (the reminder's, `/vm runs`'): Extend one hour, or Stop now.

A run's button carries no authority: the clicker must be the run's requester or an admin whose grants reach its
instances in its channel, and an extension is capped by the requester's grants as they are at the click. Extend and
the auto-stop race through the same run rows: whichever compare-and-set comes first wins, never timing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

from bot.db import audit
from bot.delivery import outbox
from bot.domain.ports import InstanceInfo, VmApi
from bot.domain.vm_errors import VmError
from bot.domain.vocabulary import GrantAction
from bot.grants.authority import Authority, Question
from bot.operations import repository, runs, timers
from bot.operations.click_model import ClickOutcome, ClickResult, ClickRow, Decision, audit_refusal
from bot.operations.records import EXTENSION_SECONDS, OperationRecord, RunState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunChecks:
    """What decides a run's click, read before the deciding transaction (never holding it open)."""

    allowed: bool = False  # the clicker is the requester, or an admin reaching the runs
    covered: bool = True  # Extend: the requester's start grants still cover the running instances
    cap_seconds: float | None = None  # Extend: the requester's cap, as their grants say now
    statuses: Mapping[str, str] | None = None  # Stop now: the instances' statuses (None: not known)
    extend_seconds: float = EXTENSION_SECONDS  # what Extend adds (RUN_EXTEND_SECONDS)


def checks(
    authority: Authority, vm: VmApi, operation: OperationRecord | None, click: ClickRow, extend_seconds: float
) -> RunChecks:
    """Read the grants (and, to stop, the statuses) a run's click is decided on."""
    if operation is None or not operation.live_runs:
        return RunChecks(allowed=True)  # nothing left to act on: the decision says so, whoever clicked
    ids = [r.instance_id for r in operation.live_runs]
    is_requester = click.user_id == operation.requester_id
    if not is_requester and not authority.admin_reach(click.user_id)(operation.channel_id, ids):
        return RunChecks(allowed=False)
    if click.decision == Decision.STOP_RUN:
        try:
            statuses: Mapping[str, str] | None = vm.describe_instances_status(ids)
        except VmError as exc:
            log.warning("could not look up runs of request %s before stopping them: %s", operation.id, exc.describe())
            statuses = None  # stopped as if running: Zenlayer's answer to the stop tells the truth
        return RunChecks(allowed=True, statuses=statuses)
    instances: Mapping[str, InstanceInfo] | None = None
    if authority.needs_lookup([operation.requester_id], [GrantAction.START]):
        try:
            instances = vm.describe_instances(ids)
        except VmError as exc:
            log.warning("could not look up runs of request %s to extend them: %s", operation.id, exc.describe())
            return RunChecks(allowed=True, covered=False)
    question = Question(operation.requester_id, GrantAction.START, ids, operation.channel_id, instances)
    coverage = authority.check(question)
    return RunChecks(allowed=True, covered=coverage.ok, cap_seconds=coverage.run_cap, extend_seconds=extend_seconds)


def decide(session: Session, operation: OperationRecord, click: ClickRow, checked: RunChecks) -> ClickOutcome:
    """Apply a run's click in one transaction: each move of a run is a compare-and-set."""
    if not checked.allowed:
        return ClickOutcome.NOT_RUN_OWNER
    if click.decision == Decision.STOP_RUN:
        return _stop(session, operation, click, checked)
    if not checked.covered:
        return ClickOutcome.NOT_ALLOWED
    if runs.extend(session, operation.id, cap_seconds=checked.cap_seconds, seconds=checked.extend_seconds):
        audit.record(
            session, "run_extended", actor=click.user_id, request_id=operation.id, seconds=checked.extend_seconds
        )
        outbox.enqueue(session, operation.id, outbox.Kind.REFRESH)  # the parent shows the new stop time
        return ClickOutcome.EXTENDED
    still = repository.record(session, operation.id)
    if still is not None and still.live_runs:
        return ClickOutcome.OVER_CAP
    return ClickOutcome.RUN_OVER


def _stop(session: Session, operation: OperationRecord, click: ClickRow, checked: RunChecks) -> ClickOutcome:
    """Stop a start's running runs now, reporting in its thread (nothing when they are stopping already)."""
    live = [r.run_id for r in operation.live_runs if r.state == RunState.RUNNING]
    taken = runs.take_for_stopping(session, live, due_only=False)
    if not taken:
        return ClickOutcome.RUN_OVER
    timers.stop_runs(session, taken, checked.statuses, by=click.user_id, event="run_stopped_early")
    return ClickOutcome.RUN_STOPPING


def apply(session: Session, click: ClickRow, checked: RunChecks) -> ClickResult:
    """Apply a run's button (Extend, Stop now) in the click's transaction, auditing a refusal."""
    operation = repository.record(session, click.request_id)
    if operation is None or operation.action.name != "start":
        return ClickResult(ClickOutcome.UNKNOWN, None)
    outcome = decide(session, operation, click, checked)
    audit_refusal(session, click, operation.id, outcome)
    return ClickResult(outcome, repository.record(session, operation.id))
