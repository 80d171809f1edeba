"""A response_url (a 30-minute capability to post as the bot) never reaches the log: not in a message, not in an
exception, not in a database error's bound parameters."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.db.session import Database
from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.logging_setup import REDACTED, JsonFormatter, TextFormatter
from bot.server import RunningBot
from bot.slack import action_ids
from tests.slack_support import wait_until

SLACK_URLS = [
    "https://hooks.slack.com/actions/T0001ABCD/6107284371234/Zq8vH3kLmN0pQrStUvWxYz12",
    "https://hooks.slack.com/commands/T0001ABCD/6107284371234/Zq8vH3kLmN0pQrStUvWxYz12",
    "https://hooks.slack-gov.com/actions/T0001ABCD/6107284371234/Zq8vH3kLmN0pQrStUvWxYz12",
]
SECRET_PART = "6107284371234/Zq8vH3kLmN0pQrStUvWxYz12"


def record_with(message: str, error: str) -> logging.LogRecord:
    """An error record whose message and exception both carry text."""
    try:
        raise RuntimeError(error)
    except RuntimeError as exc:
        return logging.LogRecord("bot.test", logging.ERROR, __file__, 1, message, (), (type(exc), exc, None))


@pytest.mark.parametrize("url", SLACK_URLS)
@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter([])], ids=["text", "json"])
def test_a_slack_response_url_is_redacted_in_messages_and_exceptions(url: str, formatter: logging.Formatter) -> None:
    encoded = url.replace(":", "%3A").replace("/", "%2F")
    escaped = json.dumps({"response_url": url}).replace("/", "\\/")  # as Slack writes it in a payload
    line = formatter.format(
        record_with(f"could not post to {url}; body response_url={encoded}&x=1", f"posting {escaped} failed")
    )

    assert SECRET_PART not in line and SECRET_PART.replace("/", "%2F") not in line
    assert SECRET_PART.replace("/", "\\\\/") not in line and SECRET_PART.replace("/", "\\/") not in line
    assert line.count(REDACTED) >= 3  # where it was is still visible
    assert "&x=1" in line  # and nothing after it is eaten


def test_the_stand_ins_response_urls_are_redacted_too(fake_slack: FakeSlackWebApi) -> None:
    url = fake_slack.response_url("click-42")
    line = TextFormatter().format(record_with(f"respond to {url} failed", f"{url}: 500"))

    assert "click-42" not in line and url.rsplit("/", 1)[0] in line


def test_a_database_error_on_an_insert_carrying_a_response_url_does_not_log_it(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
    grant: Callable[..., None],
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, slack = start_bot()
    grant("U0REQUEST", "web-*")
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    other = Database(database_url)
    try:
        with other.engine.begin() as connection:  # the outbox insert that carries the clicker's response_url fails
            connection.execute(
                text(
                    "CREATE TRIGGER no_outbox BEFORE INSERT ON outbox WHEN NEW.response_url IS NOT NULL "
                    "BEGIN SELECT RAISE(ABORT, 'outbox down'); END"
                )
            )
    finally:
        other.close()

    with caplog.at_level(logging.INFO):
        _, key = slack.click(confirmation, action_ids.START)
        failed = wait_until(
            lambda: [r for r in caplog.records if r.exc_info and "outbox down" in str(r.exc_info[1])],
            what="the database error in the log",
        )

    response_url = slack.fake.response_url(key)
    plain = logging.Formatter("%(message)s")  # no redaction: the parameters must not be there in the first place
    assert all(response_url not in plain.format(r) for r in caplog.records)
    assert "hidden due to hide_parameters" in plain.format(failed[0])
