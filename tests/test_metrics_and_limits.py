"""/metrics after a real flow, the per-user command rate limit, and the JSON log format's fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Secret, Settings
from bot.db import audit
from bot.db.session import Database
from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import wait_until
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.logging_setup import JsonFormatter, TextFormatter, log_context, secrets_of
from bot.server import RunningBot
from bot.slack import action_ids
from tests.transports import HttpSlack

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Return every sample /metrics shows, keyed by name and sorted labels."""
    answer = httpx.get(f"{url}/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_a_whole_flow(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
    grant: Callable[..., None],
    simulator: ZenlayerSimulator,
) -> None:
    running, driver = start_bot()
    assert running.http is not None
    url = running.http.url
    chat = HttpSlack(driver)
    grant("U0REQUEST", "web-*")

    chat.say("start web-1 web-2")
    chat.say("start db-1", user="U0NOBODY")
    confirmation = chat.wait_confirmation()
    chat.press(confirmation, action_ids.START)
    chat.wait_thread(confirmation, "All 2 instances RUNNING")
    wait_until(lambda: value(scrape(url), "vmbot_click_to_running_seconds_count") == 1, what="click-to-RUNNING")
    httpx.post(f"{url}/slack/events", content=b"unsigned")

    samples = scrape(url)
    assert value(samples, "vmbot_commands_total", verb="start", outcome="accepted") == 1
    assert value(samples, "vmbot_commands_total", verb="start", outcome="denied") == 1
    assert value(samples, "vmbot_clicks_total", decision="start", outcome="approved") == 1
    assert value(samples, "vmbot_ack_latency_seconds_count", kind="command") == 2
    assert value(samples, "vmbot_ack_latency_seconds_count", kind="interaction") == 1
    assert value(samples, "vmbot_zenlayer_calls_total", action="StartInstances", error="none") == 1
    assert value(samples, "vmbot_zenlayer_calls_total", action="DescribeInstancesStatus", error="none") >= 1
    assert value(samples, "vmbot_zenlayer_call_seconds_count", action="StartInstances") == 1
    assert value(samples, "vmbot_slack_api_calls_total", method="chat.postMessage", error="none") >= 2
    assert value(samples, "vmbot_slack_api_calls_total", method="chat.update", error="none") >= 1
    assert value(samples, "vmbot_watcher_tick_seconds_count") >= 1
    assert value(samples, "vmbot_watcher_last_tick_timestamp_seconds") > 0
    assert value(samples, "vmbot_http_refused_total", reason="unsigned") == 1
    assert ("vmbot_watched_instances", ()) in samples and ("vmbot_messages_pending", ()) in samples
    assert ("vmbot_watcher_takeovers_total", ()) in samples


def test_slack_errors_are_counted_by_method_and_error(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]], grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    running, driver = start_bot()
    assert running.http is not None
    url = running.http.url
    grant("U0REQUEST", "web-*")
    fake_slack.remove_bot_from("C0CHANNEL")
    HttpSlack(driver).say("start web-1")

    def counted() -> float:
        return value(scrape(url), "vmbot_slack_api_calls_total", method="chat.postMessage", error="not_in_channel")

    wait_until(counted, what="the failed post to be counted")


def test_a_user_over_the_rate_limit_is_told_to_slow_down_and_audited_once(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]], database_url: str
) -> None:
    running, driver = start_bot(COMMANDS_PER_MINUTE="3")
    chat = HttpSlack(driver)
    answers = [chat.say("help", user="U0FLOOD")[0] for _ in range(5)]
    assert all("Slow down" not in a for a in answers[:3])
    assert all("Slow down" in a and "3 `/vm` commands a minute" in a for a in answers[3:])
    assert "Slow down" not in chat.say("help", user="U0OTHER")[0]  # others are not held back

    db = Database(database_url)
    try:

        def limited() -> list[object]:
            with db.session(readonly=True) as session:
                return [e for e in audit.latest(session, limit=50) if e.event == "rate_limited"]

        events = wait_until(limited, what="the audit row")
        assert len(events) == 1 and events[0].actor == "U0FLOOD"
    finally:
        db.close()
    assert running.http is not None
    samples = scrape(running.http.url)
    assert value(samples, "vmbot_commands_total", verb="help", outcome="rate_limited") == 2


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("bot.test", logging.INFO, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_json_log_lines_carry_the_context_and_hide_secrets() -> None:
    settings = Settings(
        slack_bot_token=Secret("xoxb-very-secret-token"),
        zenlayer_access_key_secret=Secret("zen-secret-value"),
        database_url="postgresql+psycopg://vmbot:db-password-123@db/vmbot",
    )
    json_format, text_format = JsonFormatter(secrets_of(settings)), TextFormatter(secrets_of(settings))
    with log_context(request_id="r123", user="U0ALICE", channel="C0OPS", instance_ids=["web-1", "web-2"]):
        record = _record(
            "called with zen-secret-value and xoxb-very-secret-token, db-password-123, xoxp-someone-elses",
            zenlayer_request_id="zl-42",
        )
        line = json_format.format(record)
        text = text_format.format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["request_id"] == "r123" and entry["user"] == "U0ALICE" and entry["channel"] == "C0OPS"
    assert entry["instance_ids"] == ["web-1", "web-2"] and entry["zenlayer_request_id"] == "zl-42"
    assert "user=U0ALICE" in text and "instance_ids=web-1,web-2" in text
    for shown in (line, text):
        for secret in ("very-secret-token", "zen-secret-value", "db-password-123", "someone-elses"):
            assert secret not in shown


def test_json_exceptions_stay_on_one_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter([]))
    logger = logging.getLogger("bot.test.json")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "ValueError: boom" in json.loads(lines[0])["exception"]


class _EndlessBody:
    """A request body that never ends, counting what was read from it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        size = 64 * 1024 if size < 0 else size
        self.read_bytes += size
        return b"x" * size


def test_the_app_itself_caps_bodies_of_unknown_length(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
) -> None:
    """Behind any server (not only waitress): a body without Content-Length is cut off just past the cap."""
    from bot.web import make_wsgi_app

    running, _ = start_bot(MAX_BODY_BYTES="4096")
    app = make_wsgi_app(running.bot)
    body = _EndlessBody()
    statuses: list[str] = []
    environ = {"PATH_INFO": "/slack/events", "REQUEST_METHOD": "POST", "wsgi.input": body}
    answer = b"".join(app(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["413 Content Too Large"] and b"over 4096 bytes" in answer
    assert body.read_bytes <= 4097
    statuses.clear()
    environ = {"PATH_INFO": "/slack/events", "REQUEST_METHOD": "POST", "CONTENT_LENGTH": "5000", "wsgi.input": body}
    b"".join(app(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["413 Content Too Large"] and body.read_bytes <= 4097  # refused without reading
