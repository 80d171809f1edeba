"""What the sender needs from whoever knows what to say: the Courier port (bot.slack.courier implements it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.delivery.outbox import Claimed


@dataclass(frozen=True)
class Sent:
    """Delivered (or there was nothing left to say) and recorded."""


@dataclass(frozen=True)
class Held:
    """Slack asked to leave the channel alone for this long (429)."""

    seconds: float


@dataclass(frozen=True)
class Failed:
    """Not delivered: `permanent` failures are never retried, others are after a backoff."""

    error: str
    permanent: bool = False


@dataclass(frozen=True)
class Lost:
    """This sender's claim on the channel lapsed before it could send: another one may have the row now."""


Verdict = Sent | Held | Failed | Lost


class Courier(Protocol):
    """Renders, sends and records one outbox row; tells people what could not be shown."""

    def deliver(self, row: Claimed) -> Verdict:
        """Send the row's message as the database says it now; on success record it (and complete the row)."""
        ...

    def give_up(self, row: Claimed, error: str) -> None:
        """Record the row as failed for good, with its effects, and tell the person concerned if Slack lets us."""
        ...

    def delayed(self, row: Claimed, seconds: float) -> None:
        """Slack holds the row's channel back for `seconds`: tell whoever waits for this message that it is coming."""
        ...

    def warn(self, row: Claimed, error: str) -> None:
        """A transient failure that the person concerned must hear of now (a decision's edit that did not show)."""
        ...
