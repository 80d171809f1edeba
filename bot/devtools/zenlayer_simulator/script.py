"""What tests script and read back: the faults queued for the next calls, and the log of calls answered."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatedCall:
    """One request the simulator answered on the API path."""

    action: str | None
    instance_ids: tuple[str, ...]
    http_status: int
    request_id: str
    code: str | None
    time: float
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def force_shutdown(self) -> Any:
        """The forceShutdown a StopInstances call sent (None when it sent none: Zenlayer then forces the stop)."""
        return self.params.get("forceShutdown")

    def to_json(self) -> dict[str, Any]:
        """Return the call as the control API shows it."""
        return {
            "action": self.action,
            "instanceIds": list(self.instance_ids),
            "params": self.params,
            "httpStatus": self.http_status,
            "code": self.code,
            "requestId": self.request_id,
            "time": self.time,
        }


@dataclass
class Fault:
    """A scripted misbehaviour for the next `times` calls of `action` (None or "*" for any action)."""

    action: str | None
    times: int
    status: int | None
    code: str
    message: str
    hang_seconds: float | None
    body: str | None
    headers: dict[str, str]

    def matches(self, action: str | None) -> bool:
        """Return True when this fault applies to a call of action."""
        return self.action in (None, "*") or self.action == action

    @property
    def answers_normally(self) -> bool:
        """True when the call is carried out as usual and only the reply is delayed."""
        return self.body is None and (self.status is None or self.status == 200)

    def to_json(self) -> dict[str, Any]:
        """Return the fault as the control API shows it."""
        return {
            "action": self.action,
            "times": self.times,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "hang_seconds": self.hang_seconds,
            "body": self.body,
            "headers": dict(self.headers),
        }


class CallScript:
    """Faults to play on the next calls and the calls answered (a lock of their own, apart from the instances')."""

    def __init__(self, *, max_recorded_calls: int = 100_000):
        self._script_lock = threading.Lock()
        self._calls: deque[SimulatedCall] = deque(maxlen=max_recorded_calls)
        self._faults: list[Fault] = []

    # --- calls ------------------------------------------------------------------------------------------------

    @property
    def calls(self) -> list[SimulatedCall]:
        """Requests answered on the API path, oldest first (a copy; only the latest max_recorded_calls kept)."""
        with self._script_lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        """Forget the recorded calls."""
        with self._script_lock:
            self._calls.clear()

    def record(
        self,
        action: str | None,
        instance_ids: tuple[str, ...],
        params: dict[str, Any],
        status: int,
        request_id: str,
        code: str | None,
    ) -> None:
        """Append a call to the log."""
        call = SimulatedCall(action, instance_ids, status, request_id, code, time.time(), params)
        with self._script_lock:
            self._calls.append(call)
        log.debug("simulator %s %s -> %d %s", action, ",".join(instance_ids), status, code or "")

    # --- faults -----------------------------------------------------------------------------------------------

    def fail_next(
        self,
        action: str | None,
        times: int = 1,
        status: int | None = 500,
        code: str = "INTERNAL_ERROR",
        message: str = "simulated failure",
        hang_seconds: float | None = None,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Make the next `times` authenticated calls of action (None or "*": any) misbehave.

        With a body, reply those exact bytes with `status`; with status 200 (or None) and no body, carry the
        call out normally; otherwise reply an error envelope with `code` and `message`. `hang_seconds` delays
        the reply (after doing the work, for a normal answer: the caller may time out with the change made).
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        extra = {str(k): str(v) for k, v in (headers or {}).items()}
        if retry_after is not None:
            extra["Retry-After"] = f"{retry_after:g}"
        with self._script_lock:
            self._faults.append(
                Fault(
                    action=action,
                    times=times,
                    status=status,
                    code=code,
                    message=message,
                    hang_seconds=hang_seconds,
                    body=body,
                    headers=extra,
                )
            )

    def reset_faults(self) -> None:
        """Drop every queued fault."""
        with self._script_lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """The faults still queued (a copy)."""
        with self._script_lock:
            return [Fault(**{**f.__dict__, "headers": dict(f.headers)}) for f in self._faults]

    def take_fault(self, action: str | None) -> Fault | None:
        """Consume one use of the first fault that applies to action."""
        with self._script_lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(action):
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._faults[index]
                    return fault
        return None
