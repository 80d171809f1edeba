"""A loopback stand-in for the Slack Web API, shared by the tests and `vm-bot demo`.

It speaks just enough of the Web API for vm-bot (auth.test, chat.postMessage, chat.update,
chat.postEphemeral, chat.getPermalink, and apps.connections.open once `socket_mode_url` is set)
plus response_url posts under `/_response/<key>`, records every
call, keeps the current text and blocks of each message, and can be told to fail: a method answering
an error, HTTP 429 with Retry-After, or a channel the bot is not a member of. For the App Home, modals and
Workflow Builder steps it also answers views.open/push/update/publish and functions.completeSuccess/completeError,
keeping each user's Home and open modal and each step's outcome (`bot.devtools.slack_surfaces`).

Like Slack, it rejects what Slack rejects: every posted message (chat.postMessage, chat.update,
chat.postEphemeral, response_url) is checked against Slack's documented limits — its blocks parsed with
slack_sdk's models and validated, plus explicit length checks — and answered `msg_too_long` or `invalid_blocks`;
every view likewise (`invalid_arguments` with Slack's messages, `view_too_large`), and trigger ids and just-in-time
tokens expire by the stand-in's clock, which a test can move forward (`advance_clock`).
It can also answer a call late after carrying it out (`delay_next`: a post the client timed out on that Slack did
make), hold a channel or a method behind HTTP 429 for a Retry-After, or answer every call with a permanent
error (`invalid_auth`, `token_revoked`, `account_inactive`), as an uninstalled app gets. Every reply names the
token's scopes in `x-oauth-scopes`, as Slack's do (`granted_scopes`: vm-bot's own unless a test says otherwise).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from bot.devtools.block_kit import MAX_BLOCKS, block_problem
from bot.devtools.loopback import LoopbackServer
from bot.devtools.slack_surfaces import SURFACE_METHODS, SurfacesStandIn
from bot.slack.scopes import BOT_SCOPES

BOT_USER_ID = "UVMBOT0001"
WORKSPACE_URL = "https://example.slack.com/"  # what auth.test answers, and where permalinks point
AUTH_ERRORS = frozenset({"invalid_auth", "token_revoked", "account_inactive"})
MESSAGE_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral", "response_url"})
# What Slack answers a message or view it cannot take; always a bug in the sender, never worth a retry.
MALFORMED = frozenset(
    {"msg_too_long", "invalid_blocks", "invalid_blocks_format", "no_text", "invalid_arguments", "view_too_large"}
)
# What Slack answers a call that misuses a surface: a trigger_id never issued or used twice, a modal pushed past
# its 3 views, a function execution completed twice, without its required outputs, or with its just-in-time token
# after that expired. Always a bug in the app. (An expired trigger_id is not here: a slow machine can cause it.)
MISUSED = frozenset(
    {
        "invalid_trigger_id",
        "exchanged_trigger_id",
        "push_limit_reached",
        "function_execution_not_found",
        "parameter_validation_failed",
        "token_expired",
    }
)

TEXT_LIMIT = 40_000

Reply = tuple[int, dict[str, Any], dict[str, str]]  # HTTP status, JSON body, headers


@dataclass
class Call:
    """One request the fake received: method name and decoded arguments."""

    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)
    scripted: bool = False  # answered by a fault a test scripted (fail_next), not by the stand-in's checks
    token: str | None = None  # the token the call was made with (a fake one), to tell the bot's from a function's


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
    broadcast: bool = False  # a thread reply also shown in the channel (reply_broadcast)


@dataclass
class _Fault:
    method: str
    times: int
    error: str | None
    status: int
    retry_after: int | None
    channel: str | None = None


@dataclass
class _Delay:
    """The next `times` calls of `method` (to `channel`, if given) are answered `seconds` late, after taking effect."""

    method: str
    seconds: float
    times: int
    channel: str | None = None


@dataclass
class _RateLimit:
    """Calls matching channel and/or method answer 429 until `until` (time.monotonic())."""

    channel: str | None
    method: str | None
    until: float

    def matches(self, method: str, channel: str) -> bool:
        return (self.channel is None or self.channel == channel) and (self.method is None or self.method == method)


class FakeSlackWebApi(SurfacesStandIn, LoopbackServer):
    """A threaded HTTP server that records Web API calls and simulates the messages they create."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(ThreadingHTTPServer((host, port), self._handler_class()))
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self._faults: list[_Fault] = []
        self._not_member: set[str] = set()
        self._rate_limits: list[_RateLimit] = []
        self._delays: list[_Delay] = []
        self._auth_error: str | None = None
        # The scopes Slack says the token holds (the x-oauth-scopes header on every Web API reply); a test may
        # grant fewer or more than vm-bot asks for.
        self.granted_scopes: tuple[str, ...] = BOT_SCOPES
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
        channel: str | None = None,
    ) -> None:
        """Make the next `times` calls of `method` (to `channel`, if given) fail with a Slack error or an HTTP
        status (429 + Retry-After)."""
        with self._lock:
            self._faults.append(_Fault(method, times, error, status, retry_after, channel))

    def delay_next(self, method: str, seconds: float, *, times: int = 1, channel: str | None = None) -> None:
        """Carry out the next `times` calls of `method` (to `channel`, if given) at once but answer them only after
        `seconds`: a client that gives up sooner does not know that, say, its message was posted."""
        with self._lock:
            self._delays.append(_Delay(method, seconds, times, channel))

    def rate_limit(self, retry_after: float, *, channel: str | None = None, method: str | None = None) -> None:
        """Answer HTTP 429 to calls to `channel` and/or of `method` for `retry_after` seconds, as Slack does: each
        with a Retry-After of the seconds still left (rounded up). Other channels and methods are unaffected."""
        if channel is None and method is None:
            raise ValueError("name a channel, a method or both")
        with self._lock:
            self._rate_limits.append(_RateLimit(channel, method, time.monotonic() + retry_after))

    def uninstall(self, error: str = "token_revoked") -> None:
        """Answer every Web API call with a permanent auth error, as Slack does once the app is gone."""
        if error not in AUTH_ERRORS:
            raise ValueError(f"not one of Slack's auth errors: {error!r}")
        with self._lock:
            self._auth_error = error

    def reinstall(self) -> None:
        """Undo uninstall()."""
        with self._lock:
            self._auth_error = None

    def remove_bot_from(self, channel: str) -> None:
        """Make posts to `channel` fail with not_in_channel, as when the bot was never invited."""
        with self._lock:
            self._not_member.add(channel)

    # --- inspection ------------------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        """Return the recorded calls of one method, oldest first."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def rejections(self) -> list[Call]:
        """Return the calls that were refused (an error answer or a non-200 status), oldest first."""
        with self._lock:
            return [c for c in self.calls if c.status != 200 or c.response.get("ok") is False]

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
            return [
                c.args
                for c in self.calls
                if c.method == "response_url" and c.status == 200 and (key is None or c.args["_key"] == key)
            ]

    def summary(self) -> str:
        """Return a short description of the latest calls, for assertion messages."""
        shown = self.calls[-20:]
        earlier = f"({len(self.calls) - len(shown)} earlier calls) " if len(self.calls) > len(shown) else ""
        return earlier + "; ".join(f"{c.method}({_short(c.args)})" for c in shown)

    # --- the Web API -----------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.{next(self._ts):06d}"

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> Reply:
        """Apply one Web API call to the simulated workspace and return (status, body, headers)."""
        channel = str(args.get("channel", ""))
        if self._auth_error is not None and method != "apps.connections.open":  # that one uses the app token
            return 200, {"ok": False, "error": self._auth_error}, {}
        if (token_error := self.surfaces.token_problem(token)) is not None:  # a function's token past its use
            return 200, {"ok": False, "error": token_error}, {}
        now = time.monotonic()
        self._rate_limits = [limit for limit in self._rate_limits if limit.until > now]
        for limit in self._rate_limits:
            if limit.matches(method, channel):
                retry_after = str(max(1, math.ceil(limit.until - now)))
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": retry_after}
        for fault in self._faults:
            if fault.method == method and fault.times > 0 and fault.channel in (None, channel):
                fault.times -= 1
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                error = fault.error or ("ratelimited" if fault.status != 200 else "internal_error")
                return fault.status, {"ok": False, "error": error, "_scripted": True}, headers
        if method in MESSAGE_METHODS:
            refusal = message_error(args)
            if refusal is not None:
                return 200, {"ok": False, "error": refusal}, {}
        return 200, self._carry_out(method, args, channel), {}

    def _carry_out(self, method: str, args: dict[str, Any], channel: str) -> dict[str, Any]:
        """Carry out a call that passed the checks every method shares, and return Slack's answer."""
        if method in SURFACE_METHODS:
            return self.surfaces.answer(method, args)
        if method == "auth.test":
            return {
                "ok": True,
                "url": WORKSPACE_URL,
                "team": "Example",
                "user": "vm-bot",
                "user_id": BOT_USER_ID,
                "bot_id": "BVMBOT0001",
                "team_id": "T0001",
            }
        if method == "apps.connections.open" and self.socket_mode_url is not None:
            return {"ok": True, "url": self.socket_mode_url}
        if method in ("chat.postMessage", "chat.postEphemeral") and channel in self._not_member:
            return {"ok": False, "error": "not_in_channel"}
        if method == "chat.postMessage":
            if not channel:
                return {"ok": False, "error": "channel_not_found"}
            ts = self._next_ts()
            thread_ts = args.get("thread_ts") or None
            if thread_ts is not None and (channel, thread_ts) not in self.messages:
                return {"ok": False, "error": "thread_not_found"}
            broadcast = thread_ts is not None and args.get("reply_broadcast") in (True, "true", "1")
            self.messages[(channel, ts)] = Message(
                channel, ts, args.get("text", ""), _blocks(args.get("blocks")), thread_ts, broadcast=broadcast
            )
            return {"ok": True, "channel": channel, "ts": ts, "message": {"text": args.get("text", "")}}
        if method == "chat.update":
            message = self.messages.get((channel, str(args.get("ts"))))
            if message is None:
                return {"ok": False, "error": "message_not_found"}
            message.text = args.get("text", message.text)
            # As in Slack: an update with text and no blocks removes the blocks.
            message.blocks = _blocks(args.get("blocks"))
            message.edits += 1
            return {"ok": True, "channel": channel, "ts": message.ts}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._next_ts()}
        if method == "chat.getPermalink":
            ts = str(args.get("message_ts", ""))
            return {"ok": True, "permalink": f"{WORKSPACE_URL}archives/{channel}/p{ts.replace('.', '')}"}
        return {"ok": False, "error": "unknown_method"}

    def _take_delay(self, method: str, channel: str) -> float:
        """Return how late to answer this call (0: at once), using up one scripted delay; call with the lock held."""
        for delay in self._delays:
            if delay.method == method and delay.times > 0 and delay.channel in (None, channel):
                delay.times -= 1
                return delay.seconds
        return 0.0

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
                    # Slack answers a response_url post with plain text: "ok", or a 400 naming the problem.
                    refusal = message_error(args)
                    status = 200 if refusal is None else 400
                    with fake._lock:
                        fake.calls.append(
                            Call(
                                "response_url", args, status=status, response={"ok": refusal is None, "error": refusal}
                            )
                        )
                        fake._lock.notify_all()
                    self._send(status, (refusal or "ok").encode(), "text/plain", {})
                    return
                method = self.path.removeprefix("/api/")
                token = self.headers.get("Authorization", "").removeprefix("Bearer ") or args.get("token")
                with fake._lock:
                    status, body, headers = fake._answer(method, args, token)
                    scripted = bool(body.pop("_scripted", False))
                    fake.calls.append(Call(method, args, status=status, response=body, scripted=scripted, token=token))
                    delay = fake._take_delay(method, str(args.get("channel", "")))
                    headers = {**headers, "x-oauth-scopes": ",".join(fake.granted_scopes)}
                    fake._lock.notify_all()
                if delay:
                    time.sleep(delay)  # the call has taken effect; only its answer is late
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


def message_error(args: dict[str, Any]) -> str | None:
    """Return the error Slack would answer for a message payload (text and blocks), or None if it accepts it."""
    text = args.get("text")
    raw_blocks = args.get("blocks")
    try:
        blocks = _blocks(raw_blocks)
    except ValueError:
        return "invalid_blocks_format"
    if text is not None and not isinstance(text, str):
        return "invalid_arguments"
    if text and len(text) > TEXT_LIMIT:
        return "msg_too_long"
    if not text and not blocks and not args.get("delete_original"):
        return "no_text"
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict) or block_problem(block) is not None:
            return "invalid_blocks"
    return None


def _blocks(value: Any) -> list[dict[str, Any]]:
    """Decode blocks sent either as a JSON list or a JSON string (form encoding)."""
    if not value:
        return []
    decoded = json.loads(value) if isinstance(value, str) else value
    return list(decoded)


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
