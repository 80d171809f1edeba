"""`vm-bot doctor`: is it set up right? One line per check and its verdict; exit 0 only when none fails.

It changes nothing (the write check commits a write that changes nothing, as /readyz does), never migrates, never
prints a secret: values are named by their variable, URLs shown without passwords.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.engine import make_url

from bot.config import ConfigError, Settings, load_settings
from bot.db import migrate
from bot.db.session import Database, is_sqlite
from bot.domain.vm_errors import AccessBlocked, AuthenticationFailed, NetworkError, StateRefused, VmError
from bot.domain.vocabulary import GrantAction
from bot.grants.rules import list_grants
from bot.health import database_problem
from bot.slack.scopes import BOT_SCOPES
from bot.startup import BAD_TOKEN_ERRORS
from bot.zenlayer.client import ZenlayerClient

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
TIMEOUT_SECONDS = 10.0
# Zenlayer does not document how far a request's X-ZC-Timestamp may be from its clock. Its signature scheme is
# Tencent Cloud's TC3 under another name, which refuses requests more than 5 minutes off, as AWS SigV4 does and as
# Slack does with the requests it signs for us; 5 minutes is what we assume. The check fails at a fifth of that: a
# clock a minute off is not synchronised at all and keeps drifting, and the fix (NTP) should come before refusals.
ASSUMED_ZENLAYER_TOLERANCE_SECONDS = 300.0
CLOCK_LIMIT_SECONDS = 60.0
# Asked about in the read-only DescribeInstancesStatus: any well-formed id will do, its answer does not matter.
PROBE_INSTANCE_ID = "vm-bot-doctor"


@dataclass(frozen=True)
class Check:
    """One check's verdict (ok, warn, FAIL or skip) and what it found, in one line."""

    name: str
    verdict: str
    detail: str

    @property
    def passed(self) -> bool:
        """True for ok and warn: a warning is worth reading but does not stop vm-bot."""
        return self.verdict in (OK, WARN)

    def line(self) -> str:
        """Return the check as printed."""
        return f"{self.verdict:<4}  {self.name}: {self.detail}"


def run_checks(environ: Mapping[str, str] | None = None) -> list[Check]:
    """Run every check (with the environment and .env as `vm-bot run` reads them, or environ) and return them."""
    try:
        settings = load_settings(environ)
        checks = [Check("settings", OK, _mode_words(settings))]
    except ConfigError as exc:
        checks = [Check("settings", FAIL, "; ".join(exc.problems))]
        try:  # what parsed is still worth checking: each check then fails on its own fault only
            settings = load_settings(environ, slack=False, zenlayer=False)
        except ConfigError:
            return checks + [Check(name, SKIP, "needs settings that parse") for name in CHECKS[1:]]
    checks += database_checks(settings.database_url)
    checks += slack_checks(settings)
    checks.append(mode_check(settings))
    checks += zenlayer_checks(settings)
    return checks


# Every check, in the order they are printed.
CHECKS = (
    "settings",
    "database",
    "database migration",
    "database writes",
    "admin grant",
    "Slack token",
    "Slack scopes",
    "Slack mode",
    "Zenlayer credentials",
    "clock",
)


def _mode_words(settings: Settings) -> str:
    """Say which mode and which Zenlayer credentials the settings choose."""
    mode = "Socket Mode" if settings.socket_mode else "HTTP mode"
    zenlayer = "a personal access token" if settings.zenlayer_token is not None else "an API key pair"
    return f"parsed: {mode}, Zenlayer with {zenlayer}"


def _safe(url: str) -> str:
    """Return url without its password."""
    return make_url(url).render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    """Return the first line of the most specific message an exception carries."""
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


def database_checks(url: str) -> list[Check]:
    """Reachable, at the newest migration, takes writes (through the bot's own write path), and an admin exists."""
    skipped = [Check(n, SKIP, "needs the database") for n in ("database migration", "database writes", "admin grant")]
    name = (make_url(url).database or "").removeprefix("file:").split("?", 1)[0]  # also an SQLite URI filename
    path = Path(name) if is_sqlite(url) and name not in ("", ":memory:") else None
    if path is not None and not path.is_file():
        fix = "`vm-bot db upgrade` (or `vm-bot run`) creates it; or point DATABASE_URL at the right file"
        return [Check("database", FAIL, f"the SQLite file {path} does not exist: {fix}"), *skipped]
    try:
        current = migrate.current_revision(url)
    except Exception as exc:
        return [Check("database", FAIL, f"cannot reach {_safe(url)}: {_first_line(exc)}"), *skipped]
    checks = [Check("database", OK, f"reachable: {_safe(url)}")]
    head = migrate.head_revision()
    if current != head:
        fix = "run `vm-bot db upgrade` (or, if a newer vm-bot migrated it, run that one)"
        checks.append(Check("database migration", FAIL, f"at {current or 'none'}, not {head}: {fix}"))
        return checks + skipped[1:]
    checks.append(Check("database migration", OK, f"at the newest, {head}"))
    db = Database(url)
    try:
        problem = database_problem(db, head)
        checks.append(
            Check("database writes", FAIL, problem)
            if problem
            else Check("database writes", OK, "taken (a write that changes nothing, committed, as /readyz does)")
        )
        checks.append(_admin_check(db))
    finally:
        db.close()
    return checks


