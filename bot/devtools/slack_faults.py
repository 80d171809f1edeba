"""The faults a test can script into the Slack stand-in, each answered as Slack answers it.

A method answering an error or an HTTP status (`fail_next`), a call answered late after it took effect (`delay_next`:
a post the client timed out on that Slack did make), a channel or a method held behind HTTP 429 with a Retry-After
(`rate_limit`), and every call answered with a permanent error (`uninstall`: `invalid_auth`, `token_revoked`,
`account_inactive`), as an uninstalled app gets.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

AUTH_ERRORS = frozenset({"invalid_auth", "token_revoked", "account_inactive"})

Reply = tuple[int, dict[str, Any], dict[str, str]]  # HTTP status, JSON body, headers


@dataclass
class _Fault:
    method: str
    times: int
    error: str | None
    status: int
    retry_after: int | None
    channel: str | None = None


@dataclass
class _Delay:
    """The next `times` calls of `method` (to `channel`, if given) are answered `seconds` late, after taking effect."""

    method: str
    seconds: float
    times: int
    channel: str | None = None


@dataclass
class _RateLimit:
    """Calls matching channel and/or method answer 429 until `until` (time.monotonic())."""

    channel: str | None
    method: str | None
    until: float

    def matches(self, method: str, channel: str) -> bool:
        return (self.channel is None or self.channel == channel) and (self.method is None or self.method == method)


class ScriptedFaults:
    """What a test tells the stand-in to get wrong, and the answers that follow. `FakeSlackWebApi` mixes it in and
    asks it with its lock held."""

    _lock: threading.Condition

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._faults: list[_Fault] = []
        self._rate_limits: list[_RateLimit] = []
        self._delays: list[_Delay] = []
        self._auth_error: str | None = None

    def fail_next(
        self,
        method: str,
        *,
        times: int = 1,
        error: str | None = None,
        status: int = 200,
        retry_after: int | None = None,
        channel: str | None = None,
    ) -> None:
        """Make the next `times` calls of `method` (to `channel`, if given) fail with a Slack error or an HTTP
        status (429 + Retry-After)."""
        with self._lock:
            self._faults.append(_Fault(method, times, error, status, retry_after, channel))

    def delay_next(self, method: str, seconds: float, *, times: int = 1, channel: str | None = None) -> None:
        """Carry out the next `times` calls of `method` (to `channel`, if given) at once but answer them only after
        `seconds`: a client that gives up sooner does not know that, say, its message was posted."""
        with self._lock:
            self._delays.append(_Delay(method, seconds, times, channel))

    def rate_limit(self, retry_after: float, *, channel: str | None = None, method: str | None = None) -> None:
        """Answer HTTP 429 to calls to `channel` and/or of `method` for `retry_after` seconds, as Slack does: each
        with a Retry-After of the seconds still left (rounded up). Other channels and methods are unaffected."""
        if channel is None and method is None:
            raise ValueError("name a channel, a method or both")
        with self._lock:
            self._rate_limits.append(_RateLimit(channel, method, time.monotonic() + retry_after))

    def uninstall(self, error: str = "token_revoked") -> None:
        """Answer every Web API call with a permanent auth error, as Slack does once the app is gone."""
        if error not in AUTH_ERRORS:
            raise ValueError(f"not one of Slack's auth errors: {error!r}")
        with self._lock:
            self._auth_error = error

    def reinstall(self) -> None:
        """Undo uninstall()."""
        with self._lock:
            self._auth_error = None

    def _auth_refusal(self, method: str) -> str | None:
        """Return the auth error every call gets once the app is uninstalled (None while it is installed)."""
        if method == "apps.connections.open":  # that one uses the app token
            return None
        return self._auth_error

    def _scripted_reply(self, method: str, channel: str) -> Reply | None:
        """Return the answer a rate limit or a scripted fault gives this call (None: neither applies), using up one
        scripted fault; call with the lock held."""
        now = time.monotonic()
        self._rate_limits = [limit for limit in self._rate_limits if limit.until > now]
        for limit in self._rate_limits:
            if limit.matches(method, channel):
                retry_after = str(max(1, math.ceil(limit.until - now)))
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": retry_after}
        for fault in self._faults:
            if fault.method == method and fault.times > 0 and fault.channel in (None, channel):
                fault.times -= 1
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                error = fault.error or ("ratelimited" if fault.status != 200 else "internal_error")
                return fault.status, {"ok": False, "error": error, "_scripted": True}, headers
        return None

    def _take_delay(self, method: str, channel: str) -> float:
        """Return how late to answer this call (0: at once), using up one scripted delay; call with the lock held."""
        for delay in self._delays:
            if delay.method == method and delay.times > 0 and delay.channel in (None, channel):
                delay.times -= 1
                return delay.seconds
        return 0.0
