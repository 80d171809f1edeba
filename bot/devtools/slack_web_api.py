"""A loopback stand-in for the Slack Web API, shared by the tests and `vm-bot demo`.

It speaks just enough of the Web API for vm-bot (auth.test, chat.postMessage, chat.update,
chat.postEphemeral, chat.getPermalink, and apps.connections.open once `socket_mode_url` is set)
plus response_url posts under `/_response/<key>`, records every call (`bot.devtools.slack_calls`) and keeps the
current text and blocks of each message. For the App Home, modals and Workflow Builder steps it also answers
views.open/push/update/publish and functions.completeSuccess/completeError, keeping each user's Home and open modal
and each step's outcome (`bot.devtools.slack_surfaces`).

Like Slack, it rejects what Slack rejects: every posted message (`bot.devtools.slack_messages`) and every view
(`invalid_arguments` with Slack's messages, `view_too_large`), and trigger ids and just-in-time tokens expire by the
stand-in's clock, which a test can move forward (`advance_clock`). It can be told to fail as Slack fails
(`bot.devtools.slack_faults`: an error, a late answer, HTTP 429 with Retry-After, an uninstalled app) or to act as
if the bot was never invited to a channel. Every reply names the token's scopes in `x-oauth-scopes`, as Slack's do
(`granted_scopes`: vm-bot's own unless a test says otherwise).
"""

from __future__ import annotations

import itertools
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from bot.devtools.loopback import LoopbackServer
from bot.devtools.slack_faults import Reply, ScriptedFaults
from bot.devtools.slack_messages import BOT_USER_ID, Message, decoded_blocks, message_error
from bot.devtools.slack_surfaces import SURFACE_METHODS, SurfacesStandIn
from bot.slack.scopes import BOT_SCOPES

WORKSPACE_URL = "https://example.slack.com/"  # what auth.test answers, and where permalinks point
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


class FakeSlackWebApi(ScriptedFaults, SurfacesStandIn, LoopbackServer):
    """A threaded HTTP server that records Web API calls and simulates the messages they create."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(ThreadingHTTPServer((host, port), self._handler_class()))
        self.messages: dict[tuple[str, str], Message] = {}
        self._not_member: set[str] = set()
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

    def remove_bot_from(self, channel: str) -> None:
        """Make posts to `channel` fail with not_in_channel, as when the bot was never invited."""
        with self._lock:
            self._not_member.add(channel)

    # --- inspection ------------------------------------------------------------------------------------

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

    # --- the Web API -----------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.{next(self._ts):06d}"

    def _web_api_call(self, method: str, args: dict[str, Any], token: str | None) -> tuple[Reply, float]:
        """Answer and record one Web API call; return the reply and how many seconds late to send it."""
        with self._lock:
            status, body, headers = self._answer(method, args, token)
            scripted = bool(body.pop("_scripted", False))
            self._record(method, args, status, body, scripted=scripted, token=token)
            delay = self._take_delay(method, str(args.get("channel", "")))
            headers = {**headers, "x-oauth-scopes": ",".join(self.granted_scopes)}
        return (status, body, headers), delay

    def _response_url_post(self, args: dict[str, Any]) -> tuple[int, str]:
        """Record a post to a response_url; Slack answers it with plain text: "ok", or a 400 naming the problem."""
        refusal = message_error(args)
        status = 200 if refusal is None else 400
        with self._lock:
            self._record("response_url", args, status, {"ok": refusal is None, "error": refusal})
        return status, refusal or "ok"

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> Reply:
        """Apply one Web API call to the simulated workspace and return (status, body, headers)."""
        channel = str(args.get("channel", ""))
        if (auth_error := self._auth_refusal(method)) is not None:
            return 200, {"ok": False, "error": auth_error}, {}
        if (token_error := self._token_problem(token)) is not None:  # a function's token past its use
            return 200, {"ok": False, "error": token_error}, {}
        if (scripted := self._scripted_reply(method, channel)) is not None:
            return scripted
        if method in MESSAGE_METHODS:
            refusal = message_error(args)
            if refusal is not None:
                return 200, {"ok": False, "error": refusal}, {}
        return 200, self._carry_out(method, args, channel), {}

    def _carry_out(self, method: str, args: dict[str, Any], channel: str) -> dict[str, Any]:
        """Carry out a call that passed the checks every method shares, and return Slack's answer."""
        if method in SURFACE_METHODS:
            return self._surface_answer(method, args)
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
                channel, ts, args.get("text", ""), decoded_blocks(args.get("blocks")), thread_ts, broadcast=broadcast
            )
            return {"ok": True, "channel": channel, "ts": ts, "message": {"text": args.get("text", "")}}
        if method == "chat.update":
            message = self.messages.get((channel, str(args.get("ts"))))
            if message is None:
                return {"ok": False, "error": "message_not_found"}
            message.text = args.get("text", message.text)
            # As in Slack: an update with text and no blocks removes the blocks.
            message.blocks = decoded_blocks(args.get("blocks"))
            message.edits += 1
            return {"ok": True, "channel": channel, "ts": message.ts}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._next_ts()}
        if method == "chat.getPermalink":
            ts = str(args.get("message_ts", ""))
            return {"ok": True, "permalink": f"{WORKSPACE_URL}archives/{channel}/p{ts.replace('.', '')}"}
        return {"ok": False, "error": "unknown_method"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                args = self._args()
                if self.path.startswith("/_response/"):
                    args["_key"] = self.path.removeprefix("/_response/")
                    status, text = fake._response_url_post(args)
                    self._send(status, text.encode(), "text/plain", {})
                    return
                method = self.path.removeprefix("/api/")
                token = self.headers.get("Authorization", "").removeprefix("Bearer ") or args.get("token")
                (status, body, headers), delay = fake._web_api_call(method, args, token)
                if delay:
                    time.sleep(delay)  # the call has taken effect; only its answer is late
                self._send(status, json.dumps(body).encode(), "application/json", headers)

            def _args(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    decoded: dict[str, Any] = json.loads(raw or "{}")
                    return decoded
                return dict(parse_qsl(raw))

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