def _admin_check(db: Database) -> Check:
    """At least one admin grant: someone who can manage grants from Slack."""
    try:
        with db.session(readonly=True) as session:
            admins = sorted({g.user_id for g in list_grants(session) if g.action == GrantAction.ADMIN.value})
    except Exception as exc:
        return Check("admin grant", FAIL, f"cannot read the grants: {_first_line(exc)}")
    if not admins:
        fix = "vm-bot perms grant USER_ID --instances '*' --action admin"
        return Check("admin grant", FAIL, f"nobody can manage grants from Slack: `{fix}`")
    shown = ", ".join(admins[:5]) + (f" and {len(admins) - 5} more" if len(admins) > 5 else "")
    return Check("admin grant", OK, f"{len(admins)} admin(s): {shown}")


def slack_checks(settings: Settings) -> list[Check]:
    """auth.test with the bot token, and the scopes Slack says it holds (x-oauth-scopes) against BOT_SCOPES."""
    if settings.slack_bot_token is None:
        return [Check("Slack token", FAIL, "SLACK_BOT_TOKEN is not set"), Check("Slack scopes", SKIP, "needs a token")]
    client = WebClient(
        token=settings.slack_bot_token.reveal(), base_url=settings.slack_api_url, timeout=int(TIMEOUT_SECONDS)
    )
    try:
        answer = client.auth_test()
    except SlackApiError as exc:
        error = str(exc.response.get("error", "")) if exc.response is not None else ""
        detail = (
            f"Slack refused SLACK_BOT_TOKEN ({error}): copy the Bot User OAuth Token again (reinstall the app if "
            "it was revoked)"
            if error in BAD_TOKEN_ERRORS
            else f"auth.test answered {error or 'an error'} at {settings.slack_api_url}"
        )
        return [Check("Slack token", FAIL, detail), Check("Slack scopes", SKIP, "needs a valid token")]
    except OSError as exc:
        detail = f"cannot reach Slack at {settings.slack_api_url} ({getattr(exc, 'reason', None) or exc})"
        return [Check("Slack token", FAIL, detail), Check("Slack scopes", SKIP, "needs Slack")]
    who = f"valid: bot user {answer.get('user_id')} in team {answer.get('team_id')}"
    headers = {name.lower(): value for name, value in (answer.headers or {}).items()}
    return [Check("Slack token", OK, who), scopes_check(headers.get("x-oauth-scopes"))]


def scopes_check(header: str | list[str] | None) -> Check:
    """Compare the token's scopes with what vm-bot asks for: a missing one fails, an extra one is worth a warning."""
    if isinstance(header, list):
        header = ",".join(header)
    if header is None:
        return Check("Slack scopes", WARN, "Slack did not say which scopes the token holds (no x-oauth-scopes)")
    granted = {scope.strip() for scope in header.split(",") if scope.strip()}
    missing = [scope for scope in BOT_SCOPES if scope not in granted]
    extra = sorted(granted - set(BOT_SCOPES))
    if missing:
        return Check(
            "Slack scopes",
            FAIL,
            f"missing {', '.join(missing)}: add them under OAuth & Permissions → Bot Token Scopes (or paste the "
            "manifest again), then reinstall the app and copy the new token",
        )
    if extra:
        return Check(
            "Slack scopes",
            WARN,
            f"{', '.join(BOT_SCOPES)} as asked, and also {', '.join(extra)}, which vm-bot never uses: remove them",
        )
    return Check("Slack scopes", OK, ", ".join(BOT_SCOPES))


def mode_check(settings: Settings) -> Check:
    """The secret the mode needs: the signing secret (HTTP) or the app-level token (Socket Mode)."""
    if settings.socket_mode:
        return Check("Slack mode", OK, "Socket Mode: SLACK_APP_TOKEN is set (its scope: connections:write)")
    if settings.slack_signing_secret is None:
        return Check("Slack mode", FAIL, "HTTP mode needs SLACK_SIGNING_SECRET (or set SLACK_APP_TOKEN: Socket Mode)")
    return Check(
        "Slack mode",
        OK,
        "HTTP mode: SLACK_SIGNING_SECRET is set (only Slack's requests can prove it right: a wrong one shows as "
        'vmbot_http_refused_total{reason="bad_signature"})',
    )


