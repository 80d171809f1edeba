"""Making operations' Zenlayer calls: at most 100 ids each, the intent recorded before the call (per operation,
fenced by its lease), never repeated blindly (a call whose outcome is unknown is settled by the instances' status:
bot.execution.polling). Operations made by vm-bot itself (auto-stops falling due together) share calls."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import cast

from bot.domain.actions import Outcome
from bot.domain.ports import VmApi
from bot.domain.vm_errors import OutcomeUnknown, StateRefused, VmError
from bot.execution.ports import ACCEPTED, UNKNOWN, Job, Journal, Part, Target

log = logging.getLogger(__name__)

BATCH = 100  # Zenlayer's limit of ids per call


class LeaseLost(Exception):
    """Another replica holds the operation now, or another job called for it since: this one must not call."""


class Caller:
    """Calls the action's Zenlayer method for operations' instances, journaling every call."""

    def __init__(self, vm: VmApi, journal: Journal):
        self.vm = vm
        self.journal = journal

    def call_all(self, jobs: Sequence[Job]) -> None:
        """Make the calls no earlier call named yet for these operations (of one action), in shared batches of at
        most 100 ids, then hand each operation over to watching."""
        todo = [(job, t) for job in jobs for t in job.targets if t.outcome is None and t.calls == 0]
        errors: dict[int, list[str]] = {job.operation_id: [] for job in jobs}
        lost: set[int] = set()
        for offset in range(0, len(todo), BATCH):
            parts: dict[int, tuple[Job, list[Target]]] = {}
            for job, target in todo[offset : offset + BATCH]:
                if job.operation_id not in lost:
                    parts.setdefault(job.operation_id, (job, []))[1].append(target)
            for operation_id, said in self._call(list(parts.values())).items():
                if said is None:
                    lost.add(operation_id)
                else:
                    errors[operation_id].extend(said)
        for operation_id in sorted(lost):
            log.warning("operation %s: lease lost, or called for by another job; not calling", operation_id)
        self.journal.finish_calls([(job, errors[job.operation_id]) for job in jobs if job.operation_id not in lost])

    def call(self, job: Job, batch: Sequence[Target], *, reconciling: bool = False) -> list[str]:
        """Call once for one operation's batch (again, when reconciling a call whose outcome was unknown)."""
        said = self._call([(job, list(batch))], reconciling=reconciling)[job.operation_id]
        if said is None:
            raise LeaseLost(job.operation_id)
        return said

    def _call(
        self, parts: Sequence[Part], *, retried: bool = False, reconciling: bool = False
    ) -> dict[int, list[str] | None]:
        """Make one call for several operations' parts, their intents recorded first (one transaction, each fenced
        by its lease); a refusal re-checks and calls again for those still ready, once. Returns what went wrong per
        operation (None: its lease was lost, and its part was left out of the call)."""
        call_ids = self.journal.begin_calls(parts)
        said: dict[int, list[str] | None] = {job.operation_id: None for job, _ in parts}
        live = [(job, call_ids[job.operation_id], targets) for job, targets in parts if job.operation_id in call_ids]
        if not live:
            return said
        action = live[0][0].action
        try:
            request_id = cast(str, getattr(self.vm, action.call)([t.instance_id for _, _, ts in live for t in ts]))
        except VmError as exc:
            for job, call_id, targets in live:
                said[job.operation_id] = self._failed(
                    job, list(targets), call_id, exc, retried=retried, reconciling=reconciling
                )
            return said
        self.journal.complete_calls(live, ACCEPTED, None, request_id, call_result=ACCEPTED)
        for job, _, _ in live:
            said[job.operation_id] = []
        return said

    def _failed(
        self, job: Job, targets: list[Target], call_id: int, exc: VmError, *, retried: bool, reconciling: bool
    ) -> list[str] | None:
        """Record a call that did not go through for one operation's part, and say what went wrong."""
        name = job.action.zenlayer_action
        if isinstance(exc, StateRefused):
            kept = UNKNOWN if reconciling else None  # a reconciling call leaves the polls to decide
            self.journal.complete_calls([(job, call_id, targets)], "refused", exc, call_result=kept)
            if reconciling or retried:
                if retried:
                    self.journal.set_outcome(job, targets, Outcome.FAILED, exc.describe())
                return [f"{name} refused: {exc.describe()}"]
            return self._after_state_change(job, targets, exc)
        if isinstance(exc, OutcomeUnknown):
            # The call may have been applied: the instances' status decides (bot.execution.polling).
            self.journal.complete_calls([(job, call_id, targets)], UNKNOWN, exc)
            return [f"{name} outcome unknown, checking the instances' status: {exc.describe()}"]
        self.journal.complete_calls([(job, call_id, targets)], "failed", exc, call_result=None)
        self.journal.set_outcome(job, targets, Outcome.FAILED, exc.describe())
        return [f"{name} failed: {exc.describe()}"]

    def _after_state_change(self, job: Job, batch: Sequence[Target], refusal: StateRefused) -> list[str] | None:
        """After an all-or-nothing refusal, skip the ids whose state changed and call again for those still ready."""
        name = job.action.zenlayer_action
        try:
            statuses = self.vm.describe_instances_status(_ids(batch))
        except VmError as exc:
            self.journal.set_outcome(job, batch, Outcome.FAILED, exc.describe())
            return [f"{name} refused ({refusal.describe()}) and the re-check failed: {exc.describe()}"]
        # Called once already: the count the next call's intent is checked against (bot.execution.ports.Journal).
        ready = [replace(t, calls=t.calls + 1) for t in batch if statuses.get(t.instance_id) == job.action.needs]
        for target in batch:
            status = statuses.get(target.instance_id)
            if status != job.action.needs:
                why = "no longer exists" if status is None else f"was {status} when {job.action.words.doing.lower()}"
                self.journal.set_outcome(job, [target], Outcome.SKIPPED, why)
        refused = [f"{name} refused: {refusal.describe()}"]
        if not ready:
            return refused
        again = self._call([(job, ready)], retried=True)[job.operation_id]
        return None if again is None else refused + again


def _ids(targets: Sequence[Target]) -> list[str]:
    """The instance ids of targets, in order."""
    return [t.instance_id for t in targets]
