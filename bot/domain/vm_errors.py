"""The failures of the `VmApi` port, grouped by what the domain does about them.

`StateRefused`: the cloud refused the call because of the instances' state (nothing was done; a re-check may help).
`OutcomeUnknown`: the call may or may not have been carried out (never repeat a start, stop or reboot; look instead).
The rest are refusals of the call itself. Adapters raise these (or subclasses); no transport detail leaks in.
"""

from __future__ import annotations

__all__ = [
    "AccessBlocked",
    "AuthenticationFailed",
    "InstanceNotFound",
    "InstanceNotRunning",
    "InstanceNotStopped",
    "InstanceRecycled",
    "InstanceStatusRefused",
    "InvalidRequest",
    "MalformedResponse",
    "NetworkError",
    "OutcomeUnknown",
    "ServerError",
    "StateRefused",
    "Throttled",
    "VmError",
]


class VmError(Exception):
    """A VM API call failed; carries the service's code, message and requestId when it sent them."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
        action: str | None = None,
    ):
        self.code = code
        self.message = message
        self.request_id = request_id
        self.http_status = http_status
        self.action = action
        super().__init__(self.describe())

    def describe(self) -> str:
        """Return a one-line human description including code and requestId."""
        parts = [self.message]
        if self.code:
            parts.append(f"code {self.code}")
        if self.request_id:
            parts.append(f"requestId {self.request_id}")
        return " — ".join(parts) if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"


class StateRefused(VmError):
    """The call was refused because of the instances' state: nothing was done; a re-check may help."""


class InstanceNotFound(StateRefused):
    """An id does not exist (Zenlayer: 404 INVALID_INSTANCE_NOT_FOUND)."""


class InstanceNotStopped(StateRefused):
    """A start named an id that is not STOPPED (Zenlayer: 403 OPERATION_DENIED_INSTANCE_NOT_STOPPED)."""


class InstanceNotRunning(StateRefused):
    """A stop named an id that is not RUNNING (Zenlayer: 403 OPERATION_DENIED_INSTANCE_NOT_RUNNING)."""


class InstanceStatusRefused(StateRefused):
    """A reboot named an id whose status does not allow it (Zenlayer: 403 OPERATION_DENIED_INSTANCE_STATUS)."""


class InstanceRecycled(StateRefused):
    """An id is in the recycle bin (Zenlayer: 403 OPERATION_DENIED_INSTANCE_RECYCLED)."""


class OutcomeUnknown(VmError):
    """No usable answer came back: the call may have been carried out, so it must not be repeated."""


class NetworkError(OutcomeUnknown):
    """Connection failure or timeout."""


class ServerError(OutcomeUnknown):
    """The service failed (5xx)."""


class MalformedResponse(OutcomeUnknown):
    """The reply was not the documented envelope."""


class Throttled(VmError):
    """Still throttled after the allowed retries (Zenlayer: 429 REQUEST_LIMIT_EXCEEDED)."""


class AuthenticationFailed(VmError):
    """The credentials or signature were refused: the key pair or token is wrong, or the clock is off."""


class AccessBlocked(VmError):
    """Blocked before reaching the API (a network-layer challenge, or 451)."""


class InvalidRequest(VmError):
    """The request itself was refused (bad parameter, batch too large, ...)."""
