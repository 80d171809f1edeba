"""The WSGI app: /slack/events behind size, signature, shape and replay checks; /healthz, /readyz, /metrics."""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.signature import SignatureVerifier

from bot.db.seen_requests import SignedRequest
from bot.logging_setup import log_context
from bot.slack.inbound import read_inbound

if TYPE_CHECKING:
    from bot.app import BotApp

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
READ_CHUNK = 64 * 1024

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
StartResponse = Callable[..., Any]


def _plain(
    start_response: StartResponse, status: str, text: str, headers: Iterable[tuple[str, str]] = ()
) -> list[bytes]:
    """Answer with a short plain-text body."""
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers])
    return [text.encode("utf-8") + b"\n"]


def _read_capped(stream: Any, limit: int) -> bytes | None:
    """Read the whole body, or return None as soon as it is longer than limit (never holding more than limit+chunk)."""
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(READ_CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)


class _Refused(Exception):
    """A request answered before Slack handling: its status, the reason it is counted under, and why (logged)."""

    def __init__(self, status: str, reason: str, why: str):
        super().__init__(why)
        self.status, self.reason, self.why = status, reason, why


def _digits(text: str, most: int) -> int | None:
    """Return text as a number when it is at most `most` ASCII digits ('²'.isdigit() is True, int('²') fails)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= most else None


def _read_body(environ: dict[str, Any], limit: int) -> bytes:
    """Return the body, refusing a malformed or too large Content-Length or a longer body, before parsing."""
    raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
    length = _digits(raw_length, 18) if raw_length else 0
    if length is None:
        raise _Refused("400 Bad Request", "bad_length", "malformed Content-Length")
    body = _read_capped(environ["wsgi.input"], limit) if length <= limit else None
    if body is None:
        raise _Refused("413 Content Too Large", "too_large", f"body over {limit} bytes")
    return body


def _verified(environ: dict[str, Any], body: bytes, verifier: SignatureVerifier | None) -> SignedRequest:
    """Return what identifies a request, once its Slack signature and the shape of its body are checked."""
    raw_timestamp = str(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", ""))
    signature = str(environ.get("HTTP_X_SLACK_SIGNATURE", ""))
    timestamp = _digits(raw_timestamp, 12)
    if timestamp is None or not signature:
        raise _Refused("401 Unauthorized", "unsigned", "missing or malformed Slack signature headers")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused("400 Bad Request", "malformed", "a body that is not UTF-8") from None
    if verifier is None or not verifier.is_valid(text, raw_timestamp, signature):
        raise _Refused("401 Unauthorized", "bad_signature", "invalid or stale Slack signature")
    inbound = read_inbound(text, environ.get("CONTENT_TYPE"))
    if inbound.problem is not None:
        # Signed but not what Slack sends: one line, rather than a traceback from bolt or a listener.
        raise _Refused("400 Bad Request", "malformed", f"unreadable signed body: {inbound.problem}")
    return SignedRequest(signature, inbound.trigger_id, timestamp)


PROBES = ("/healthz", "/readyz", "/metrics")


def _probe(bot: BotApp, path: str, start_response: StartResponse) -> list[bytes]:
    """Answer a GET of /healthz (alive), /readyz (can serve: database at head and writable) or /metrics."""
    if path == "/healthz":
        return _plain(start_response, "200 OK", "ok")
    if path == "/readyz":
        readiness = bot.health.readiness() if bot.health is not None else None
        if readiness is None or readiness.ready:
            return _plain(start_response, "200 OK", "ready")
        log.warning("not ready: %s", readiness.reason)
        return _plain(start_response, "503 Service Unavailable", f"not ready: {readiness.reason}")
    body, content_type = bot.metrics.render()
    start_response("200 OK", [("Content-Type", content_type)])
    return [body]


def make_wsgi_app(bot: BotApp) -> WsgiApp:
    """Return the WSGI app; /slack/events exists in HTTP mode only, health and metrics in both modes."""
    slack = SlackRequestHandler(bot.app, path=EVENTS_PATH)
    settings = bot.settings
    verifier = (
        SignatureVerifier(settings.slack_signing_secret.reveal()) if settings.slack_signing_secret is not None else None
    )
    metrics = bot.metrics

    def refuse(start_response: StartResponse, refused: _Refused) -> list[bytes]:
        """Answer a refused request, with one log line and a count."""
        metrics.http_refused.labels(refused.reason).inc()
        log.warning("refused a request to %s: %s", EVENTS_PATH, refused.why)
        return _plain(start_response, refused.status, refused.why)

    def events(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Check size, signature, shape and novelty before bolt parses the body, then hand it to bolt."""
        started = time.monotonic()
        try:
            body = _read_body(environ, settings.max_body_bytes)
            _verified(environ, body, verifier)  # replays are refused after the ack, before any effect (listeners)
        except _Refused as refused:
            return refuse(start_response, refused)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        kind = "interaction" if body.startswith(b"payload=") else "command" if b"command=" in body else "other"
        try:
            answer = list(slack(environ, start_response))
        except Exception as exc:
            # Signed but unparseable: Slack never sends this; say so in one line rather than a traceback per request.
            why = f"unreadable signed body ({type(exc).__name__})"
            return refuse(start_response, _Refused("400 Bad Request", "malformed", why))
        metrics.ack_seconds.labels(kind).observe(time.monotonic() - started)
        return answer

    def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if method in ("GET", "HEAD") and path in PROBES:
            return _probe(bot, path, start_response)
        if path == EVENTS_PATH and not settings.socket_mode:
            if method != "POST":
                return _plain(start_response, "405 Method Not Allowed", "POST only", [("Allow", "POST")])
            # Answering Slack starts here: background writes hold back until the acknowledgement is out.
            with log_context(request_id=uuid.uuid4().hex[:12]), bot.ack_first.acknowledging():
                return events(environ, start_response)
        return _plain(start_response, "404 Not Found", "not found")

    return wsgi
