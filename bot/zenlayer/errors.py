"""The failures the Zenlayer client raises: the port's errors (bot.domain.vm_errors), under their adapter names."""

from __future__ import annotations

from bot.domain.vm_errors import (
    AccessBlocked,
    AuthenticationFailed,
    InstanceNotFound,
    InstanceNotStopped,
    InstanceRecycled,
    InvalidRequest,
    MalformedResponse,
    NetworkError,
    OutcomeUnknown,
    ServerError,
    StartRefused,
    Throttled,
    VmError,
)

# Every failure of a Zenlayer call; the same class the domain catches as VmError.
ZenlayerError = VmError

__all__ = [
    "AccessBlocked",
    "AuthenticationFailed",
    "InstanceNotFound",
    "InstanceNotStopped",
    "InstanceRecycled",
    "InvalidRequest",
    "MalformedResponse",
    "NetworkError",
    "OutcomeUnknown",
    "ServerError",
    "StartRefused",
    "Throttled",
    "VmError",
    "ZenlayerError",
]
