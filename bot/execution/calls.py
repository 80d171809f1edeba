"""Making an operation's Zenlayer calls: at most 100 ids each, the intent recorded before the call, never repeated
blindly (a call whose outcome is unknown is settled by the instances' status: bot.execution.polling)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

from bot.domain.actions import Outcome
from bot.domain.ports import VmApi
from bot.domain.vm_errors import OutcomeUnknown, StateRefused, VmError
from bot.execution.ports import ACCEPTED, UNKNOWN, Job, Journal, Target

log = logging.getLogger(__name__)

BATCH = 100  # Zenlayer's limit of ids per call


class LeaseLost(Exception):
    """Another replica holds the operation now: this one must not call Zenlayer for it."""


class Caller:
    """Calls the action's Zenlayer method for an operation's instances, journaling every call."""

    def __init__(self, vm: VmApi, journal: Journal):
        self.vm = vm
        self.journal = journal

    def call_all(self, job: Job) -> None:
        """Make the calls no earlier call named yet, then hand the operation over to watching."""
        todo = [t for t in job.targets if t.outcome is None and t.calls == 0]
        errors: list[str] = []
        try:
            for offset in range(0, len(todo), BATCH):
                errors.extend(self.call(job, todo[offset : offset + BATCH]))
        except LeaseLost:
            log.warning(
                "lost the lease on operation %s while calling Zenlayer; another replica took over", job.operation_id
            )
            return
        self.journal.finish_calls(job, errors)

    def call(self, job: Job, batch: Sequence[Target], *, retried: bool = False, reconciling: bool = False) -> list[str]:
        """Call once for a batch, intent first; a refusal re-checks and calls again for those still ready, once.

        Returns what went wrong, for the thread; raises LeaseLost when the intent could not be recorded.
        """
        action = job.action
        ids = [t.instance_id for t in batch]
        call_id = self.journal.begin_call(job, batch)
        if call_id is None:
            raise LeaseLost(job.operation_id)
        name = action.zenlayer_action
        try:
            request_id = cast(str, getattr(self.vm, action.call)(ids))
        except StateRefused as exc:
            if reconciling:
                # Left as it was since, or acted on late by the first call: the next polls tell which.
                self.journal.complete_call(job, call_id, ids, "refused", exc)
                return [f"{name} refused: {exc.describe()}"]
            self.journal.complete_call(job, call_id, ids, "refused", exc, call_result=None)
            if retried:
                self.journal.set_outcome(job, batch, Outcome.FAILED, exc.describe())
                return [f"{name} refused: {exc.describe()}"]
            return self._after_state_change(job, batch, exc)
        except OutcomeUnknown as exc:
            # The call may have been applied: the instances' status decides (bot.execution.polling).
            self.journal.complete_call(job, call_id, ids, UNKNOWN, exc)
            return [f"{name} outcome unknown, checking the instances' status: {exc.describe()}"]
        except VmError as exc:
            self.journal.complete_call(job, call_id, ids, "failed", exc, call_result=None)
            self.journal.set_outcome(job, batch, Outcome.FAILED, exc.describe())
            return [f"{name} failed: {exc.describe()}"]
        self.journal.complete_call(job, call_id, ids, ACCEPTED, None, request_id, call_result=ACCEPTED)
        return []

    def _after_state_change(self, job: Job, batch: Sequence[Target], refusal: StateRefused) -> list[str]:
        """After an all-or-nothing refusal, skip the ids whose state changed and call again for those still ready."""
        name = job.action.zenlayer_action
        try:
            statuses = self.vm.describe_instances_status([t.instance_id for t in batch])
        except VmError as exc:
            self.journal.set_outcome(job, batch, Outcome.FAILED, exc.describe())
            return [f"{name} refused ({refusal.describe()}) and the re-check failed: {exc.describe()}"]
        ready = [t for t in batch if statuses.get(t.instance_id) == job.action.needs]
        for target in batch:
            if target not in ready:
                status = statuses.get(target.instance_id)
                why = "no longer exists" if status is None else f"was {status} when {job.action.words.doing.lower()}"
                self.journal.set_outcome(job, [target], Outcome.SKIPPED, why)
        refused = [f"{name} refused: {refusal.describe()}"]
        if not ready:
            return refused
        return refused + self.call(job, ready, retried=True)
