"""Parsers for settings: each turns the text of one environment variable into a value, or raises ValueError
saying what is wrong (never echoing a secret). bot/config.py declares which variable uses which."""

from __future__ import annotations

import importlib
import ipaddress
import re
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from bot.domain.durations import parse_duration, typed_duration
from bot.domain.errors import InvalidInput
from bot.secrets import Secret


def text(raw: str) -> str:
    """Return the text as given."""
    return raw


def secret(prefix: str = "") -> Callable[[str], Secret]:
    """Return a parser for a secret that must start with prefix (never echoing the value back)."""

    def parse(raw: str) -> Secret:
        if prefix and not raw.startswith(prefix):
            raise ValueError(f"must start with {prefix!r}")
        return Secret(raw)

    return parse


def url(*, trailing_slash: bool) -> Callable[[str], str]:
    """Return a parser for an http(s) URL, normalised to end with (or without) one slash."""

    def parse(raw: str) -> str:
        parsed = urlparse(raw)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"must be an http(s) URL, got {raw!r}")
        return raw.rstrip("/") + ("/" if trailing_slash else "")

    return parse


def number(*, minimum: float, maximum: float | None = None) -> Callable[[str], float]:
    """Return a parser for a number of seconds (or any real number) within [minimum, maximum]."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
        return _within(value, raw, minimum, maximum)

    return parse


def integer(*, minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """Return a parser for a whole number within [minimum, maximum]."""

    def parse(raw: str) -> int:
        try:
            value = int(raw) if raw.isascii() else int("x")
        except ValueError:
            raise ValueError(f"must be a whole number, got {raw!r}") from None
        return int(_within(value, raw, minimum, maximum))

    return parse


def _within(value: float, raw: str, minimum: float, maximum: float | None) -> float:
    """Return value when minimum <= value <= maximum, else raise saying which bound it breaks."""
    if not value >= minimum:  # also refuses nan
        raise ValueError(f"must be at least {minimum:g}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be at most {maximum:g}, got {raw!r}")
    return value


def duration(*, minimum: float) -> Callable[[str], float]:
    """Return a parser for a duration like `90d` or `1d12h` (as seconds), at least minimum seconds."""

    def parse(raw: str) -> float:
        try:
            seconds = parse_duration(raw, minimum=0, maximum=None)
        except InvalidInput:
            raise ValueError(f"must be a duration like 90d, 12h, 30m or 1d12h, got {raw!r}") from None
        if seconds < minimum:
            raise ValueError(f"must be at least {typed_duration(minimum)}, got {raw!r}")
        return seconds

    return parse


def choice(*choices: str) -> Callable[[str], str]:
    """Return a parser accepting one of choices (case-insensitive)."""

    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def replica(raw: str) -> str:
    """Accept a stable replica name."""
    if not _REPLICA_RE.match(raw):
        raise ValueError(f"must be 1-48 letters, digits, '.', '_' or '-' (a stable name per replica), got {raw!r}")
    return raw


def host_name_replica() -> str:
    """Return the host name as a replica name (the default REPLICA_ID: stable across restarts)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:48].strip("-._") or "vm-bot"


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def flag(raw: str) -> bool:
    """Accept true/false (and 1/0, yes/no, on/off)."""
    value = raw.lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"must be true or false, got {raw!r}")
    return value in _TRUE


def usergroup(raw: str) -> str:
    """Accept a Slack user group id."""
    if not _USERGROUP_RE.match(raw):
        raise ValueError(f"must be a Slack user group id like S0123ABCD, got {raw!r}")
    return raw


def host(raw: str) -> str:
    """Accept an IP address or a host name to listen on."""
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        if not _HOSTNAME_RE.match(raw):
            raise ValueError(f"must be an IP address or host name to listen on, like 127.0.0.1, got {raw!r}") from None
    return raw


def database_url(raw: str) -> str:
    """Accept an SQLAlchemy URL; a relative SQLite path is made absolute so every command names the same file."""
    if "://" not in raw:
        raise ValueError("must be an SQLAlchemy URL such as sqlite:///vm-bot.db")
    scheme, sep, rest = raw.partition("://")
    if scheme in ("postgres", "postgresql"):
        raw = f"postgresql+psycopg{sep}{rest}"  # psycopg 3 is the driver vm-bot ships for (SQLAlchemy's default is 2)
    if raw.startswith("postgresql+psycopg:") and not _importable("psycopg"):
        raise ValueError(
            "points at PostgreSQL, but the psycopg driver is not installed: pip install 'vm-bot[postgres]'"
        )
    return absolute_sqlite_url(raw)


def _importable(module: str) -> bool:
    """Return True when module can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def absolute_sqlite_url(url: str) -> str:
    """Return url with a relative SQLite file path resolved against the working directory (others unchanged)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path, sep, query = url[len(prefix) :].partition("?")
    if not path or path == ":memory:" or path.startswith("file:") or Path(path).is_absolute():
        return url
    return f"{prefix}{Path.cwd() / path}{sep}{query}"


_USERGROUP_RE = re.compile(r"^S[A-Z0-9]{2,20}$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_REPLICA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
