"""Zenlayer's VM endpoint: signed POSTs, the reply envelope, typed errors, retries that never repeat a change."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

from bot.config import Secret
from bot.zenlayer import signing
from bot.zenlayer.errors import (
    AccessBlocked,
    AuthenticationFailed,
    InstanceNotFound,
    InstanceNotRunning,
    InstanceNotStopped,
    InstanceRecycled,
    InstanceStatusRefused,
    InvalidRequest,
    MalformedResponse,
    NetworkError,
    ServerError,
    Throttled,
    ZenlayerError,
)

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

API_PATH = "/api/v2/vm"
API_VERSION = "2026-04-01"
SERVICE = "vm"
CONTENT_TYPE = "application/json"

# Only these are safe to repeat after a 5xx or a lost connection: repeating a start, stop or reboot whose outcome is
# unknown could act twice on somebody's machine, so those are retried only when Zenlayer explicitly throttled them.
READ_ONLY_ACTIONS = frozenset({"DescribeInstancesStatus", "DescribeInstances"})

_CODE_ERRORS: dict[str, type[ZenlayerError]] = {
    "INVALID_INSTANCE_NOT_FOUND": InstanceNotFound,
    "OPERATION_DENIED_INSTANCE_NOT_STOPPED": InstanceNotStopped,
    "OPERATION_DENIED_INSTANCE_NOT_RUNNING": InstanceNotRunning,
    "OPERATION_DENIED_INSTANCE_STATUS": InstanceStatusRefused,
    "OPERATION_DENIED_INSTANCE_RECYCLED": InstanceRecycled,
    "REQUEST_LIMIT_EXCEEDED": Throttled,
}
# Zenlayer does not publish its authentication codes, so any code that talks about credentials counts.
_AUTH_CODE_HINTS = (
    "AUTHFAILURE",
    "AUTH_FAILURE",
    "AUTHENTICATION",
    "UNAUTHENTICATED",
    "SIGNATURE",
    "TOKEN",
    "ACCESS_KEY",
    "ACCESSKEY",
    "CREDENTIAL",
)


def is_auth_code(code: str | None) -> bool:
    """Return True when a Zenlayer error code is about credentials, signature or token."""
    if not code:
        return False
    upper = code.upper()
    return any(hint in upper for hint in _AUTH_CODE_HINTS)


def error_class(http_status: int, code: str | None) -> type[ZenlayerError]:
    """Pick the typed error for an HTTP status and Zenlayer error code."""
    if code and code.upper() in _CODE_ERRORS:
        return _CODE_ERRORS[code.upper()]
    if http_status == 429:
        return Throttled
    if http_status == 451:
        return AccessBlocked
    if http_status == 401 or is_auth_code(code):
        return AuthenticationFailed
    if 500 <= http_status <= 599:
        return ServerError
    if 400 <= http_status <= 499:
        return InvalidRequest
    return MalformedResponse


def _as_secret(value: str | Secret | None) -> Secret | None:
    """Wrap a plain string in Secret; treat an empty value as not given."""
    if value is None:
        return None
    secret = value if isinstance(value, Secret) else Secret(value)
    return secret if secret.reveal() else None


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    """Parse a Retry-After header (seconds or an HTTP date) into seconds, or None when absent or junk."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now
    if math.isnan(seconds):
        return None
    return max(seconds, 0.0)


