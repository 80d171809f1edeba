"""What the Slack stand-in keeps for the surfaces beyond messages: trigger ids, modals and App Home views, and
Workflow Builder function executions with their just-in-time tokens.

`FakeSlackWebApi` mixes in `SurfacesStandIn` and calls it with its lock held. It answers views.open, views.push,
views.update and views.publish (`bot.devtools.slack_views_api`), functions.completeSuccess and
functions.completeError (`bot.devtools.slack_functions`) as Slack does, and checks what the bot answered Slack
outside the Web API: its answers to view submissions and to type-ahead (block_suggestion).

Time is the stand-in's clock (`now`), which tests may move forward instead of sleeping.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

from bot.devtools.block_kit import options_problems
from bot.devtools.slack_answers import Answer
from bot.devtools.slack_calls import Call, CallLog
from bot.devtools.slack_functions import FunctionExecution, FunctionsApi
from bot.devtools.slack_views import SlackView
from bot.devtools.slack_views_api import ViewsApi

SURFACE_METHODS = frozenset(
    {
        "views.open",
        "views.push",
        "views.update",
        "views.publish",
        "functions.completeSuccess",
        "functions.completeError",
    }
)


class SurfacesStandIn(CallLog):
    """The Slack stand-in's side of the surfaces: what the driver registers, what tests look at, and what the bot
    answered Slack outside the Web API. `FakeSlackWebApi` mixes it in; its lock guards the views and executions."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._clock_offset = 0.0
        ids = itertools.count(1)
        self._views = ViewsApi(self.now, ids)
        self._functions = FunctionsApi(self.now, ids)

    def now(self) -> float:
        """Return the stand-in's clock (time.monotonic() plus what advance_clock added): trigger ids and
        just-in-time tokens expire by it."""
        return time.monotonic() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the stand-in's clock forward, so a test can outlive a trigger_id (3 s) or a function's token
        (15 minutes) without waiting. Rate limits and delays keep real time, as the bot waits them out for real."""
        with self._lock:
            self._clock_offset += seconds

    def _surface_answer(self, method: str, args: dict[str, Any]) -> Answer:
        """Answer one of SURFACE_METHODS; hold the lock."""
        if method.startswith("views."):
            return self._views.answer(method, args)
        return self._functions.complete(method, args)

    def _token_problem(self, token: str | None) -> str | None:
        """Return the error Slack answers a call made with a function's just-in-time token past its use; hold the
        lock."""
        return self._functions.token_problem(token)

    def issue_trigger(self, user: str, channel: str | None = None) -> str:
        """Issue the trigger_id of an interaction by `user` (in `channel`, if it had one): the driver does this
        for every command, click, shortcut and submission it sends; views.open takes it within 3 s, once."""
        with self._lock:
            return self._views.issue_trigger(user, channel)

    def start_function(self, callback_id: str, required_outputs: Sequence[str] = ()) -> FunctionExecution:
        """Start a Workflow Builder function execution with a fresh `xwfp-` token (the driver does this when it
        sends function_executed); completing it needs every output named in `required_outputs`."""
        with self._lock:
            return self._functions.start(callback_id, required_outputs)

    def function_execution(self, execution_id: str) -> FunctionExecution:
        """Return a function execution as it stands now (its outcome, outputs or error once completed)."""
        with self._lock:
            return self._functions.executions[execution_id]

    def home(self, user: str) -> SlackView | None:
        """Return the Home tab the bot published for a user (None before the first views.publish)."""
        with self._lock:
            return self._views.home(user)

    def modals(self, user: str) -> list[SlackView]:
        """Return the views of the modal a user has open, bottom first; the last is on screen ([] when none)."""
        with self._lock:
            return self._views.modals(user)

    def view(self, view_id: str) -> SlackView:
        """Return any view (open, closed, or a Home) by its id."""
        with self._lock:
            return self._views.views[view_id]

    def close_view(self, view_id: str, *, everything: bool = False) -> None:
        """Close a modal's view as its user does with Cancel (with `everything`, the whole modal)."""
        with self._lock:
            self._views.close(self._views.views[view_id], everything=everything)
            self._lock.notify_all()

    def view_submission_answered(self, view_id: str, status: int, answer: dict[str, Any]) -> Call:
        """Record and apply the bot's answer to the submission of a view (response_action errors, update, push,
        clear, or a bare ack that closes it), refusing what Slack would not take; return the record."""
        with self._lock:
            if status != 200:
                response: dict[str, Any] = {"ok": False, "error": f"http_{status}"}
            else:
                response = self._views.submission_answered(view_id, answer)
            return self._record("view_submission", {"view_id": view_id, **answer}, status, response)

    def options_answered(self, action_id: str, status: int, answer: dict[str, Any]) -> Call:
        """Record the bot's answer to a block_suggestion, refused when Slack could not show it (more than 100
        options, an option text over 75 characters, ...); return the record."""
        problems = options_problems(answer) if status == 200 else []
        response: dict[str, Any] = {"ok": status == 200 and not problems}
        if status != 200:
            response["error"] = f"http_{status}"
        elif problems:
            # Slack shows the user a failed menu and tells the app nothing; the code names the same fault as views.
            response.update(error="invalid_arguments", response_metadata={"messages": problems})
        with self._lock:
            return self._record("block_suggestion", {"action_id": action_id, **answer}, status, response)
