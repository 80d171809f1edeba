"""What the simulator answers: Zenlayer error envelopes and raw replies."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any


class ApiError(Exception):
    """An error reply the API path gives: HTTP status, Zenlayer code and message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Reply:
    """What the HTTP handler writes back."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_bytes(payload: Any) -> bytes:
    """Serialise a reply body."""
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def error_reply(status: int, code: str, message: str) -> Reply:
    """Build a Zenlayer error envelope reply."""
    return Reply(status, json_bytes({"requestId": str(uuid.uuid4()), "code": code, "message": message}))
