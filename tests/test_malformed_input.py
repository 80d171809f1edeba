"""Malformed input at /slack/events, over real HTTP: each is refused with a 4xx, one log line and a count — never a
500, a traceback, or a listener run."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.devtools.slack_driver import SlackDriver
from bot.server import RunningBot
from bot.slack import action_ids
from tests.slack_support import SIGNING_SECRET

FORM = "application/x-www-form-urlencoded"


def slack_signature(timestamp: bytes, body: bytes) -> bytes:
    """Sign raw bytes as Slack does (the SDK's signer only takes UTF-8 text)."""
    base = b"v0:" + timestamp + b":" + body
    return b"v0=" + hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest().encode()


def raw_post(url: str, body: bytes, *, timestamp: bytes | None = None, length: bytes | None = None) -> tuple[int, str]:
    """POST raw bytes to /slack/events, signed unless `timestamp` is given (then the signature is a dummy)."""
    host, port = url.removeprefix("http://").split(":")
    signed = timestamp is None
    timestamp = str(int(time.time())).encode() if signed else timestamp
    signature = slack_signature(timestamp, body) if signed else b"v0=" + b"0" * 64
    head = (
        b"POST /slack/events HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: " + FORM.encode() + b"\r\n"
        b"Content-Length: " + (str(len(body)).encode() if length is None else length) + b"\r\n"
        b"X-Slack-Request-Timestamp: " + timestamp + b"\r\nX-Slack-Signature: " + signature + b"\r\n"
        b"Connection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode("latin-1")


def refused(url: str, reason: str) -> float:
    """Return vmbot_http_refused_total for one reason."""
    text = httpx.get(f"{url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vmbot_http_refused_total" and sample.labels.get("reason") == reason:
                return sample.value
    return 0.0


def click_body(actions: Any = None, **fields: Any) -> bytes:
    """A block_actions payload naming request 1 with a Start button, with actions or fields replaced."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0REQUEST"},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0CHANNEL"},
        "channel": {"id": "C0CHANNEL"},
        "trigger_id": f"{time.time()}.1.malformed",
        "actions": [{"action_id": action_ids.START, "block_id": action_ids.CONFIRM_BLOCK, "value": "1"}]
        if actions is None
        else actions,
        **fields,
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def command_body(**fields: str) -> bytes:
    """A /vm help command with fields replaced (a field set to "" is left out)."""
    payload = {"command": "/vm", "text": "help", "user_id": "U0REQUEST", "channel_id": "C0CHANNEL", **fields}
    payload["trigger_id"] = f"{time.time()}.2.malformed"
    return urlencode({k: v for k, v in payload.items() if v}).encode()


NOT_UTF8 = b"command=%2Fvm&text=\xff\xfe&user_id=U0REQUEST&channel_id=C0CHANNEL"
UNTYPED = urlencode({"payload": json.dumps({"user": {"id": "U0REQUEST"}})}).encode()


def start(value: str) -> list[dict[str, str]]:
    return [{"action_id": action_ids.START, "block_id": action_ids.CONFIRM_BLOCK, "value": value}]


CASES = [
    # (id, request options, status, counted reason)
    ("timestamp-superscript-digit", {"body": command_body(), "timestamp": "²".encode("latin-1")}, 401, "unsigned"),
    ("timestamp-5000-digits", {"body": command_body(), "timestamp": b"9" * 5000}, 401, "unsigned"),
    ("content-length-superscript-digit", {"body": command_body(), "length": "²".encode("latin-1")}, 400, "bad_length"),
    ("content-length-huge", {"body": command_body(), "length": b"9" * 30}, 413, "too_large"),
    ("signed-not-utf8", {"body": NOT_UTF8}, 400, "malformed"),
    ("unsigned-not-utf8", {"body": NOT_UTF8, "timestamp": b"1700000000"}, 400, "malformed"),
    ("value-superscript-digit", {"body": click_body(start("²"))}, 400, "malformed"),
    ("value-5000-digits", {"body": click_body(start("9" * 5000))}, 400, "malformed"),
    ("value-beyond-a-request-id", {"body": click_body(start("9" * 10))}, 400, "malformed"),
    ("actions-empty", {"body": click_body([])}, 400, "malformed"),
    ("actions-not-objects", {"body": click_body(["vm_start_confirm"])}, 400, "malformed"),
    ("actions-not-a-list", {"body": click_body({"0": start("1")[0]})}, 400, "malformed"),
    ("user-not-an-object", {"body": click_body(user="U0REQUEST")}, 400, "malformed"),
    ("container-not-an-object", {"body": click_body(container="1700000000.000100")}, 400, "malformed"),
    ("command-without-user", {"body": command_body(user_id="")}, 400, "malformed"),
    ("command-without-channel", {"body": command_body(channel_id="")}, 400, "malformed"),
    ("payload-bad-json", {"body": b"payload=%7Bnot+json"}, 400, "malformed"),
    ("payload-a-list", {"body": b"payload=%5B%5D"}, 400, "malformed"),
    ("payload-without-type", {"body": UNTYPED}, 400, "malformed"),
    ("empty-body", {"body": b""}, 400, "malformed"),
]


@pytest.mark.parametrize(("options", "status", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_a_4xx_with_one_line_and_a_count(
    options: dict[str, Any],
    status: int,
    reason: str,
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    running, _ = start_bot()
    assert running.http is not None
    url = running.http.url
    before = refused(url, reason)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        answer = raw_post(url, **options)

    assert answer[0] == status, answer
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "refused a request to /slack/events" in lines[0].getMessage(), [
        r.getMessage() for r in lines
    ]
    assert not any(r.exc_info for r in caplog.records)  # no traceback
    assert refused(url, reason) == before + 1


def test_a_click_whose_value_is_not_a_request_is_refused_and_the_real_click_still_works(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]], grant: Callable[..., None]
) -> None:
    running, slack = start_bot()
    assert running.http is not None
    grant("U0REQUEST", "web-*")
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()

    response, key = slack.click(confirmation, action_ids.START, value="²")
    assert response.status_code == 400
    assert slack.private_replies(key) == [] and slack.thread_texts(confirmation) == []
    slack.click(confirmation, action_ids.START)
    assert "All 1 instance RUNNING" in slack.wait_thread(confirmation, "All 1 instance RUNNING")[-1]
