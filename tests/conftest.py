"""Shared fixtures: the fake Slack Web API, the Zenlayer simulator, and a bot served on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from bot.config import Settings
from bot.db.session import Database
from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_web_api import MALFORMED, MISUSED, FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.grants import rules as grants
from bot.server import RunningBot
from bot.zenlayer.client import ZenlayerClient
from tests.db_support import BACKENDS, migrated_database
from tests.fake_socket_mode import FakeSocketMode
from tests.slack_support import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    APP_TOKEN,
    SIGNING_SECRET,
    bot_settings,
    running_bot,
)
from tests.transports import HttpSlack, SocketSlack


@pytest.fixture
def fake_slack() -> Iterator[FakeSlackWebApi]:
    """A loopback stand-in for the Slack Web API that records every call; no test may leave a message, view or
    options answer of ours that Slack would have refused as malformed or too long, nor misuse a surface (a trigger
    used twice, a step completed twice...) — a refusal a test scripted with fail_next aside."""
    with FakeSlackWebApi() as fake:
        yield fake
        refused = [c for c in fake.rejections() if c.response.get("error") in MALFORMED | MISUSED and not c.scripted]
        assert not refused, f"Slack would have refused: {[(c.method, c.response['error']) for c in refused]}"


@pytest.fixture
def simulator() -> Iterator[ZenlayerSimulator]:
    """The Zenlayer simulator on loopback, verifying signatures, quick to change state, with a few instances."""
    sim = ZenlayerSimulator(
        boot_seconds=0.3,
        stop_seconds=0.3,
        reboot_seconds=0.3,
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        instances={"web-1": "STOPPED", "web-2": "STOPPED", "db-1": "RUNNING"},
    )
    with sim:
        yield sim


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database at the newest migration, on SQLite and (when configured) PostgreSQL."""
    with migrated_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def vm(simulator: ZenlayerSimulator) -> Iterator[ZenlayerClient]:
    """The real Zenlayer client, talking to the simulator."""
    with ZenlayerClient(
        simulator.url, access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, backoff_seconds=0.01
    ) as client:
        yield client


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh SQLite file (the bot migrates it when it starts)."""
    return f"sqlite:///{tmp_path / 'vm-bot.db'}"


@pytest.fixture
def grant(database_url: str) -> Callable[..., None]:
    """Grant a user patterns, as `vm-bot perms grant` would."""

    def add(user_id: str, *patterns: str, **options: object) -> None:
        from bot.db.migrate import upgrade

        upgrade(database_url)
        db = Database(database_url)
        try:
            with db.session() as session:
                grants.add_grants(session, user_id, list(patterns), granted_by="test", **options)  # type: ignore[arg-type]
        finally:
            db.close()

    return add


@pytest.fixture
def start_bot(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str
) -> Iterator[Callable[..., tuple[RunningBot, SlackDriver]]]:
    """Start the bot (optionally with setting overrides) and a driver that talks to it like Slack."""
    with ExitStack() as stack:

        def start(**overrides: str) -> tuple[RunningBot, SlackDriver]:
            settings = bot_settings(
                database_url=database_url,
                slack_url=fake_slack.url,
                zenlayer_url=simulator.url,
                overrides=overrides,
            )
            running = stack.enter_context(running_bot(settings))
            assert running.http is not None
            driver = SlackDriver(running.http.url, fake_slack, SIGNING_SECRET)
            stack.callback(driver.close)
            stack.callback(lambda: _no_refused_acks(driver))
            return running, driver

        yield start


def _no_refused_acks(driver: SlackDriver) -> None:
    """Fail when Slack would have refused an acknowledgement the bot gave."""
    assert not driver.refused_acks, f"Slack would have refused these acks: {driver.refused_acks}"


@pytest.fixture
def slack(start_bot: Callable[..., tuple[RunningBot, SlackDriver]]) -> SlackDriver:
    """A driver for a bot started with the default test settings."""
    return start_bot()[1]


@pytest.fixture
def socket_mode(fake_slack: FakeSlackWebApi) -> Iterator[FakeSocketMode]:
    """The fake Socket Mode endpoint, handed out by the Web API fake's apps.connections.open."""
    with FakeSocketMode() as fake:
        fake_slack.socket_mode_url = fake.url
        yield fake


@pytest.fixture
def socket_settings(fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str) -> Settings:
    """Settings for Socket Mode: an app-level token and no signing secret."""
    return bot_settings(
        database_url=database_url,
        slack_url=fake_slack.url,
        zenlayer_url=simulator.url,
        overrides={"SLACK_APP_TOKEN": APP_TOKEN, "SLACK_SIGNING_SECRET": ""},
    )


@pytest.fixture
def socket_bot(socket_mode: FakeSocketMode, socket_settings: Settings) -> Iterator[RunningBot]:
    """The bot, started in Socket Mode and connected."""
    with running_bot(socket_settings) as running:
        socket_mode.wait_connected()
        yield running


@pytest.fixture(params=["http", "socket_mode"])
def chat(request: pytest.FixtureRequest, fake_slack: FakeSlackWebApi) -> HttpSlack | SocketSlack:
    """Slack's side of a conversation with the running bot, once over each transport."""
    if request.param == "http":
        return HttpSlack(request.getfixturevalue("slack"))
    request.getfixturevalue("socket_bot")
    return SocketSlack(request.getfixturevalue("socket_mode"), fake_slack)
