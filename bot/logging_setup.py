"""Logging: human-readable text or one JSON object per line, with request context and no secret in either."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.config import Settings

# The fields a log pipeline can filter on; set with log_context() or passed as logging's `extra`.
CONTEXT_FIELDS = ("request_id", "user", "channel", "instance_ids", "start_request_id", "zenlayer_request_id")

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("vm_bot_log_context", default={})  # noqa: B039 — never mutated

# Anything shaped like a Slack token is hidden even when it is not one of ours (a pasted token, a library's echo).
_TOKEN_RE = re.compile(r"\b(xox[abposre]|xapp)-[A-Za-z0-9-]+")
# A response_url lets whoever holds it post as the bot for 30 minutes: Slack's
# (https://hooks.slack.com/actions/T…/…/… or /commands/…, hooks.slack-gov.com on GovSlack) and the Slack stand-in's
# (http://127.0.0.1:PORT/_response/KEY, bot/devtools/slack_web_api.py) keep only their host, also where they appear
# form-encoded (a raw body) or with JSON's escaped slashes (a raw payload, or a JSON log line).
_SLASH = r"(?:\\*/|%2[Ff])"  # escaped once or more (a payload inside a JSON log line), or encoded
_RESPONSE_URL_RE = re.compile(
    rf"""(https?(?::|%3[Aa]){_SLASH}{_SLASH}  # the scheme
    (?:hooks\.slack(?:-gov)?\.com{_SLASH}  # Slack's host
    |[^\s/'"%]+(?:%3[Aa][0-9]+)?{_SLASH}_response{_SLASH}))  # or any host's /_response/
    [^\s'"<>()\[\]{{}},&]+  # the capability itself""",
    re.VERBOSE,
)
REDACTED = "[redacted]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields (see CONTEXT_FIELDS) to every log line written inside the block, in this thread or context."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def secrets_of(settings: Settings) -> list[str]:
    """Return every secret value in settings, for redaction."""
    values = [
        settings.slack_bot_token,
        settings.slack_signing_secret,
        settings.slack_app_token,
        settings.zenlayer_access_key_secret,
        settings.zenlayer_token,
    ]
    found = [v.reveal() for v in values if v is not None]
    from sqlalchemy.engine import make_url

    try:
        password = make_url(settings.database_url).password
    except Exception:
        password = None
    if password:
        found.append(str(password))
    return found


class _Redacting(logging.Formatter):
    """A formatter whose output never contains a known secret, anything shaped like a Slack token or a response_url."""

    def __init__(self, secrets: Sequence[str], fmt: str | None = None):
        super().__init__(fmt)
        # Longest first, so a secret that contains another is hidden whole; very short values would hide too much.
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """Replace secrets in text."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = _RESPONSE_URL_RE.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
        return _TOKEN_RE.sub(lambda m: f"{m.group(1)}-{REDACTED}", text)

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self.render(record))

    def render(self, record: logging.LogRecord) -> str:
        """Return the unredacted line."""
        return super().format(record)


class TextFormatter(_Redacting):
    """The default: `time LEVEL logger: message`, with the context appended as key=value."""

    def __init__(self, secrets: Sequence[str] = ()):
        super().__init__(secrets, TEXT_FORMAT)

    def render(self, record: logging.LogRecord) -> str:
        line = super().render(record)
        fields = _fields(record)
        if not fields:
            return line
        suffix = " ".join(f"{k}={_plain(v)}" for k, v in fields.items())
        head, sep, rest = line.partition("\n")  # keep a traceback below the line it belongs to
        return f"{head} [{suffix}]{sep}{rest}"


class JsonFormatter(_Redacting):
    """One JSON object per line: time, level, logger, message, the context fields, and any exception as text."""

    def render(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return the context fields known for record: log_context() first, `extra` on top."""
    fields = dict(_context.get())
    for name in CONTEXT_FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            fields[name] = value
    return {k: fields[k] for k in CONTEXT_FIELDS if fields.get(k) not in (None, "", [], ())}


def _plain(value: Any) -> str:
    """Render a context value for a text line."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def configure_logging(level: str | int, log_format: str = "text", secrets: Iterable[str] = ()) -> None:
    """Send every log line to stderr as text or JSON, redacting secrets; replaces any earlier configuration."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(list(secrets)) if log_format == "json" else TextFormatter(list(secrets)))
    logging.basicConfig(level=level, handlers=[handler], force=True)
