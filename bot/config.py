"""Settings: the only place that reads the environment (and `.env`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from bot import config_parsers as parse
from bot.config_parsers import absolute_sqlite_url
from bot.secrets import Secret

__all__ = [
    "SETTINGS",
    "SETTING_NAMES",
    "ConfigError",
    "Secret",
    "Setting",
    "Settings",
    "absolute_sqlite_url",
    "load_settings",
    "settings_help",
]


class ConfigError(Exception):
    """Raised when settings are missing or malformed; the message names every problem at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("vm-bot cannot start:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default (as text), parser and one line of documentation."""

    name: str
    default: str | None
    parse: Callable[[str], Any]
    doc: str
    shown_default: str | None = None  # how the default reads in docs when it is not a plain value
    fallback: Callable[[], Any] | None = None  # computes the value when the variable is unset and has no default

    @property
    def attribute(self) -> str:
        """Return the Settings field this variable fills."""
        return self.name.lower()

    def default_text(self) -> str:
        """Return the default as documentation shows it."""
        if self.shown_default is not None:
            return self.shown_default
        return "unset" if self.default is None else self.default

    def default_value(self) -> Any:
        """Return the value an unset variable gets (parsed now: a relative SQLite path resolves against today's
        working directory)."""
        if self.default is not None:
            return self.parse(self.default)
        return self.fallback() if self.fallback is not None else None


def setting(
    name: str,
    default: str | None,
    parse: Callable[[str], Any],
    doc: str,
    shown_default: str | None = None,
    *,
    fallback: Callable[[], Any] | None = None,
    repr: bool = True,
) -> Any:
    """Declare a Settings field and the environment variable behind it, in one place."""
    declared = Setting(name, default, parse, doc, shown_default, fallback)
    return field(default_factory=declared.default_value, repr=repr, metadata={"setting": declared})


MAX_BODY_BYTES_DEFAULT = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything vm-bot is configured with: each field is one environment variable (see ARCHITECTURE.md).

    This declaration is the one list of settings: load_settings, `vm-bot run --help`, the demo, .env.example and
    the README all follow it (a test checks the last two).
    """

    slack_bot_token: Secret | None = setting(
        "SLACK_BOT_TOKEN", None, parse.secret("xoxb-"), "bot token (xoxb-…)", "required"
    )
    slack_signing_secret: Secret | None = setting(
        "SLACK_SIGNING_SECRET",
        None,
        parse.secret(),
        "verifies every inbound request (HTTP mode)",
        "required in HTTP mode",
    )
    slack_app_token: Secret | None = setting(
        "SLACK_APP_TOKEN", None, parse.secret("xapp-"), "app-level token (xapp-…); when set, run in Socket Mode"
    )
    slack_api_url: str = setting(
        "SLACK_API_URL", "https://slack.com/api/", parse.url(trailing_slash=True), "Slack Web API base URL"
    )
    zenlayer_access_key_id: str | None = setting(
        "ZENLAYER_ACCESS_KEY_ID", None, parse.text, "API key id for signed requests", "required unless ZENLAYER_TOKEN"
    )
    zenlayer_access_key_secret: Secret | None = setting(
        "ZENLAYER_ACCESS_KEY_SECRET",
        None,
        parse.secret(),
        "API key secret for signed requests",
        "required unless ZENLAYER_TOKEN",
    )
    zenlayer_token: Secret | None = setting(
        "ZENLAYER_TOKEN", None, parse.secret(), "a personal access token, used instead of the key pair when set"
    )
    zenlayer_api_url: str = setting(
        "ZENLAYER_API_URL", "https://console.zenlayer.com", parse.url(trailing_slash=False), "Zenlayer API base URL"
    )
    database_url: str = setting(
        "DATABASE_URL",
        "sqlite:///vm-bot.db",
        parse.database_url,
        "SQLAlchemy URL; a relative SQLite path is resolved against the working directory at start-up",
        repr=False,  # may carry a password
    )
    host: str = setting(
        "HOST",
        "0.0.0.0",  # noqa: S104 — Slack (through a proxy or a container's port) must reach the bot
        parse.host,
        "address `vm-bot run` listens on (127.0.0.1 behind a sidecar or on a shared host)",
    )
    port: int = setting(
        "PORT",
        "3000",
        parse.integer(minimum=0, maximum=65535),
        "HTTP port: /slack/events, /healthz, /readyz, /metrics (health and metrics in Socket Mode too)",
    )
    log_format: str = setting(
        "LOG_FORMAT", "text", parse.choice("text", "json"), "`json` for one JSON object per log line"
    )
    max_body_bytes: int = setting(
        "MAX_BODY_BYTES",
        str(MAX_BODY_BYTES_DEFAULT),
        parse.integer(minimum=1024),
        "larger request bodies are refused with 413 before they are read",
    )
    commands_per_minute: int = setting(
        "COMMANDS_PER_MINUTE", "20", parse.integer(minimum=0), "per-user limit on /vm commands (0 turns the limit off)"
    )
    replica_id: str = setting(
        "REPLICA_ID",
        None,
        parse.replica,
        "a stable name for this replica; a restarted process with the same name resumes its work at once",
        "the host name",
        fallback=parse.host_name_replica,
    )
    lease_seconds: float = setting(
        "LEASE_SECONDS",
        "15",
        parse.number(minimum=2),
        "how long a replica's hold on work outlives its last heartbeat; then another replica takes over",
    )
    poll_interval_seconds: float = setting(
        "POLL_INTERVAL_SECONDS", "5", parse.number(minimum=0.01), "how often watched instances' status is read"
    )
    start_timeout_seconds: float = setting(
        "START_TIMEOUT_SECONDS", "900", parse.number(minimum=1), "stop watching an operation after this long"
    )
    confirm_ttl_seconds: float = setting(
        "CONFIRM_TTL_SECONDS", "600", parse.number(minimum=1), "a confirmation not clicked by then expires"
    )
    approval_ttl_seconds: float = setting(
        "APPROVAL_TTL_SECONDS", "3600", parse.number(minimum=1), "a request waiting for approval expires"
    )
    run_reminder_seconds: float = setting(
        "RUN_REMINDER_SECONDS",
        "900",
        parse.number(minimum=0),
        "how long before a time-boxed run's stop its requester is reminded (half-time for shorter runs)",
    )
    run_extend_seconds: float = setting(
        "RUN_EXTEND_SECONDS",
        "3600",
        parse.number(minimum=10),
        "how much a time-boxed run's Extend button adds (never past now + the run's cap)",
    )
    approver_group_id: str | None = setting(
        "APPROVER_GROUP_ID", None, parse.usergroup, "Slack user group (S…) mentioned on requests needing approval"
    )
    broadcast_success: bool = setting(
        "BROADCAST_SUCCESS",
        "false",
        parse.flag,
        "`true`: also show the 'all RUNNING' reply in the channel (failures and timeouts always are)",
    )
    prune_older_than: float | None = setting(
        "PRUNE_OLDER_THAN",
        None,
        parse.duration(minimum=86400),
        "when set (e.g. 90d), prune finished work's rows older than this every hour, as `vm-bot db prune` does "
        "(never audit events)",
        "unset: keep everything",
    )

    @property
    def socket_mode(self) -> bool:
        """True when an app-level token is set, so the bot connects out instead of listening."""
        return self.slack_app_token is not None


SETTINGS: tuple[Setting, ...] = tuple(f.metadata["setting"] for f in fields(Settings))
SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in SETTINGS)


def settings_help() -> str:
    """Return the settings table as plain text, for `vm-bot run --help`."""
    width = max(len(s.name) for s in SETTINGS)
    lines = ["settings (environment variables, or .env in the working directory; the environment wins):"]
    lines += [f"  {s.name.ljust(width)}  {s.doc} (default: {s.default_text()})" for s in SETTINGS]
    return "\n".join(lines)


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
    for declared in SETTINGS:
        raw = env.get(declared.name, "").strip()
        try:
            values[declared.attribute] = declared.parse(raw) if raw else declared.default_value()
        except ValueError as exc:
            problems.append(f"{declared.name} {exc}")

    def require(name: str, why: str = "") -> None:
        if values.get(name.lower()) is None and not any(p.startswith(name + " ") for p in problems):
            problems.append(f"{name} is required{why}")

    if slack:
        require("SLACK_BOT_TOKEN", " but not set")
        if values.get("slack_app_token") is None:
            require("SLACK_SIGNING_SECRET", " but not set")
    if zenlayer and values.get("zenlayer_token") is None:
        require("ZENLAYER_ACCESS_KEY_ID", " (or set ZENLAYER_TOKEN)")
        require("ZENLAYER_ACCESS_KEY_SECRET", " (or set ZENLAYER_TOKEN)")
    if problems:
        raise ConfigError(problems)
    return Settings(**values)