class VmEndpoint:
    """One httpx pool to Zenlayer's VM endpoint: credentials, signing, the envelope, retries (ZenlayerClient's base)."""

    def __init__(
        self,
        base_url: str,
        *,
        access_key_id: str | None = None,
        access_key_secret: str | Secret | None = None,
        token: str | Secret | None = None,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ):
        """`transport` replaces the network (tests pass httpx.MockTransport or the simulator's WSGI app)."""
        self._token = _as_secret(token)
        self._access_key_id = access_key_id or None
        self._access_key_secret = _as_secret(access_key_secret)
        if self._token is None:
            if self._access_key_id is None or self._access_key_secret is None:
                raise ValueError("Zenlayer credentials missing: give a token, or both an access key id and secret")
        else:
            # Like Zenlayer's CLI: a token, when present, is used and the key pair ignored.
            self._access_key_id = None
            self._access_key_secret = None
        if max_retries < 0 or backoff_seconds < 0 or max_backoff_seconds < 0 or timeout <= 0:
            raise ValueError("timeout must be positive; retries and backoff must not be negative")
        self.base_url = base_url.rstrip("/")
        self._endpoint = self.base_url + API_PATH
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff_seconds = backoff_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._clock = clock
        self._sleep = sleep
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": "vm-bot", "Accept": "application/json"},
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Self:
        """Build a client from Settings (ZENLAYER_API_URL and the key pair or token); options go to __init__."""
        return cls(
            settings.zenlayer_api_url,
            access_key_id=settings.zenlayer_access_key_id,
            access_key_secret=settings.zenlayer_access_key_secret,
            token=settings.zenlayer_token,
            **options,
        )

    @property
    def auth_method(self) -> str:
        """Return "token" or "hmac": which credentials this client sends."""
        return "token" if self._token is not None else "hmac"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, auth={self.auth_method!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, action: str, params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Send one action with retries; return the envelope's `response` object and its requestId."""
        # Serialised once: the signature covers exactly these bytes, on every attempt.
        body = json.dumps(params, separators=(",", ":")).encode("utf-8")
        read_only = action in READ_ONLY_ACTIONS
        attempt = 0
        while True:
            response: httpx.Response | None = None
            retry_after: float | None = None
            try:
                response, payload = self._send(action, body)
                return self._interpret(action, response, payload)
            except Throttled:
                if attempt >= self._max_retries:
                    raise
                if response is not None:
                    retry_after = _retry_after_seconds(response.headers.get("retry-after"), self._clock())
                reason = "throttled"
            except (ServerError, NetworkError) as exc:
                if not read_only or attempt >= self._max_retries:
                    raise
                reason = exc.code or type(exc).__name__
            delay = retry_after if retry_after is not None else self._backoff_seconds * 2**attempt
            delay = min(delay, self._max_backoff_seconds)
            attempt += 1
            log.warning("zenlayer %s %s; retry %d/%d in %.2fs", action, reason, attempt, self._max_retries, delay)
            self._sleep(delay)

    def _send(self, action: str, body: bytes) -> tuple[httpx.Response, Any]:
        """POST one signed request; return the reply and its parsed JSON (None when not JSON)."""
        headers = {
            "X-ZC-Action": action,
            "X-ZC-Version": API_VERSION,
            "X-ZC-Service": SERVICE,
            "Content-Type": CONTENT_TYPE,
        }
        request = self._http.build_request("POST", self._endpoint, content=body, headers=headers)
        self._authorize(request, body)
        started = time.monotonic()
        try:
            response = self._http.send(request)
        except httpx.TimeoutException as exc:
            log.debug("zenlayer %s -> timeout after %.1f ms", action, (time.monotonic() - started) * 1000)
            raise NetworkError(
                f"Zenlayer did not answer {action} within {self._timeout:g}s ({type(exc).__name__})",
                action=action,
            ) from exc
        except httpx.TransportError as exc:
            log.debug(
                "zenlayer %s -> %s after %.1f ms", action, type(exc).__name__, (time.monotonic() - started) * 1000
            )
            raise NetworkError(f"could not reach Zenlayer for {action} ({type(exc).__name__})", action=action) from exc
        elapsed = (time.monotonic() - started) * 1000
        payload = _json_or_none(response)
        request_id = _envelope_request_id(payload)
        log.debug(
            "zenlayer %s -> HTTP %d requestId=%s in %.1f ms",
            action,
            response.status_code,
            request_id,
            elapsed,
            extra={"zenlayer_request_id": request_id},
        )
        return response, payload

    def _authorize(self, request: httpx.Request, body: bytes) -> None:
        """Add the bearer token, or the timestamp and ZC2-HMAC-SHA256 signature over the exact bytes sent."""
        if self._token is not None:
            request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
            return
        assert self._access_key_id is not None and self._access_key_secret is not None
        timestamp = str(int(self._clock()))
        # The Host value httpx itself derived from the URL (port only when not the scheme's default).
        host = request.headers["Host"]
        signature = signing.sign(self._access_key_secret.reveal(), timestamp, host, body, CONTENT_TYPE)
        request.headers["X-ZC-Timestamp"] = timestamp
        request.headers["X-ZC-Signature-Method"] = signing.ALGORITHM
        request.headers["Authorization"] = signing.authorization_header(self._access_key_id, signature)

    @staticmethod
    def _interpret(action: str, response: httpx.Response, payload: Any) -> tuple[dict[str, Any], str | None]:
        """Return the success envelope's `response` and requestId, or raise the typed error it stands for."""
        status = response.status_code
        if status == 451 or (status == 403 and response.headers.get("cf-mitigated", "").strip().lower() == "challenge"):
            raise AccessBlocked(
                f"Zenlayer blocked {action} before it reached the API (HTTP {status}); contact Zenlayer support",
                code="SECURITY_CHALLENGE" if status == 403 else "REQUEST_BLOCKED",
                http_status=status,
                action=action,
            )
        envelope = payload if isinstance(payload, dict) else {}
        request_id = _envelope_request_id(payload)

        if status == 200:
            if payload is None:
                raise MalformedResponse(
                    f"{action} reply is not JSON", action=action, http_status=status, request_id=request_id
                )
            inner = envelope.get("response")
            if not isinstance(inner, dict):
                raise MalformedResponse(
                    f"{action} reply has no `response` object",
                    action=action,
                    http_status=status,
                    request_id=request_id,
                )
            if request_id is None and isinstance(inner.get("requestId"), str):
                request_id = inner["requestId"]
            return inner, request_id

        code = envelope.get("code") if isinstance(envelope.get("code"), str) else None
        message = envelope.get("message") if isinstance(envelope.get("message"), str) else None
        cls = error_class(status, code)
        if message is None:
            message = f"{action} failed with HTTP {status}" + ("" if payload is not None else " (reply not JSON)")
        raise cls(message, code=code, request_id=request_id, http_status=status, action=action)


def _json_or_none(response: httpx.Response) -> Any:
    """Return the parsed JSON body, or None when it is not JSON."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _envelope_request_id(payload: Any) -> str | None:
    """Return the envelope's top-level requestId, or None when the body is not the envelope."""
    request_id = payload.get("requestId") if isinstance(payload, dict) else None
    return request_id if isinstance(request_id, str) else None
