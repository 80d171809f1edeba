"""The services behind the surfaces beyond messages — the App Home, the start modal and its type-ahead, the Workflow
Builder step — in one place the listeners reach through their Context."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from slack_sdk import WebClient

from bot.db.session import Database
from bot.operations import homes
from bot.operations.app_home import AppHome
from bot.operations.starting import Starting
from bot.operations.suggestions import Suggestions
from bot.operations.surface_runs import RunsPort
from bot.runtime.group_commit import GroupCommit
from bot.slack.views import start_modal
from bot.slack.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Surfaces:
    """What the Home, the modal and the step work with (their Slack calls use the bot token, never a step's)."""

    db: Database
    home: AppHome
    suggestions: Suggestions
    starting: Starting
    runs: RunsPort
    workspace: Workspace
    client: WebClient  # raises on 429: a modal or a check is never worth sleeping for
    pool: Executor  # opening modals, checking submissions, running steps: off the request path, off the lookups

    def __post_init__(self) -> None:
        # Many people opening their Home at once (after an announcement) share a few transactions.
        self._opens: GroupCommit[str, None] = GroupCommit(self._opened)

    def open_start_modal(self, trigger_id: str, user_id: str, channel_id: str | None) -> None:
        """Open the start modal with a trigger_id (good for 3 s), the channel preset when there is one; then work
        out what its type-ahead may offer (the mirror starts reading now if it is old), so the first letters typed
        find it ready."""
        terms = self.runs.duration_terms(user_id, channel_id)
        self.client.views_open(trigger_id=trigger_id, view=start_modal.start_form(channel_id=channel_id, terms=terms))
        self.suggestions.prepare(user_id, channel_id)

    def opened_home(self, user_id: str) -> None:
        """Someone opened their Home: keep it up to date from now on, and publish it (through the outbox)."""
        self._opens.submit(user_id)

    def _opened(self, user_ids: Sequence[str]) -> list[None]:
        with self.db.session() as session:
            homes.opened(session, user_ids)
        return [None] * len(user_ids)

    def refresh(self, user_id: str) -> None:
        """Publish someone's Home again (through the outbox), if they keep one."""
        with self.db.session() as session:
            homes.refresh(session, user_id)

    def tell(self, user_id: str, notice: str) -> None:
        """Show a sentence at the top of someone's Home (why a button they pressed there did nothing)."""
        with self.db.session() as session:
            homes.tell(session, user_id, notice)
