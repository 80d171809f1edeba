"""Socket Mode without a deaf window: slack_sdk's built-in client, reconnecting make-before-break.

When Slack asks for a new connection (a `disconnect` message, reason `refresh_requested` or `warning`), slack_sdk's
built-in client reconnects on its one dispatching thread and, to close the old connection, waits for that
connection's reader, which sits in a recv with a 3 s timeout. For those ~3 s nothing is dispatched and no ack can be
sent, so a command typed then misses Slack's 3 s deadline. Here the new connection is opened and read from at once,
acks go over it, the dispatcher never waits for a reconnect, and the old connection is closed with a websocket
close handshake, so whatever it still carries is read before it goes. (bolt's websocket-client adapter closes the old
connection before the new one runs and loses such acks; its aiohttp and websockets adapters need an asyncio app.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import time
from queue import Empty
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.socket_mode.base_handler import BaseSocketModeHandler
from slack_bolt.adapter.socket_mode.internals import run_bolt_app, send_response
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.builtin.connection import Connection, ConnectionState
from slack_sdk.socket_mode.builtin.frame_header import FrameHeader
from slack_sdk.socket_mode.builtin.internals import _build_data_frame_for_sending
from slack_sdk.socket_mode.request import SocketModeRequest

log = logging.getLogger(__name__)

# How long a retired connection may take to finish its close handshake before it is cut.
RETIRE_SECONDS = 10.0
_NORMAL_CLOSURE = 1000


class GaplessSocketModeClient(SocketModeClient):
    """slack_sdk's built-in Socket Mode client whose reconnects never stop reading, dispatching or acking."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._sessions_lock = threading.Lock()
        self._retiring: list[tuple[Connection, ConnectionState]] = []
        super().__init__(*args, **kwargs)

    def connect(self) -> None:
        """Open a new connection and read it at once; only then retire the previous one."""
        if self.closed:
            return
        if self.wss_uri is None:
            self.wss_uri = self.issue_new_wss_url()
        session = Connection(
            url=self.wss_uri,
            logger=self.logger,
            ping_interval=self.ping_interval,
            trace_enabled=self.trace_enabled,
            all_message_trace_enabled=self.all_message_trace_enabled,
            ping_pong_trace_enabled=self.ping_pong_trace_enabled,
            receive_buffer_size=self.receive_buffer_size,
            proxy=self.proxy,
            proxy_headers=self.proxy_headers,
            on_message_listener=self._on_message,
            on_error_listener=self._on_error,
            on_close_listener=self._on_close,
            ssl_context=self.web_client.ssl,
        )
        session.connect()  # slack_sdk logs a failure and leaves the connection inactive
        if not session.is_active() and self.is_connected():
            session.close()
            raise ConnectionError("could not open a new Socket Mode connection; keeping the current one")
        state = ConnectionState()
        if self.closed:  # close() ran while this connection was being opened
            _cut(session, state)
            return
        with self._sessions_lock:
            old = (self.current_session, self.current_session_state)
            # From here on acks go over the new connection; the old one is still read until it closes.
            self.current_session, self.current_session_state = session, state
        self.auto_reconnect_enabled = self.default_auto_reconnect_enabled
        threading.Thread(target=self._read, args=(session, state), name="socket-mode-reader", daemon=True).start()
        if old[0] is not None:
            self._retire(*old)  # type: ignore[arg-type]
        if not self.current_app_monitor_started:
            self.current_app_monitor_started = True
            self.current_app_monitor.start()
        self.logger.info(f"A new session has been established (session id: {self.session_id()})")

    def _run_current_session(self) -> None:
        """Nothing to do: every connection is read by its own thread, started in connect()."""

    def _read(self, session: Connection, state: ConnectionState) -> None:
        """Read one connection until it closes."""
        try:
            session.run_until_completion(state)
        except Exception:
            log.exception("a Socket Mode connection stopped with an error")
        finally:
            with self._sessions_lock:
                self._retiring = [(s, st) for s, st in self._retiring if s is not session]

    def _retire(self, session: Connection, state: ConnectionState) -> None:
        """Start a close handshake on an old connection; its reader keeps reading until the server's close frame."""
        with self._sessions_lock:
            self._retiring.append((session, state))
        frame = _build_data_frame_for_sending(struct.pack("!H", _NORMAL_CLOSURE), FrameHeader.OPCODE_CLOSE)
        try:
            with session.sock_send_lock:
                if session.sock is not None:
                    session.sock.sendall(frame)
        except OSError:
            _cut(session, state)
            return
        timer = threading.Timer(RETIRE_SECONDS, _cut, args=(session, state))
        timer.daemon = True
        timer.start()

    def process_message(self) -> None:
        """Dispatch one message; a reconnect request is handled on its own thread so dispatching goes on meanwhile."""
        try:
            raw_message = self.message_queue.get(timeout=1)
        except Empty:
            return
        if raw_message is None:
            return
        message = json.loads(raw_message) if raw_message.startswith("{") else {}
        if message.get("type") == "disconnect":
            log.info("Slack asked for a new Socket Mode connection (%s)", message.get("reason"))
            threading.Thread(target=self._reconnect, name="socket-mode-reconnect", daemon=True).start()
            return
        self.message_workers.submit(self.run_message_listeners, message, raw_message)

    def _reconnect(self) -> None:
        """Open a new connection; if that fails the old one keeps serving, and its loss is retried as usual."""
        if self.closed:
            return
        try:
            self.connect_to_new_endpoint(force=True)
        except Exception:
            log.exception("could not open a new Socket Mode connection; staying on the current one")

    def close(self) -> None:
        """Stop at once: wake the dispatcher and every reader instead of waiting out their blocking reads."""
        self.closed = True
        self.auto_reconnect_enabled = False
        self.message_queue.put(None)
        with self._sessions_lock:
            sessions = [*self._retiring, (self.current_session, self.current_session_state)]
        for session, state in sessions:
            if session is not None:
                _cut(session, state)
        super().close()


def _cut(session: Connection, state: ConnectionState) -> None:
    """End a connection now: its reader stops at once and the socket is closed."""
    state.terminated = True
    sock = session.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    session.close()


class GaplessSocketModeHandler(BaseSocketModeHandler):
    """bolt's Socket Mode handler on the gapless client."""

    def __init__(self, app: App, app_token: str):
        self.app = app
        self.app_token = app_token
        self.client = GaplessSocketModeClient(
            app_token=app_token, logger=app.logger, web_client=app.client, proxy=app.client.proxy
        )
        self.client.socket_mode_request_listeners.append(self.handle)  # type: ignore[arg-type]

    def connect(self) -> None:
        """Open the connection to Slack (bolt's method, with a signature the type checker can hold us to)."""
        self.client.connect()

    def close(self) -> None:
        """Let go of the connection and everything it holds."""
        self.client.close()

    def handle(self, client: GaplessSocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        """Run the bolt app for one envelope and send its ack."""
        start = time.time()
        send_response(client, req, run_bolt_app(self.app, req), start)
