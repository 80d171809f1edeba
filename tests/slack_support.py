"""End-to-end helpers: settings for the fakes, a running bot, and the usual start-request preamble."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from bot.app import create_app
from bot.config import Settings, load_settings
from bot.db.migrate import upgrade
from bot.devtools.slack_driver import Confirmation
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import TEST_CREDENTIALS, free_port, wait_until
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.server import RunningBot

SIGNING_SECRET = TEST_CREDENTIALS.slack_signing_secret
BOT_TOKEN = TEST_CREDENTIALS.slack_bot_token
APP_TOKEN = TEST_CREDENTIALS.slack_app_token
ACCESS_KEY_ID = TEST_CREDENTIALS.zenlayer_access_key_id
ACCESS_KEY_SECRET = TEST_CREDENTIALS.zenlayer_access_key_secret

__all__ = ["free_port", "wait_until"]


def bot_settings(
    *, database_url: str, slack_url: str, zenlayer_url: str, overrides: Mapping[str, str] | None = None
) -> Settings:
    """Return settings pointing the bot at the fakes, with fast polling."""
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack_url,
        "ZENLAYER_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "ZENLAYER_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
        "ZENLAYER_API_URL": zenlayer_url,
        "DATABASE_URL": database_url,
        "POLL_INTERVAL_SECONDS": "0.05",
        "START_TIMEOUT_SECONDS": "30",
        "CONFIRM_TTL_SECONDS": "600",
        "APPROVAL_TTL_SECONDS": "3600",
        # Bursts of commands from one test user are the point of several tests; the limit has its own tests.
        "COMMANDS_PER_MINUTE": "0",
    }
    env.update(overrides or {})
    return load_settings(env)


@contextmanager
def running_bot(settings: Settings, **app_options: Any) -> Iterator[RunningBot]:
    """Migrate the database, serve the bot on a free loopback port, and stop it afterwards (`app_options` go to
    create_app, e.g. a short `slack_timeout`)."""
    upgrade(settings.database_url)
    running = RunningBot(create_app(settings, **app_options), host="127.0.0.1", port=0).start()
    try:
        yield running
    finally:
        running.stop()


class Chat(Protocol):
    """Slack's side of a conversation over either transport (what ask_to_start needs)."""

    def command(self, text: str, *, user: str = ..., channel: str = ...) -> tuple[Any, str]: ...

    def wait_confirmation(self, channel: str = ..., index: int = ..., timeout: float = ...) -> Confirmation: ...


def ask_to_start(
    slack: Chat, grant: Callable[..., None], ids: str = "web-1", *, user: str = "U0REQUEST", **grant_options: Any
) -> Confirmation:
    """The usual preamble: grant user web-*, send `/vm start ids` as them, and return the confirmation posted."""
    grant(user, "web-*", **grant_options)
    slack.command(f"start {ids}", user=user)
    return slack.wait_confirmation()


def start_calls(simulator: ZenlayerSimulator) -> list[list[str]]:
    """Return the instance ids of every StartInstances call the simulator answered."""
    return [list(c.instance_ids) for c in simulator.calls if c.action == "StartInstances"]


def stand_in_env(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str, **extra: str
) -> dict[str, str]:
    """Return the settings of a vm-bot process pointed at the stand-ins (and PATH), as environment variables."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake_slack.url,
        "ZENLAYER_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "ZENLAYER_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
        "ZENLAYER_API_URL": simulator.url,
        "DATABASE_URL": database_url,
        **extra,
    }


def run_env(
    fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator, database_url: str, port: int, **extra: str
) -> dict[str, str]:
    """Return the environment of a `vm-bot run` process pointed at the stand-ins (this one's environment beside)."""
    return {
        **os.environ,
        **stand_in_env(fake_slack, simulator, database_url, SLACK_APP_TOKEN="", ZENLAYER_TOKEN="", PORT=str(port)),
        **extra,
    }
