"""Authentication as Zenlayer does it: a ZC2-HMAC-SHA256 signature from the key pair, or a bearer token."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from email.message import Message

from bot.config import Secret
from bot.devtools.zenlayer_simulator.replies import ApiError
from bot.zenlayer import signing


def _reveal(value: str | Secret | None) -> str | None:
    """Return a secret's text, treating empty as absent."""
    if isinstance(value, Secret):
        value = value.reveal()
    return value or None


@dataclass(frozen=True)
class Credentials:
    """What the simulator accepts: a key pair, a token, or both (never neither)."""

    key_id: str | None
    key_secret: str | None
    token: str | None

    @classmethod
    def of(
        cls, access_key_id: str | None, access_key_secret: str | Secret | None, token: str | Secret | None
    ) -> Credentials:
        """Build credentials; ValueError when there are none or the key pair is incomplete."""
        credentials = cls(access_key_id or None, _reveal(access_key_secret), _reveal(token))
        if (credentials.key_id is None) != (credentials.key_secret is None):
            raise ValueError("the simulator needs both an access key id and its secret, or neither")
        if credentials.key_id is None and credentials.token is None:
            raise ValueError(
                "the simulator needs credentials to check (an access key id and secret, and/or a token): "
                "an auth-less simulator would hide signing bugs"
            )
        return credentials

    def __repr__(self) -> str:
        return f"Credentials(key_id={self.key_id!r}, key_secret={'***' if self.key_secret else None}, token=...)"


def authenticate(
    credentials: Credentials, headers: Message, body: bytes, max_skew_seconds: float, *, now: float | None = None
) -> None:
    """Accept a valid bearer token or ZC2-HMAC-SHA256 signature (its timestamp within max_skew_seconds of `now`,
    the cloud's clock); raise 401 otherwise."""
    authorization = (headers.get("Authorization") or "").strip()
    if not authorization:
        raise ApiError(401, "AUTHFAILURE", "the Authorization header is missing")
    if authorization.lower().startswith("bearer "):
        presented = authorization[7:].strip()
        token = credentials.token
        if token is None or not hmac.compare_digest(presented.encode(), token.encode()):
            raise ApiError(401, "INVALID_TOKEN", "the access token is not valid")
        return
    parsed = signing.parse_authorization(authorization)
    if parsed is None:
        raise ApiError(401, "AUTHFAILURE", "the Authorization header is not ZC2-HMAC-SHA256 or Bearer")
    if parsed.signed_headers != signing.SIGNED_HEADERS:
        raise ApiError(401, "AUTHFAILURE", f"SignedHeaders must be {signing.SIGNED_HEADERS}")
    method = headers.get("X-ZC-Signature-Method")
    if method != signing.ALGORITHM:
        raise ApiError(401, "AUTHFAILURE", f"X-ZC-Signature-Method must be {signing.ALGORITHM}")
    timestamp = (headers.get("X-ZC-Timestamp") or "").strip()
    if not timestamp.isdigit():
        raise ApiError(401, "AUTHFAILURE", "X-ZC-Timestamp is missing or not Unix seconds")
    host = headers.get("Host")
    if not host:
        raise ApiError(401, "AUTHFAILURE", "the Host header is missing")
    key_id, key_secret = credentials.key_id, credentials.key_secret
    if key_id is None or key_secret is None or not hmac.compare_digest(parsed.access_key_id.encode(), key_id.encode()):
        raise ApiError(401, "INVALID_ACCESS_KEY_ID", "the access key id is not known")
    if abs((time.time() if now is None else now) - int(timestamp)) > max_skew_seconds:
        raise ApiError(401, "SIGNATURE_EXPIRED", "X-ZC-Timestamp is too far from the server's clock")
    content_type = headers.get("Content-Type") or ""
    if not signing.verify(key_secret, timestamp, host, body, parsed.signature, content_type):
        raise ApiError(401, "INVALID_SIGNATURE", "the request signature does not match")
