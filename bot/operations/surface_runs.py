"""What the App Home, the start modal and the Workflow Builder step need from time-boxed runs: one port.

`bot.slack.surface_runs.SlackRuns` implements it over the runs themselves: `runs_of` for the Home, `duration_terms`
for the modal's select and its cap, `time_box` between look-up and opening (the cap `/vm start … --for` obeys),
`extend` and `stop` for the Home's Extend / Stop (recorded and decided as clicks, like the reminder's buttons).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.domain.errors import UserError
from bot.operations.opening import Prepared

# What the modal's duration select offers (the values are durations as `--for` takes them), capped by the grants.
DURATION_CHOICES: tuple[tuple[str, float], ...] = (
    ("30m", 1800.0),
    ("1h", 3600.0),
    ("2h", 7200.0),
    ("4h", 14400.0),
    ("8h", 28800.0),
    ("1d", 86400.0),
    ("3d", 259200.0),
    ("7d", 604800.0),
)


class DurationRefused(UserError):
    """A duration the caller may not ask for (over their cap, malformed, or runs not available)."""


@dataclass(frozen=True)
class DurationTerms:
    """What the caller may ask for here: runs are available, capped at `cap_seconds` (None: no cap, and "until I
    stop it" is allowed too)."""

    cap_seconds: float | None

    def choices(self) -> list[tuple[str, float]]:
        """The durations to offer: those within the cap."""
        return [(text, s) for text, s in DURATION_CHOICES if self.cap_seconds is None or s <= self.cap_seconds]


class RunsPort(Protocol):
    """Time-boxed runs, as the surfaces use them."""

    def duration_terms(self, user_id: str, channel_id: str | None) -> DurationTerms | None:
        """The duration the caller may ask for in a channel (any channel: None), or None when runs are not
        available (the modal then has no duration select)."""
        ...

    def time_box(self, prepared: Prepared, duration: str | None) -> Prepared:
        """Make a looked-up start a time-boxed run of `duration` (text as `--for` takes it; None: the caller's cap
        decides, as for `/vm start` without `--for`); raise DurationRefused when the duration is refused."""
        ...

    def extend(self, user_id: str, request_id: int, instance_id: str) -> str:
        """Extend a run from the Home (a compare-and-set decides); return what to tell the user, or raise
        UserError saying why not."""
        ...

    def stop(self, user_id: str, request_id: int, instance_id: str) -> str:
        """Stop a run now from the Home; return what to tell the user, or raise UserError saying why not."""
        ...
