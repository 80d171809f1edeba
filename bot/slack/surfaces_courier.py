"""The courier of the surfaces beyond messages: publishes App Homes and completes Workflow Builder steps, from outbox
rows, rendered from the database when they are sent. `RoutingCourier` hands every other row to the SlackCourier.

Both go through the gate of their Web API method (bot/delivery/gate.py): a 429 holds back every Home (or every
completion) for its Retry-After, as Slack limits them per workspace, while channels' messages go on.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.db.lease import Lease, Owner
from bot.db.session import Database
from bot.delivery import outbox
from bot.delivery.outbox import Claimed, Kind
from bot.delivery.ports import Courier, Failed, Held, Lost, Sent, Verdict
from bot.metrics import Metrics
from bot.operations import homes, repository, steps
from bot.operations.app_home import AppHome
from bot.operations.states import State
from bot.slack.slack_api import PERMANENT_ERRORS, rate_limited, slack_error
from bot.slack.views import home as home_views
from bot.slack.views import steps as step_views
from bot.slack.workspace import Workspace

log = logging.getLogger(__name__)

SURFACE_KINDS = frozenset({Kind.HOME, Kind.STEP})
# What Slack answers a view or a completion it will never take as it is: a bug of ours, or the app's access gone.
REFUSED_FOR_GOOD = PERMANENT_ERRORS | {
    "invalid_arguments",
    "view_too_large",
    "not_enabled",  # the Home tab is turned off in the app's settings
    "user_not_found",
    "parameter_validation_failed",
}
COMPLETED_ALREADY = "function_execution_not_found"  # Slack's answer once an execution is completed


class SurfacesCourier:
    """Sends Home and step rows: views.publish, functions.completeSuccess / completeError (the bot token)."""

    def __init__(
        self,
        db: Database,
        client: WebClient,
        *,
        owner: Owner,
        lease: Lease,
        home: AppHome,
        workspace: Workspace,
        metrics: Metrics | None = None,
    ):
        self.db = db
        self.client = client  # raises on 429: the gate holds the key instead of a thread sleeping
        self.owner = owner
        self.lease = lease
        self.home = home
        self.workspace = workspace
        self.metrics = metrics or Metrics()

    def deliver(self, row: Claimed) -> Verdict:
        """Render the row from the database as it is now, and send it."""
        if row.kind == Kind.HOME:
            if row.user_id is None:
                return self._done(row, sent=False)
            view = home_views.home_view(self.home.model(row.user_id), self.workspace.message_link)
            return self._call(row, "views.publish", {"user_id": row.user_id, "view": view})
        return self._complete_step(row)

    def _complete_step(self, row: Claimed) -> Verdict:
        """Complete the step that opened an operation which has ended: outputs on success, else one sentence."""
        with self.db.session(readonly=True) as session:
            operation = repository.record(session, row.request_id) if row.request_id is not None else None
            step = steps.of(session, row.request_id) if row.request_id is not None else None
        if operation is None or step is None or step.completed:
            return self._done(row, sent=False)
        if operation.state == State.DONE:
            link = self.workspace.message_link(operation.channel_id, operation.message_ts)
            args: dict[str, Any] = {"outputs": step_views.outputs(operation, link)}
            method, outcome, error = "functions.completeSuccess", "success", None
        else:
            error = step_views.ended(operation)
            args = {"error": error}
            method, outcome = "functions.completeError", "error"
        args["function_execution_id"] = step.function_execution_id
        return self._call(row, method, args, step_outcome=(outcome, error))

    def _call(
        self, row: Claimed, method: str, args: dict[str, Any], *, step_outcome: tuple[str, str | None] | None = None
    ) -> Verdict:
        """Make the call while this sender holds the row's key, and record it done with what it told."""
        with self.db.session() as session:
            if not outbox.renew(session, [row.channel_id], owner=self.owner, lease=self.lease):
                log.warning("message %s was not sent: this sender's claim on %s lapsed", row.id, row.channel_id)
                return Lost()
        try:
            self.client.api_call(method, json=args)
        except SlackApiError as exc:
            seconds = rate_limited(exc)
            if seconds is not None:
                return Held(seconds)
            error = slack_error(exc) or "unknown_error"
            if not (error == COMPLETED_ALREADY and step_outcome is not None):
                return Failed(error, permanent=error in REFUSED_FOR_GOOD)
            # Completed already: an earlier attempt whose answer was lost did it.
        except Exception as exc:  # no answer: a publish or a completion is safe to make again
            return Failed(type(exc).__name__)
        return self._done(row, sent=True, step_outcome=step_outcome)

    def _done(
        self,
        row: Claimed,
        *,
        sent: bool,
        error: str | None = None,
        step_outcome: tuple[str, str | None] | None = None,
    ) -> Verdict:
        """Complete the row (and the step, when it was completed), in one transaction, and count it."""
        with self.db.session() as session:
            outbox.complete(session, row, owner=self.owner, sent=sent, error=error)
            if step_outcome is not None and row.request_id is not None:
                steps.complete(session, row.request_id, outcome=step_outcome[0], error=step_outcome[1])
            if row.kind == Kind.HOME and sent and error is None and row.user_id is not None:
                homes.published(session, row.user_id)
        result = "failed" if error else "sent" if sent else "dropped"
        self.metrics.slack_messages.labels(row.kind.value, result).inc()
        return Sent()

    def give_up(self, row: Claimed, error: str) -> None:
        """Record the row failed for good (nobody waits for a Home; a step Slack never took stays uncompleted)."""
        log.warning("gave up on the %s row %s (%s)", row.kind, row.id, error)
        self._done(row, sent=True, error=error)

    def delayed(self, row: Claimed, seconds: float) -> None:
        """Nobody waits privately for a Home or a step's completion: nothing to say."""

    def warn(self, row: Claimed, error: str) -> None:
        """Nobody to warn: the row is tried again."""


class RoutingCourier:
    """The sender's one Courier: Home and step rows to the surfaces' courier, every other row to the channel's."""

    def __init__(self, messages: Courier, surfaces: SurfacesCourier):
        self.messages = messages
        self.surfaces = surfaces

    def _for(self, row: Claimed) -> Courier:
        return self.surfaces if row.kind in SURFACE_KINDS else self.messages

    def deliver(self, row: Claimed) -> Verdict:
        """Send a row through the courier that knows its kind."""
        return self._for(row).deliver(row)

    def give_up(self, row: Claimed, error: str) -> None:
        """Record a row failed for good."""
        self._for(row).give_up(row, error)

    def delayed(self, row: Claimed, seconds: float) -> None:
        """A row held back by a 429."""
        self._for(row).delayed(row, seconds)

    def warn(self, row: Claimed, error: str) -> None:
        """A transient failure."""
        self._for(row).warn(row, error)
