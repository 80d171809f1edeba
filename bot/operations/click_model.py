"""What a click asks for, what became of it, and the click as recorded: shared by confirmations and run buttons."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from bot.db import audit
from bot.grants.rules import Coverage
from bot.operations.records import Holder, OperationRecord


class Decision(enum.StrEnum):
    """What a click asks for."""

    # The requester's go-ahead (Start, Stop, Reboot), stored and counted as "start": its name since the first
    # release, which the audit trail, the clicks table and dashboards (vmbot_clicks_total{decision}) read.
    CONFIRM = "start"
    CANCEL = "cancel"
    APPROVE = "approve"
    REJECT = "reject"
    # A time-boxed run's buttons (the reminder, `/vm runs`): one more hour, or stop it now.
    EXTEND = "extend"
    STOP_RUN = "stop_run"


RUN_DECISIONS = frozenset({Decision.EXTEND, Decision.STOP_RUN})


class ClickOutcome(enum.StrEnum):
    """What happened to a click."""

    APPROVED = "approved"  # the operation will now be carried out
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    NOT_REQUESTER = "not_requester"
    SELF_APPROVAL = "self_approval"
    NOT_APPROVER = "not_approver"
    NOT_ALLOWED = "not_allowed"  # the clicker's own grants no longer cover the ids
    REQUESTER_NOT_ALLOWED = "requester_not_allowed"  # an approver clicked, but the requester lost the grant
    NEEDS_APPROVAL = "needs_approval"  # the requester's grants now require a second person
    RUN_TOO_LONG = "run_too_long"  # the requester's grants now cap runs below this start's
    BUSY = "busy"  # another operation holds some of the ids
    EXPIRED = "expired"
    ALREADY_DECIDED = "already_decided"
    WITHDRAWN = "withdrawn"  # its confirmation was not known to be posted, so it was withdrawn unclicked
    LOOKUP_FAILED = "lookup_failed"  # grants by name, group or tag need Zenlayer, which did not answer
    WRONG_MESSAGE = "wrong_message"  # the button named an operation that is not the clicked message's
    EXTENDED = "extended"  # the run's stop moved an hour later
    RUN_STOPPING = "run_stopping"  # the run is being stopped now, at this click
    RUN_OVER = "run_over"  # the run was already stopped or being stopped (an Extend that came too late)
    OVER_CAP = "over_cap"  # one more hour would take the run past now + its cap
    NOT_RUN_OWNER = "not_run_owner"  # neither the run's requester nor an admin reaching it
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ClickResult:
    """The outcome of a click and the operation as it stands afterwards."""

    outcome: ClickOutcome
    request: OperationRecord | None
    coverage: Coverage | None = None
    busy: list[str] = field(default_factory=list)
    holders: dict[str, Holder] = field(default_factory=dict)  # for BUSY: which operation holds each id


REFUSALS_TO_AUDIT = frozenset(
    {
        ClickOutcome.NOT_REQUESTER,
        ClickOutcome.SELF_APPROVAL,
        ClickOutcome.NOT_APPROVER,
        ClickOutcome.REQUESTER_NOT_ALLOWED,
        ClickOutcome.NEEDS_APPROVAL,
        ClickOutcome.RUN_TOO_LONG,
        ClickOutcome.BUSY,
        ClickOutcome.WRONG_MESSAGE,
        ClickOutcome.OVER_CAP,
        ClickOutcome.NOT_RUN_OWNER,
        ClickOutcome.NOT_ALLOWED,
    }
)
SHOWN_IN_THE_CONFIRMATION = frozenset({ClickOutcome.APPROVED, ClickOutcome.CANCELLED, ClickOutcome.REJECTED})


def audit_refusal(
    session: Session, click: ClickRow, request_id: int, outcome: ClickOutcome, *, busy: Sequence[str] = ()
) -> None:
    """Write a refused click to the audit trail (in the deciding transaction); other outcomes write nothing here."""
    if outcome in REFUSALS_TO_AUDIT:
        audit.record(
            session,
            "click_refused",
            actor=click.user_id,
            request_id=request_id,
            decision=click.decision.value,
            outcome=outcome.value,
            busy=list(busy),
        )


@dataclass(frozen=True)
class ClickRow:
    """A click as the button and Slack reported it."""

    request_id: int
    user_id: str
    decision: Decision
    channel_id: str | None
    message_ts: str | None
