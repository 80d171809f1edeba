"""ZC2-HMAC-SHA256 request signing, shared by the client (to sign) and the simulator (to verify)."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

ALGORITHM = "ZC2-HMAC-SHA256"
SIGNED_HEADERS = "content-type;host"

_AUTHORIZATION_RE = re.compile(
    r"^ZC2-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed_headers>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-fA-F]+)\s*$"
)


@dataclass(frozen=True)
class ParsedAuthorization:
    """The three parts of a ZC2-HMAC-SHA256 Authorization header."""

    access_key_id: str
    signed_headers: str
    signature: str


def canonical_request(host: str, body: bytes, content_type: str = "application/json") -> str:
    """Return the canonical request text; method, URI and query are fixed by the protocol."""
    # Zenlayer always canonicalises the URI as "/" and the query as empty, whatever the real path is.
    canonical_headers = f"content-type:{content_type}\nhost:{host}\n"
    return "\n".join(("POST", "/", "", canonical_headers, SIGNED_HEADERS, hashlib.sha256(body).hexdigest()))


def string_to_sign(timestamp: str, host: str, body: bytes, content_type: str = "application/json") -> str:
    """Return the string the HMAC is computed over."""
    digest = hashlib.sha256(canonical_request(host, body, content_type).encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{digest}"


def sign(secret: str, timestamp: str, host: str, body: bytes, content_type: str = "application/json") -> str:
    """Return the hex ZC2-HMAC-SHA256 signature of a request body sent to host at timestamp."""
    message = string_to_sign(timestamp, host, body, content_type).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def authorization_header(access_key_id: str, signature: str) -> str:
    """Return the Authorization header value for a signed request."""
    return f"{ALGORITHM} Credential={access_key_id}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}"


def parse_authorization(value: str) -> ParsedAuthorization | None:
    """Split a ZC2-HMAC-SHA256 Authorization header into its parts, or return None when malformed."""
    match = _AUTHORIZATION_RE.match(value.strip())
    if match is None:
        return None
    return ParsedAuthorization(
        access_key_id=match["credential"],
        signed_headers=match["signed_headers"].lower(),
        signature=match["signature"].lower(),
    )


def verify(
    secret: str,
    timestamp: str,
    host: str,
    body: bytes,
    signature: str,
    content_type: str = "application/json",
) -> bool:
    """Return True when signature is the correct one for these request parts (constant-time compare)."""
    expected = sign(secret, timestamp, host, body, content_type)
    # Bytes, not str: compare_digest refuses non-ASCII str, and a forged header may well contain some.
    return hmac.compare_digest(expected.encode("ascii"), signature.lower().encode("utf-8", "replace"))
