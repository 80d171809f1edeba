"""Settings: the only place that reads the environment (and `.env`)."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
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


@dataclass(frozen=True)
class Settings:
    """Everything vm-bot is configured with; see ARCHITECTURE.md for the contract."""

    slack_bot_token: Secret | None = None
    slack_signing_secret: Secret | None = None
    slack_app_token: Secret | None = None
    slack_api_url: str = "https://slack.com/api/"
    zenlayer_access_key_id: str | None = None
    zenlayer_access_key_secret: Secret | None = None
    zenlayer_token: Secret | None = None
    zenlayer_api_url: str = "https://console.zenlayer.com"
    database_url: str = field(default="sqlite:///vm-bot.db", repr=False)  # may carry a password
    port: int = 3000
    poll_interval_seconds: float = 5.0
    start_timeout_seconds: float = 900.0
    confirm_ttl_seconds: float = 600.0
    approval_ttl_seconds: float = 3600.0
    approver_group_id: str | None = None
    replica_id: str = "vm-bot"  # load_settings defaults it to the host name
    lease_seconds: float = 15.0
    broadcast_success: bool = False

    @property
    def socket_mode(self) -> bool:
        """True when an app-level token is set, so the bot connects out instead of listening."""
        return self.slack_app_token is not None


_SLACK_TOKEN_PREFIXES = {"SLACK_BOT_TOKEN": "xoxb-", "SLACK_APP_TOKEN": "xapp-"}
_USERGROUP_RE = re.compile(r"^S[A-Z0-9]{2,20}$")
_REPLICA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


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

    def text(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    def secret(name: str, *, required: bool) -> Secret | None:
        value = text(name)
        if value is None:
            if required:
                problems.append(f"{name} is required but not set")
            return None
        prefix = _SLACK_TOKEN_PREFIXES.get(name)
        if prefix and not value.startswith(prefix):
            problems.append(f"{name} must start with {prefix!r}")
        return Secret(value)

    def flag(name: str, default: bool) -> bool:
        raw = text(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE or raw.lower() in _FALSE:
            return raw.lower() in _TRUE
        problems.append(f"{name} must be true or false, got {raw!r}")
        return default

    def url(name: str, default: str) -> str:
        value = text(name) or default
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            problems.append(f"{name} must be an http(s) URL, got {value!r}")
        return value

    def number(name: str, default: float, *, minimum: float, integer: bool = False) -> float:
        raw = text(name)
        if raw is None:
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            problems.append(f"{name} must be a {'whole ' if integer else ''}number, got {raw!r}")
            return default
        if value < minimum:
            problems.append(f"{name} must be at least {minimum:g}, got {raw!r}")
            return default
        return value

    app_token = secret("SLACK_APP_TOKEN", required=False)
    bot_token = secret("SLACK_BOT_TOKEN", required=slack)
    signing_secret = secret("SLACK_SIGNING_SECRET", required=slack and app_token is None)
    slack_api_url = url("SLACK_API_URL", "https://slack.com/api/")
    if not slack_api_url.endswith("/"):
        slack_api_url += "/"

    token = secret("ZENLAYER_TOKEN", required=False)
    key_id = text("ZENLAYER_ACCESS_KEY_ID")
    key_secret = secret("ZENLAYER_ACCESS_KEY_SECRET", required=False)
    if zenlayer and token is None:
        if key_id is None:
            problems.append("ZENLAYER_ACCESS_KEY_ID is required (or set ZENLAYER_TOKEN)")
        if key_secret is None:
            problems.append("ZENLAYER_ACCESS_KEY_SECRET is required (or set ZENLAYER_TOKEN)")
    zenlayer_api_url = url("ZENLAYER_API_URL", "https://console.zenlayer.com").rstrip("/")

    database_url = text("DATABASE_URL") or "sqlite:///vm-bot.db"
    if "://" not in database_url:
        problems.append("DATABASE_URL must be an SQLAlchemy URL such as sqlite:///vm-bot.db")

    port = int(number("PORT", 3000, minimum=0, integer=True))
    if port > 65535:
        problems.append(f"PORT must be at most 65535, got {port}")

    approver_group = text("APPROVER_GROUP_ID")
    if approver_group is not None and not _USERGROUP_RE.match(approver_group):
        problems.append(f"APPROVER_GROUP_ID must be a Slack user group id like S0123ABCD, got {approver_group!r}")

    replica_id = (
        text("REPLICA_ID") or re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:48].strip("-._") or "vm-bot"
    )
    if not _REPLICA_RE.match(replica_id):
        problems.append(
            f"REPLICA_ID must be 1-48 letters, digits, '.', '_' or '-' (a stable name per replica), got {replica_id!r}"
        )

    settings = Settings(
        slack_bot_token=bot_token,
        slack_signing_secret=signing_secret,
        slack_app_token=app_token,
        slack_api_url=slack_api_url,
        zenlayer_access_key_id=key_id,
        zenlayer_access_key_secret=key_secret,
        zenlayer_token=token,
        zenlayer_api_url=zenlayer_api_url,
        database_url=database_url,
        port=port,
        poll_interval_seconds=number("POLL_INTERVAL_SECONDS", 5.0, minimum=0.01),
        start_timeout_seconds=number("START_TIMEOUT_SECONDS", 900.0, minimum=1),
        confirm_ttl_seconds=number("CONFIRM_TTL_SECONDS", 600.0, minimum=1),
        approval_ttl_seconds=number("APPROVAL_TTL_SECONDS", 3600.0, minimum=1),
        approver_group_id=approver_group,
        replica_id=replica_id,
        lease_seconds=number("LEASE_SECONDS", 15.0, minimum=2),
        broadcast_success=flag("BROADCAST_SUCCESS", False),
    )
    if problems:
        raise ConfigError(problems)
    return settings