class _DateRecorder(httpx.BaseTransport):
    """Notes each reply's Date header and the local times around it, to compare Zenlayer's clock with ours."""

    def __init__(self, inner: httpx.BaseTransport, clock: Callable[[], float] = time.time):
        self.inner = inner
        self.clock = clock
        self.offsets: list[tuple[float, float]] = []  # (server minus local, uncertainty), seconds

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = self.clock()
        response = self.inner.handle_request(request)
        received = self.clock()
        date = response.headers.get("date")
        if date:
            # Date counts whole seconds: the server's time was somewhere in the second it names.
            server = parsedate_to_datetime(date).timestamp() + 0.5
            self.offsets.append((server - (sent + received) / 2, 0.5 + (received - sent) / 2))
        return response

    def close(self) -> None:
        self.inner.close()


def zenlayer_checks(settings: Settings) -> list[Check]:
    """A read-only DescribeInstancesStatus with the configured credentials, and Zenlayer's clock against ours."""
    if settings.zenlayer_token is None and (
        settings.zenlayer_access_key_id is None or settings.zenlayer_access_key_secret is None
    ):
        missing = "set ZENLAYER_ACCESS_KEY_ID and ZENLAYER_ACCESS_KEY_SECRET, or ZENLAYER_TOKEN"
        return [Check("Zenlayer credentials", FAIL, missing), Check("clock", SKIP, "needs an answer from Zenlayer")]
    recorder = _DateRecorder(httpx.HTTPTransport())
    with ZenlayerClient.from_settings(settings, transport=recorder, max_retries=0, timeout=TIMEOUT_SECONDS) as client:
        credentials = _credentials_check(client, settings.zenlayer_api_url)
    return [credentials, clock_check(recorder.offsets[-1] if recorder.offsets else None)]


def _credentials_check(client: ZenlayerClient, url: str) -> Check:
    """Call DescribeInstancesStatus and say what its answer means for the credentials."""
    name = "Zenlayer credentials"
    try:
        client.describe_instances_status([PROBE_INSTANCE_ID])
    except StateRefused:  # an answer about the instance: the credentials got through
        pass
    except AuthenticationFailed as exc:
        hint = " (the clock: see below)" if exc.code == "SIGNATURE_EXPIRED" else ""
        return Check(name, FAIL, f"refused ({exc.code or exc.http_status}){hint}: check the key pair or token")
    except AccessBlocked as exc:
        return Check(name, FAIL, f"blocked before the API (HTTP {exc.http_status}): ask Zenlayer support")
    except NetworkError:
        return Check(name, FAIL, f"cannot reach Zenlayer at {url}: check the network, a proxy and ZENLAYER_API_URL")
    except VmError as exc:
        return Check(name, FAIL, f"DescribeInstancesStatus failed: {exc.code or exc.http_status}")
    how = "the personal access token" if client.auth_method == "token" else "the API key pair"
    return Check(name, OK, f"{how} accepted by {url} (a read-only DescribeInstancesStatus)")


def clock_check(offset: tuple[float, float] | None) -> Check:
    """Judge this host's clock by Zenlayer's Date header (tolerance assumed, see ASSUMED_ZENLAYER_TOLERANCE_SECONDS)."""
    if offset is None:
        return Check("clock", SKIP, "Zenlayer's reply carried no Date header to compare with")
    skew, within = offset
    way = "behind" if skew > 0 else "ahead of"
    said = f"this host is {abs(skew):.1f} s (± {within:.1f} s) {way} Zenlayer's clock"
    rule = (
        f"Zenlayer's tolerance is undocumented; {ASSUMED_ZENLAYER_TOLERANCE_SECONDS:.0f} s is assumed and this check "
        f"fails above {CLOCK_LIMIT_SECONDS:.0f} s"
    )
    if abs(skew) - within > CLOCK_LIMIT_SECONDS:
        return Check("clock", FAIL, f"{said}: synchronise it (NTP); {rule}")
    return Check("clock", OK, f"{said}; {rule}")


def main(environ: Mapping[str, str] | None = None) -> int:
    """Print every check, then a summary; return 0 when none failed or was skipped, else 1."""
    checks = run_checks(environ)
    for check in checks:
        print(check.line())
    failed = [c for c in checks if not c.passed]
    if failed:
        print(f"{len(failed)} of {len(checks)} checks did not pass")
        sys.stdout.flush()
        return 1
    print(f"all {len(checks)} checks passed")
    return 0
