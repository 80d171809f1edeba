"""A loopback stand-in for the Slack Web API, shared by the tests and `vm-bot demo`.

It speaks just enough of the Web API for vm-bot (auth.test, chat.postMessage, chat.update,
chat.postEphemeral, chat.getPermalink, and apps.connections.open once `socket_mode_url` is set)
plus response_url posts under `/_response/<key>`, records every
call, keeps the current text and blocks of each message, and can be told to fail: a method answering
an error, HTTP 429 with Retry-After, or a channel the bot is not a member of.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from bot.devtools.loopback import LoopbackServer

BOT_USER_ID = "UVMBOT0001"


@dataclass
class Call:
    """One request the fake received: method name and decoded arguments."""

    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    """A message as it currently stands in a channel."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    user: str = BOT_USER_ID
    edits: int = 0


@dataclass
class _Fault:
    method: str
    times: int
    error: str | None
    status: int
    retry_after: int | None


class FakeSlackWebApi(LoopbackServer):
    """A threaded HTTP server that records Web API calls and simulates the messages they create."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(ThreadingHTTPServer((host, port), self._handler_class()))
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self._faults: list[_Fault] = []
        self._not_member: set[str] = set()
        # The ws:// URL apps.connections.open hands out (see tests/fake_socket_mode.py); None: Socket Mode is off.
        self.socket_mode_url: str | None = None
        self._ts = itertools.count(1)

    thread_name = "fake-slack"

    @property
    def url(self) -> str:
        """Return the base URL to give WebClient (ends with a slash, like SLACK_API_URL)."""
        host, port = self.address
        return f"http://{host}:{port}/api/"

    def response_url(self, key: str) -> str:
        """Return a response_url that records posts under the given key."""
        host, port = self.address
        return f"http://{host}:{port}/_response/{key}"

    # --- scripting -------------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        times: int = 1,
        error: str | None = None,
        status: int = 200,
        retry_after: int | None = None,
    ) -> None:
        """Make the next `times` calls of `method` fail with a Slack error or an HTTP status (429 + Retry-After)."""
        with self._lock:
            self._faults.append(_Fault(method, times, error, status, retry_after))

    def remove_bot_from(self, channel: str) -> None:
        """Make posts to `channel` fail with not_in_channel, as when the bot was never invited."""
        with self._lock:
            self._not_member.add(channel)

    # --- inspection ------------------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        """Return the recorded calls of one method, oldest first."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def _timeout_detail(self) -> str:
        """Add the latest calls to a timeout message."""
        return f"; calls so far: {self.summary()}"

    def channel_messages(self, channel: str) -> list[Message]:
        """Return the top-level messages of a channel, oldest first."""
        with self._lock:
            return sorted(
                (m for m in self.messages.values() if m.channel == channel and m.thread_ts is None),
                key=lambda m: float(m.ts),
            )

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """Return the replies under a message, oldest first."""
        with self._lock:
            return sorted(
                (m for m in self.messages.values() if m.channel == channel and m.thread_ts == thread_ts),
                key=lambda m: float(m.ts),
            )

    def responses(self, key: str | None = None) -> list[dict[str, Any]]:
        """Return the bodies posted to response_urls (optionally one key), oldest first."""
        with self._lock:
            return [c.args for c in self.calls if c.method == "response_url" and (key is None or c.args["_key"] == key)]

    def summary(self) -> str:
        """Return a short description of the latest calls, for assertion messages."""
        shown = self.calls[-20:]
        earlier = f"({len(self.calls) - len(shown)} earlier calls) " if len(self.calls) > len(shown) else ""
        return earlier + "; ".join(f"{c.method}({_short(c.args)})" for c in shown)

    # --- the Web API -----------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.{next(self._ts):06d}"

    def _answer(self, method: str, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Apply one Web API call to the simulated workspace and return (status, body, headers)."""
        for fault in self._faults:
            if fault.method == method and fault.times > 0:
                fault.times -= 1
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                if fault.status != 200:
                    return fault.status, {"ok": False, "error": fault.error or "ratelimited"}, headers
                return 200, {"ok": False, "error": fault.error or "internal_error"}, headers
        channel = str(args.get("channel", ""))
        if method == "auth.test":
            return 200, {"ok": True, "user_id": BOT_USER_ID, "bot_id": "BVMBOT0001", "team_id": "T0001"}, {}
        if method == "apps.connections.open" and self.socket_mode_url is not None:
            return 200, {"ok": True, "url": self.socket_mode_url}, {}
        if method in ("chat.postMessage", "chat.postEphemeral") and channel in self._not_member:
            return 200, {"ok": False, "error": "not_in_channel"}, {}
        if method == "chat.postMessage":
            if not channel:
                return 200, {"ok": False, "error": "channel_not_found"}, {}
            ts = self._next_ts()
            thread_ts = args.get("thread_ts") or None
            if thread_ts is not None and (channel, thread_ts) not in self.messages:
                return 200, {"ok": False, "error": "thread_not_found"}, {}
            self.messages[(channel, ts)] = Message(
                channel, ts, args.get("text", ""), _blocks(args.get("blocks")), thread_ts
            )
            return (
                200,
                {"ok": True, "channel": channel, "ts": ts, "message": {"text": args.get("text", "")}},
                {},
            )
        if method == "chat.update":
            message = self.messages.get((channel, str(args.get("ts"))))
            if message is None:
                return 200, {"ok": False, "error": "message_not_found"}, {}
            message.text = args.get("text", message.text)
            # As in Slack: an update with text and no blocks removes the blocks.
            message.blocks = _blocks(args.get("blocks"))
            message.edits += 1
            return 200, {"ok": True, "channel": channel, "ts": message.ts}, {}
        if method == "chat.postEphemeral":
            return 200, {"ok": True, "message_ts": self._next_ts()}, {}
        if method == "chat.getPermalink":
            ts = str(args.get("message_ts", ""))
            return (
                200,
                {
                    "ok": True,
                    "permalink": f"https://example.slack.com/archives/{channel}/p{ts.replace('.', '')}",
                },
                {},
            )
        return 200, {"ok": False, "error": "unknown_method"}, {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    args = json.loads(raw or "{}")
                else:
                    args = dict(parse_qsl(raw))
                if self.path.startswith("/_response/"):
                    args["_key"] = self.path.removeprefix("/_response/")
                    with fake._lock:
                        fake.calls.append(Call("response_url", args))
                        fake._lock.notify_all()
                    self._send(200, b"ok", "text/plain", {})
                    return
                method = self.path.removeprefix("/api/")
                with fake._lock:
                    status, body, headers = fake._answer(method, args)
                    fake.calls.append(Call(method, args, status=status, response=body))
                    fake._lock.notify_all()
                self._send(status, json.dumps(body).encode(), "application/json", headers)

            def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def _blocks(value: Any) -> list[dict[str, Any]]:
    """Decode blocks sent either as a JSON list or a JSON string (form encoding)."""
    if not value:
        return []
    if isinstance(value, str):
        return json.loads(value)
    return list(value)


def _short(args: dict[str, Any]) -> str:
    text = str(args.get("text", ""))[:60]
    return ", ".join(f"{k}={args[k]!r}" for k in ("channel", "ts", "thread_ts") if k in args) + f", text={text!r}"


def message_text(message: Message | dict[str, Any]) -> str:
    """Return all human-visible text of a message or response body: its text and every text in its blocks."""
    if isinstance(message, Message):
        text, blocks = message.text, message.blocks
    else:
        text, blocks = str(message.get("text", "")), _blocks(message.get("blocks"))
    parts = [text]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and "text" in node:
                parts.append(str(node["text"]))
            for value in node.values():
                if isinstance(value, (dict, list)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return "\n".join(parts)
