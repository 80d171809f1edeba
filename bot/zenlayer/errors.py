"""Typed Zenlayer failures; free of httpx so the domain can catch them."""

from __future__ import annotations


class ZenlayerError(Exception):
    """A Zenlayer call failed; carries Zenlayer's code, message and requestId when the service sent them."""

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


class InstanceNotFound(ZenlayerError):
    """404 INVALID_INSTANCE_NOT_FOUND: an id does not exist."""


class InstanceNotStopped(ZenlayerError):
    """403 OPERATION_DENIED_INSTANCE_NOT_STOPPED: an id is not in STOPPED."""


class InstanceRecycled(ZenlayerError):
    """403 OPERATION_DENIED_INSTANCE_RECYCLED: an id is in the recycle bin."""


class Throttled(ZenlayerError):
    """429 REQUEST_LIMIT_EXCEEDED, still throttled after the allowed retries."""


class AuthenticationFailed(ZenlayerError):
    """401/403 on credentials or signature: the key pair or token is wrong, or the clock is off."""


class AccessBlocked(ZenlayerError):
    """403 with a network-layer challenge, or 451: blocked before reaching the API."""


class ServerError(ZenlayerError):
    """5xx from Zenlayer."""


class NetworkError(ZenlayerError):
    """Connection failure or timeout; for StartInstances the outcome is unknown."""


class MalformedResponse(ZenlayerError):
    """The reply was not the documented envelope."""


class InvalidRequest(ZenlayerError):
    """Any other 4xx: the request itself was refused (bad parameter, batch too large, ...)."""
