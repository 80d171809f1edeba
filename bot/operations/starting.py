"""A start asked for from a form rather than a typed command — the start modal, a Workflow Builder step — goes
through exactly what `/vm start` goes through: resolve (the requester's grants, through Authority), look up (again,
with Zenlayer's answer now, plus duplicates and statuses), the duration's terms, then open the operation and owe its
confirmation. A form carries no authority of its own: who asks and where come from Slack, what is asked is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError

from bot.domain.actions import START
from bot.domain.errors import UserError
from bot.domain.ports import InstanceInfo
from bot.operations.opening import Opening, Prepared
from bot.operations.steps import StepRecorder
from bot.operations.surface_runs import RunsPort


class StepAlreadyStarted(Exception):
    """This Workflow Builder step execution opened its operation already (Slack delivered its event twice)."""


class Ambiguous(UserError):
    """Names several instances share: a form cannot show a picker, so it asks for ids."""

    def __init__(self, ambiguous: dict[str, list[InstanceInfo]]):
        self.ambiguous = ambiguous
        names = ", ".join(f"{name} ({len(group)} instances)" for name, group in ambiguous.items())
        super().__init__(f"Several instances share these names, name them by id instead: {names}")


@dataclass(frozen=True)
class StartAsk:
    """Who asks to start what, where (from Slack, never from the form's own metadata), and for how long."""

    user_id: str
    channel_id: str
    words: Sequence[str]  # instance ids or names
    duration: str | None = None  # as `--for` takes it; None: no time box asked for
    response_url: str | None = None  # where the requester can be told privately in that channel
    function_execution_id: str | None = None  # the Workflow Builder step asking, completed when the start ends
    links: Callable[[Prepared], Prepared] = field(default=lambda prepared: prepared)  # points skips at threads


class Starting:
    """Opens starts asked for from forms, through the same checks as a typed command."""

    def __init__(self, opening: Opening, runs: RunsPort):
        self.opening = opening
        self.runs = runs

    def start(self, ask: StartAsk) -> Prepared:
        """Resolve, look up, time-box and open; raise the same UserErrors `/vm start` answers with (plus Ambiguous)."""
        resolution = self.opening.resolve(ask.user_id, ask.channel_id, START, ask.words)
        if resolution.ambiguous:
            raise Ambiguous(resolution.ambiguous)
        prepared = self.opening.look_up(ask.user_id, ask.channel_id, START, resolution.ids, resolution.instances)
        prepared = self.runs.time_box(prepared, ask.duration)
        step = StepRecorder(ask.function_execution_id) if ask.function_execution_id else None
        try:
            return self.opening.open(ask.links(prepared), response_url=ask.response_url, also=step)
        except IntegrityError as exc:
            if step is None:
                raise
            raise StepAlreadyStarted(ask.function_execution_id) from exc
