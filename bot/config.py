"""Settings: the only place that reads the environment (and `.env`)."""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dotenv import dotenv_values


class ConfigError(Exception):
    """Raised when settings are missing or malformed; the message names every problem at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("vm-bot cannot start:\n" + "\n".join(f"  - {p}" for p in problems))


class Secret:
    """A string that never shows itself in reprs, logs or error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """Return the secret value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# --- parsers: each turns the text of one variable into a value, or raises ValueError saying what is wrong ---------


def _text(raw: str) -> str:
    """Return the text as given."""
    return raw


def _secret(prefix: str = "") -> Callable[[str], Secret]:
    """Return a parser for a secret that must start with prefix (never echoing the value back)."""

    def parse(raw: str) -> Secret:
        if prefix and not raw.startswith(prefix):
            raise ValueError(f"must start with {prefix!r}")
        return Secret(raw)

    return parse


def _url(*, trailing_slash: bool) -> Callable[[str], str]:
    """Return a parser for an http(s) URL, normalised to end with (or without) one slash."""

    def parse(raw: str) -> str:
        parsed = urlparse(raw)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"must be an http(s) URL, got {raw!r}")
        return raw.rstrip("/") + ("/" if trailing_slash else "")

    return parse


def _number(*, minimum: float, maximum: float | None = None, integer: bool = False) -> Callable[[str], float]:
    """Return a parser for a number within [minimum, maximum]."""

    def parse(raw: str) -> float:
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            raise ValueError(f"must be a {'whole ' if integer else ''}number, got {raw!r}") from None
        if not value >= minimum:  # also refuses nan
            raise ValueError(f"must be at least {minimum:g}, got {raw!r}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum:g}, got {raw!r}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    """Return a parser accepting one of choices (case-insensitive)."""

    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _replica(raw: str) -> str:
    """Accept a stable replica name."""
    if not _REPLICA_RE.match(raw):
        raise ValueError(f"must be 1-48 letters, digits, '.', '_' or '-' (a stable name per replica), got {raw!r}")
    return raw


def _host_name_replica() -> str:
    """Return the host name as a replica name (the default REPLICA_ID: stable across restarts)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:48].strip("-._") or "vm-bot"


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _flag(raw: str) -> bool:
    """Accept true/false (and 1/0, yes/no, on/off)."""
    value = raw.lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"must be true or false, got {raw!r}")
    return value in _TRUE


def _usergroup(raw: str) -> str:
    """Accept a Slack user group id."""
    if not _USERGROUP_RE.match(raw):
        raise ValueError(f"must be a Slack user group id like S0123ABCD, got {raw!r}")
    return raw


def _host(raw: str) -> str:
    """Accept an IP address or a host name to listen on."""
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        if not _HOSTNAME_RE.match(raw):
            raise ValueError(f"must be an IP address or host name to listen on, like 127.0.0.1, got {raw!r}") from None
    return raw


