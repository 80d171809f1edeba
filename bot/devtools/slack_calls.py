"""What the Slack stand-in records: every Web API call and response_url post it answered, and what the bot told
Slack outside the Web API (its answers to view submissions and type-ahead), for tests to look at and wait for."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Call:
    """One request the fake received: method name and decoded arguments."""

    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)
    scripted: bool = False  # answered by a fault a test scripted (fail_next), not by the stand-in's checks
    token: str | None = None  # the token the call was made with (a fake one), to tell the bot's from a function's


class CallLog:
    """The stand-in's record of calls and the questions tests ask of it. `FakeSlackWebApi` mixes it in; its lock
    guards `calls`."""

    _lock: threading.Condition

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.calls: list[Call] = []

    def calls_to(self, method: str) -> list[Call]:
        """Return the recorded calls of one method, oldest first."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def rejections(self) -> list[Call]:
        """Return the calls that were refused (an error answer or a non-200 status), oldest first."""
        with self._lock:
            return [c for c in self.calls if c.status != 200 or c.response.get("ok") is False]

    def responses(self, key: str | None = None) -> list[dict[str, Any]]:
        """Return the bodies posted to response_urls (optionally one key), oldest first."""
        with self._lock:
            return [
                c.args
                for c in self.calls
                if c.method == "response_url" and c.status == 200 and (key is None or c.args["_key"] == key)
            ]

    def summary(self) -> str:
        """Return a short description of the latest calls, for assertion messages."""
        shown = self.calls[-20:]
        earlier = f"({len(self.calls) - len(shown)} earlier calls) " if len(self.calls) > len(shown) else ""
        return earlier + "; ".join(f"{c.method}({_short(c.args)})" for c in shown)

    def _timeout_detail(self) -> str:
        """Add the latest calls to a timeout message."""
        return f"; calls so far: {self.summary()}"

    def _record(
        self,
        method: str,
        args: dict[str, Any],
        status: int,
        response: dict[str, Any],
        *,
        scripted: bool = False,
        token: str | None = None,
    ) -> Call:
        """Keep one call and wake whoever waits for something it did; hold the lock."""
        call = Call(method, args, status=status, response=response, scripted=scripted, token=token)
        self.calls.append(call)
        self._lock.notify_all()
        return call


def _short(args: dict[str, Any]) -> str:
    text = str(args.get("text", ""))[:60]
    return ", ".join(f"{k}={args[k]!r}" for k in ("channel", "ts", "thread_ts") if k in args) + f", text={text!r}"
