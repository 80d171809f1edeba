"""Where an operation is in its life: the words stored in the database (instances' outcomes: bot.domain.actions)."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """An operation's state; every change is one compare-and-set (bot.operations.repository.transition)."""

    PENDING = "pending"  # waiting for a click
    APPROVED = "approved"  # clicked; its instances are claimed
    STARTING = "starting"  # its Zenlayer calls are being made (whatever the action)
    WATCHING = "watching"  # the instances are polled until each reaches the action's goal
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"  # by its requester
    REJECTED = "rejected"  # by an approver
    WITHDRAWN = "withdrawn"  # by vm-bot: its confirmation was not known to be posted
    EXPIRED = "expired"


OPEN_STATES: tuple[State, ...] = (State.PENDING,)
ACTIVE_STATES: tuple[State, ...] = (State.APPROVED, State.STARTING, State.WATCHING)
FINAL_STATES: tuple[State, ...] = (
    State.DONE,
    State.FAILED,
    State.TIMED_OUT,
    State.CANCELLED,
    State.REJECTED,
    State.WITHDRAWN,
    State.EXPIRED,
)
# Final states whose outcome is told in the thread (a decision is shown by the click itself).
REPORTED_FINAL_STATES: tuple[State, ...] = (State.DONE, State.FAILED, State.TIMED_OUT, State.EXPIRED)
# Final states a person decided from the confirmation's buttons.
DECIDED_STATES: tuple[State, ...] = (State.CANCELLED, State.REJECTED)