def _database_url(raw: str) -> str:
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


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default (as text), parser and one line of documentation."""

    name: str
    default: str | None
    parse: Callable[[str], Any]
    doc: str
    shown_default: str | None = None  # how the default reads in docs when it is not a plain value

    @property
    def attribute(self) -> str:
        """Return the Settings field this variable fills."""
        return self.name.lower()

    def default_text(self) -> str:
        """Return the default as documentation shows it."""
        if self.shown_default is not None:
            return self.shown_default
        return "unset" if self.default is None else self.default


MAX_BODY_BYTES_DEFAULT = 1024 * 1024

# The one list of settings: Settings, load_settings, `vm-bot run --help`, the demo, .env.example and the README
# all follow it (a test checks the last two).
SETTINGS: tuple[Setting, ...] = (
    Setting("SLACK_BOT_TOKEN", None, _secret("xoxb-"), "bot token (xoxb-…)", "required"),
    Setting(
        "SLACK_SIGNING_SECRET", None, _secret(), "verifies every inbound request (HTTP mode)", "required in HTTP mode"
    ),
    Setting("SLACK_APP_TOKEN", None, _secret("xapp-"), "app-level token (xapp-…); when set, run in Socket Mode"),
    Setting("SLACK_API_URL", "https://slack.com/api/", _url(trailing_slash=True), "Slack Web API base URL"),
    Setting("ZENLAYER_ACCESS_KEY_ID", None, _text, "API key id for signed requests", "required unless ZENLAYER_TOKEN"),
    Setting(
        "ZENLAYER_ACCESS_KEY_SECRET",
        None,
        _secret(),
        "API key secret for signed requests",
        "required unless ZENLAYER_TOKEN",
    ),
    Setting("ZENLAYER_TOKEN", None, _secret(), "a personal access token, used instead of the key pair when set"),
    Setting("ZENLAYER_API_URL", "https://console.zenlayer.com", _url(trailing_slash=False), "Zenlayer API base URL"),
    Setting(
        "DATABASE_URL",
        "sqlite:///vm-bot.db",
        _database_url,
        "SQLAlchemy URL; a relative SQLite path is resolved against the working directory at start-up",
    ),
    Setting(
        "HOST",
        "0.0.0.0",  # noqa: S104 — Slack (through a proxy or a container's port) must reach the bot
        _host,
        "address `vm-bot run` listens on (127.0.0.1 behind a sidecar or on a shared host)",
    ),
    Setting(
        "PORT",
        "3000",
        _number(minimum=0, maximum=65535, integer=True),
        "HTTP port: /slack/events, /healthz, /readyz, /metrics (health and metrics in Socket Mode too)",
    ),
    Setting("LOG_FORMAT", "text", _choice("text", "json"), "`json` for one JSON object per log line"),
    Setting(
        "MAX_BODY_BYTES",
        str(MAX_BODY_BYTES_DEFAULT),
        _number(minimum=1024, integer=True),
        "larger request bodies are refused with 413 before they are read",
    ),
    Setting(
        "COMMANDS_PER_MINUTE",
        "20",
        _number(minimum=0, integer=True),
        "per-user limit on /vm commands (0 turns the limit off)",
    ),
    Setting(
        "REPLICA_ID",
        None,
        _replica,
        "a stable name for this replica; a restarted process with the same name resumes its work at once",
        "the host name",
    ),
    Setting(
        "LEASE_SECONDS",
        "15",
        _number(minimum=2),
        "how long a replica's hold on a request outlives its last heartbeat; then another replica takes over",
    ),
    Setting("POLL_INTERVAL_SECONDS", "5", _number(minimum=0.01), "how often watched instances' status is read"),
    Setting("START_TIMEOUT_SECONDS", "900", _number(minimum=1), "stop watching a start after this long"),
    Setting("CONFIRM_TTL_SECONDS", "600", _number(minimum=1), "a confirmation not clicked by then expires"),
    Setting("APPROVAL_TTL_SECONDS", "3600", _number(minimum=1), "a request waiting for approval expires"),
    Setting("APPROVER_GROUP_ID", None, _usergroup, "Slack user group (S…) mentioned on requests needing approval"),
    Setting(
        "BROADCAST_SUCCESS",
        "false",
        _flag,
        "`true`: also show the 'all RUNNING' reply in the channel (failures and timeouts always are)",
    ),
)
SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in SETTINGS)
_BY_NAME = {s.name: s for s in SETTINGS}


def _default(name: str) -> Any:
    """Return the parsed default of a setting (None when it has none)."""
    setting = _BY_NAME[name]
    return None if setting.default is None else setting.parse(setting.default)


def settings_help() -> str:
    """Return the settings table as plain text, for `vm-bot run --help`."""
    width = max(len(s.name) for s in SETTINGS)
    lines = ["settings (environment variables, or .env in the working directory; the environment wins):"]
    lines += [f"  {s.name.ljust(width)}  {s.doc} (default: {s.default_text()})" for s in SETTINGS]
    return "\n".join(lines)


@dataclass(frozen=True)
class Settings:
    """Everything vm-bot is configured with; see SETTINGS (and ARCHITECTURE.md) for the contract."""

    slack_bot_token: Secret | None = None
    slack_signing_secret: Secret | None = None
    slack_app_token: Secret | None = None
    slack_api_url: str = _default("SLACK_API_URL")
    zenlayer_access_key_id: str | None = None
    zenlayer_access_key_secret: Secret | None = None
    zenlayer_token: Secret | None = None
    zenlayer_api_url: str = _default("ZENLAYER_API_URL")
    database_url: str = field(default=str(_BY_NAME["DATABASE_URL"].default), repr=False)  # may carry a password
    host: str = _default("HOST")
    port: int = _default("PORT")
    log_format: str = _default("LOG_FORMAT")
    max_body_bytes: int = _default("MAX_BODY_BYTES")
    commands_per_minute: int = _default("COMMANDS_PER_MINUTE")
    poll_interval_seconds: float = _default("POLL_INTERVAL_SECONDS")
    start_timeout_seconds: float = _default("START_TIMEOUT_SECONDS")
    confirm_ttl_seconds: float = _default("CONFIRM_TTL_SECONDS")
    approval_ttl_seconds: float = _default("APPROVAL_TTL_SECONDS")
    approver_group_id: str | None = None
    replica_id: str = "vm-bot"  # load_settings defaults it to the host name
    lease_seconds: float = _default("LEASE_SECONDS")
    broadcast_success: bool = _default("BROADCAST_SUCCESS")

    @property
    def socket_mode(self) -> bool:
        """True when an app-level token is set, so the bot connects out instead of listening."""
        return self.slack_app_token is not None


_USERGROUP_RE = re.compile(r"^S[A-Z0-9]{2,20}$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_REPLICA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")


def _read_environment(env_file: str | os.PathLike[str] | None) -> dict[str, str]:
    """Merge `.env` under the real environment; the real environment always wins."""
    values: dict[str, str] = {}
    path = Path(env_file) if env_file is not None else Path.cwd() / ".env"
    if path.is_file():
        values.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    values.update(os.environ)
    return values


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    slack: bool = True,
    zenlayer: bool = True,
    env_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Read and validate settings; `slack`/`zenlayer` say which credentials this command needs."""
    env = dict(environ) if environ is not None else _read_environment(env_file)
    problems: list[str] = []
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = env.get(setting.name, "").strip()
        try:
            values[setting.attribute] = setting.parse(raw) if raw else _default(setting.name)
        except ValueError as exc:
            problems.append(f"{setting.name} {exc}")
            values[setting.attribute] = _default(setting.name)

    def require(name: str, why: str = "") -> None:
        if values[name.lower()] is None and not any(p.startswith(name + " ") for p in problems):
            problems.append(f"{name} is required{why}")

    if slack:
        require("SLACK_BOT_TOKEN", " but not set")
        if values["slack_app_token"] is None:
            require("SLACK_SIGNING_SECRET", " but not set")
    if zenlayer and values["zenlayer_token"] is None:
        require("ZENLAYER_ACCESS_KEY_ID", " (or set ZENLAYER_TOKEN)")
        require("ZENLAYER_ACCESS_KEY_SECRET", " (or set ZENLAYER_TOKEN)")
    if problems:
        raise ConfigError(problems)
    if values["replica_id"] is None:
        values["replica_id"] = _host_name_replica()
    values["port"] = int(values["port"])
    values["max_body_bytes"] = int(values["max_body_bytes"])
    values["commands_per_minute"] = int(values["commands_per_minute"])
    return Settings(**values)
