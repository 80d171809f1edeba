"""Time-boxed runs as the App Home, the start modal and the Workflow Builder step reach them (RunsPort): the same
runs, caps and run buttons as `/vm start … --for`, the reminder and `/vm runs`."""

from __future__ import annotations

from collections.abc import Callable

from bot.domain.durations import parse_duration
from bot.domain.errors import InvalidInput
from bot.grants.authority import Authority
from bot.operations.click_model import ClickOutcome, ClickRow, Decision
from bot.operations.clicks import Clicks
from bot.operations.opening import Prepared, RunTooLong
from bot.operations.runs import RunBook
from bot.operations.surface_runs import DurationRefused, DurationTerms
from bot.slack.views import runs


class SlackRuns:
    """Runs for the surfaces: a Home's runs, the modal's duration terms, a form's time box, and the Home's Extend
    and Stop — recorded and decided as clicks, exactly like the reminder's buttons."""

    def __init__(
        self,
        run_book: RunBook,
        authority: Authority,
        clicks: Clicks,
        *,
        extend_seconds: float,
        wake: Callable[[], None],
    ):
        self.run_book = run_book
        self.authority = authority
        self.clicks = clicks
        self.extend_seconds = extend_seconds
        self.wake = wake  # the engine, once a stop was made

    def duration_terms(self, user_id: str, channel_id: str | None) -> DurationTerms | None:
        """The most generous cap of the user's start grants usable there (None: they hold none)."""
        usable, cap = self.authority.run_terms(user_id, channel_id)
        return DurationTerms(cap) if usable else None

    def time_box(self, prepared: Prepared, duration: str | None) -> Prepared:
        """Make a looked-up start a run of `duration` (None: as the look-up decided, its cap or no time box)."""
        if not duration:
            return prepared
        try:
            asked = parse_duration(duration, what="The duration")
        except InvalidInput as exc:
            raise DurationRefused(f"{exc}.") from exc
        cap = prepared.run_cap_seconds
        if cap is not None and asked > cap:
            raise DurationRefused(str(RunTooLong(cap)) + ".")
        prepared.run_seconds = asked
        return prepared

    def extend(self, user_id: str, request_id: int, instance_id: str) -> str:
        """Extend the start's runs from the Home, as its reminder's Extend does."""
        return self._press(user_id, request_id, Decision.EXTEND)

    def stop(self, user_id: str, request_id: int, instance_id: str) -> str:
        """Stop the start's runs now from the Home, as its reminder's Stop now does."""
        return self._press(user_id, request_id, Decision.STOP_RUN)

    def _press(self, user_id: str, request_id: int, decision: Decision) -> str:
        """Record the press like a click (so a crash loses none), decide it, and say what it did."""
        click_id = self.clicks.record(ClickRow(request_id, user_id, decision, channel_id=None, message_ts=None))
        result = self.clicks.decide(click_id)
        if result is None:
            return ":information_source: That press was already decided; the run shows how it stands."
        if result.outcome == ClickOutcome.RUN_STOPPING:
            self.wake()
        return runs.run_click(result.outcome, result.request, self.extend_seconds).text
