"""Workflow Builder function executions as the Slack stand-in keeps them, and functions.completeSuccess/completeError.

A function execution is completed once (then `function_execution_not_found`, the answer Slack documents for an
execution that has been completed), its outputs must hold the required output parameters
(`parameter_validation_failed`), and its `xwfp-` token works for 15 minutes and until the completion.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.devtools.slack_answers import Answer, decoded, invalid, missing

FUNCTION_TOKEN_TTL_SECONDS = 15 * 60.0
FUNCTION_TOKEN_PREFIX = "xwfp-"  # noqa: S105 — the kind of token, not a secret


@dataclass
class FunctionExecution:
    """One run of a Workflow Builder custom step: its just-in-time token and how the app completed it."""

    id: str
    callback_id: str
    token: str
    started_at: float
    required_outputs: tuple[str, ...] = ()
    outcome: str | None = None  # "success" or "error" once completed
    outputs: dict[str, Any] | None = None
    error: str | None = None


class FunctionsApi:
    """Function executions, their just-in-time tokens, and the Web API methods that complete them."""

    def __init__(self, now: Callable[[], float], ids: itertools.count[int]):
        self._now = now
        self._ids = ids  # shared with the views, as Slack's ids are unique across them
        self.executions: dict[str, FunctionExecution] = {}

    def start(self, callback_id: str, required_outputs: Sequence[str] = ()) -> FunctionExecution:
        """Start a function execution with a fresh just-in-time token."""
        number = next(self._ids)
        execution = FunctionExecution(
            id=f"Fx{number:010d}",
            callback_id=callback_id,
            token=f"{FUNCTION_TOKEN_PREFIX}{number}-{secrets.token_hex(16)}",
            started_at=self._now(),
            required_outputs=tuple(required_outputs),
        )
        self.executions[execution.id] = execution
        return execution

    def token_problem(self, token: str | None) -> str | None:
        """Return the error Slack answers a call made with this just-in-time token (None: not one, or valid)."""
        if not token or not token.startswith(FUNCTION_TOKEN_PREFIX):
            return None
        execution = next((e for e in self.executions.values() if e.token == token), None)
        if execution is None:
            return "invalid_auth"
        # Slack documents that the token stops working at completion or after 15 minutes; which error it then
        # answers is not documented: token_expired ("Authentication token has expired") is the closest it lists.
        if execution.outcome is not None or self._now() - execution.started_at > FUNCTION_TOKEN_TTL_SECONDS:
            return "token_expired"
        return None

    def complete(self, method: str, args: dict[str, Any]) -> Answer:
        """Answer functions.completeSuccess or functions.completeError."""
        execution = self.executions.get(str(args.get("function_execution_id") or ""))
        if execution is None or execution.outcome is not None:
            return {"ok": False, "error": "function_execution_not_found"}
        if method == "functions.completeError":
            if not args.get("error"):
                return invalid(missing("error"))
            execution.outcome, execution.error = "error", str(args["error"])
            return {"ok": True}
        outputs = decoded(args.get("outputs"))
        if not isinstance(outputs, dict) or any(outputs.get(name) in (None, "") for name in execution.required_outputs):
            return {"ok": False, "error": "parameter_validation_failed"}
        execution.outcome, execution.outputs = "success", outputs
        return {"ok": True}
