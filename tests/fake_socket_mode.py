"""A loopback stand-in for Slack's Socket Mode websocket endpoint, for the tests and for local demos.

It implements the server side of RFC 6455 that slack_sdk's clients use (handshake, masked client frames,
ping/pong, close) with the standard library only, so the package gains no dependency. Each connection is
greeted with `hello`, like Slack does; envelopes (`slash_commands`, `interactive`, `events_api`) go to the newest open
connection, and the acks the app sends back (`{"envelope_id": ..., "payload": ...}`) are recorded.
Point `FakeSlackWebApi.socket_mode_url` at `url` so `apps.connections.open` hands it out.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import socketserver
import struct
import threading
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO

from bot.devtools.loopback import LoopbackServer
from bot.devtools.slack_messages import message_error, message_text

_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONTINUATION, _TEXT, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x8, 0x9, 0xA
_MAX_FRAME_BYTES = 1 << 20
_GOING_AWAY, _PROTOCOL_ERROR, _UNSUPPORTED, _TOO_BIG = 1001, 1002, 1003, 1009


@dataclass(frozen=True)
class Ack:
    """An acknowledgement the app sent for one envelope; `payload` is None for a bare ack()."""

    envelope_id: str
    payload: dict[str, Any] | None

    @property
    def refused(self) -> str | None:
        """Return the error Slack would give for this ack's message (None for a bare ack or an acceptable one)."""
        if not self.payload or not ("text" in self.payload or "blocks" in self.payload):
            return None
        return message_error(self.payload)

    @property
    def text(self) -> str:
        """Return all human-visible text of the ack's payload (empty for a bare ack)."""
        return message_text(self.payload) if self.payload else ""


class _ProtocolError(Exception):
    """The client broke the websocket protocol; the connection is closed with `code`."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code


class _Connection:
    """One accepted websocket connection: frames are read by its handler thread and written under a lock."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._write_lock = threading.Lock()
        self.close_sent = False

    def send_frame(self, opcode: int, payload: bytes = b"") -> None:
        """Write one unmasked, unfragmented frame (servers never mask)."""
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
        with self._write_lock:
            if self.close_sent:
                raise ConnectionError("the connection is closing")
            if opcode == _CLOSE:
                self.close_sent = True
            self.sock.sendall(header + payload)

    def send_json(self, message: dict[str, Any]) -> None:
        """Send a JSON text message."""
        self.send_frame(_TEXT, json.dumps(message).encode("utf-8"))

    def close(self, code: int = _GOING_AWAY, reason: str = "") -> None:
        """Send a close frame (once) and stop reading and writing."""
        with contextlib.suppress(OSError):
            self.send_frame(_CLOSE, struct.pack("!H", code) + reason.encode("utf-8"))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class FakeSocketMode(LoopbackServer):
    """A threaded websocket server that pushes Socket Mode envelopes to the app and records its acks."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(socketserver.ThreadingTCPServer((host, port), self._handler_class()))
        self.acks: dict[str, Ack] = {}
        self.sent: list[dict[str, Any]] = []
        self.handshakes = 0
        self._open: list[_Connection] = []

    thread_name = "fake-socket-mode"

    @property
    def url(self) -> str:
        """Return the URL `apps.connections.open` should hand out: ws:// on loopback where Slack's is wss://."""
        host, port = self.address
        return f"ws://{host}:{port}/link/?ticket=fake-ticket&app_id=A0001"

    def _close_connections(self) -> None:
        """Close every connection with 1001 (going away), as Slack does when it stops a server."""
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            connection.close(_GOING_AWAY, "server stopping")

    # --- talking to the app ----------------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """Return how many connections are open now."""
        with self._lock:
            return len(self._open)

    def wait_connected(self, handshakes: int = 1, timeout: float = 10.0) -> None:
        """Wait until at least `handshakes` connections have been made in all and one is open."""
        self.wait_for(lambda: self.handshakes >= handshakes and self._open, timeout, f"{handshakes} connection(s)")

    def send(self, envelope_type: str, payload: dict[str, Any], *, accepts_response_payload: bool | None = None) -> str:
        """Push one envelope to the newest open connection and return its envelope_id."""
        envelope_id = str(uuid.uuid4())
        if accepts_response_payload is None:
            # Slash commands, modal submissions and type-ahead are answered in the ack; clicks, shortcuts and events
            # are not. (That Slack flags view_submission and block_suggestion so was not confirmed; bolt ignores it.)
            answered = envelope_type == "interactive" and payload.get("type") in ("view_submission", "block_suggestion")
            accepts_response_payload = envelope_type == "slash_commands" or answered
        envelope = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        with self._lock:
            if not self._open:
                raise ConnectionError("no app is connected to the fake Socket Mode endpoint")
            connection = self._open[-1]
            self.sent.append(envelope)
        connection.send_json(envelope)
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 10.0) -> Ack:
        """Wait for the app's ack of one envelope and return it."""
        return self.wait_for(lambda: self.acks.get(envelope_id), timeout, f"the ack of envelope {envelope_id}")

    def slash_command(self, payload: dict[str, Any], timeout: float = 10.0) -> Ack:
        """Send a `slash_commands` envelope (payload: the command's form fields) and return the ack."""
        return self.wait_ack(self.send("slash_commands", payload), timeout)

    def interactive(self, payload: dict[str, Any], timeout: float = 10.0) -> Ack:
        """Send an `interactive` envelope (payload: e.g. a block_actions body) and return the ack."""
        return self.wait_ack(self.send("interactive", payload), timeout)

    def events_api(self, payload: dict[str, Any], timeout: float = 10.0) -> Ack:
        """Send an `events_api` envelope (payload: an event_callback body) and return the ack."""
        return self.wait_ack(self.send("events_api", payload), timeout)

    def request_reconnect(self, reason: str = "refresh_requested") -> None:
        """Tell the newest connection to move to a new one, as Slack does every few hours."""
        with self._lock:
            connection = self._open[-1] if self._open else None
        if connection is None:
            raise ConnectionError("no app is connected to the fake Socket Mode endpoint")
        connection.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-socket-mode"}})

    # --- the websocket server --------------------------------------------------------------------------

    def _opened(self, sock: socket.socket) -> _Connection:
        with self._lock:
            self.handshakes += 1
            connection = _Connection(sock)
            self._open.append(connection)
            self._lock.notify_all()
        return connection

    def _closed(self, connection: _Connection) -> None:
        with self._lock:
            if connection in self._open:
                self._open.remove(connection)
            self._lock.notify_all()

    def _received(self, text: str) -> None:
        """Record an ack; anything else a client may send is not part of Socket Mode and is ignored."""
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and isinstance(message.get("envelope_id"), str):
            payload = message.get("payload")
            with self._lock:
                self.acks[message["envelope_id"]] = Ack(message["envelope_id"], payload or None)
                self._lock.notify_all()

    def _handler_class(self) -> type[socketserver.StreamRequestHandler]:
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    key = _read_handshake(self.rfile)
                    if key is None:
                        self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        return
                    self.wfile.write(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Accept: {_accept_value(key)}\r\n\r\n".encode()
                    )
                except OSError:
                    return
                connection = fake._opened(self.connection)
                try:
                    connection.send_json(
                        {
                            "type": "hello",
                            "num_connections": fake.open_connections,
                            "debug_info": {"host": "fake-socket-mode", "approximate_connection_time": 18060},
                            "connection_info": {"app_id": "A0001"},
                        }
                    )
                    self._serve(connection)
                except _ProtocolError as exc:
                    connection.close(exc.code, str(exc))
                except OSError:
                    pass  # the peer went away without a close frame, as slack_sdk's clients do
                finally:
                    fake._closed(connection)

            def _serve(self, connection: _Connection) -> None:
                """Read messages until the client closes: answer pings, record acks."""
                while True:
                    frame = _read_frame(self.rfile)
                    if frame is None:
                        return
                    fin, opcode, data = frame
                    if opcode == _PING:
                        connection.send_frame(_PONG, data)
                    elif opcode == _CLOSE:
                        if not connection.close_sent:
                            connection.send_frame(_CLOSE, data[:2])
                        return
                    elif not fin or opcode == _CONTINUATION:
                        # slack_sdk's clients send every message in one frame; so does this fake.
                        raise _ProtocolError(_UNSUPPORTED, "fragmented messages are not supported")
                    elif opcode == _TEXT:
                        fake._received(data.decode("utf-8", errors="replace"))

        return Handler


def _read_handshake(rfile: BinaryIO) -> str | None:
    """Read an HTTP upgrade request and return its Sec-WebSocket-Key, or None when it is not one."""
    request_line = rfile.readline(8192).decode("latin-1")
    headers: dict[str, str] = {}
    while True:
        line = rfile.readline(8192).decode("latin-1").strip()
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
        if len(headers) > 100:
            return None
    if not request_line.startswith("GET ") or headers.get("upgrade", "").lower() != "websocket":
        return None
    if headers.get("sec-websocket-version") != "13":
        return None
    return headers.get("sec-websocket-key") or None


def _accept_value(key: str) -> str:
    """Return the Sec-WebSocket-Accept answer to a Sec-WebSocket-Key (RFC 6455 fixes SHA-1 here)."""
    digest = hashlib.sha1((key + _WEBSOCKET_GUID).encode("ascii"), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def _read_frame(rfile: BinaryIO) -> tuple[bool, int, bytes] | None:
    """Read one client frame and return (fin, opcode, unmasked payload), or None at end of stream."""
    head = rfile.read(2)
    if len(head) < 2:
        return None
    fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
    masked, length = bool(head[1] & 0x80), head[1] & 0x7F
    if not masked:
        raise _ProtocolError(_PROTOCOL_ERROR, "client frames must be masked")
    if length == 126:
        length = struct.unpack("!H", _read_exactly(rfile, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", _read_exactly(rfile, 8))[0]
    if length > _MAX_FRAME_BYTES:
        raise _ProtocolError(_TOO_BIG, "frame too big")
    mask = _read_exactly(rfile, 4)
    data = _read_exactly(rfile, length)
    return fin, opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _read_exactly(rfile: BinaryIO, size: int) -> bytes:
    """Read exactly `size` bytes or raise ConnectionError when the stream ends first."""
    data = rfile.read(size)
    if len(data) < size:
        raise ConnectionError("connection closed mid-frame")
    return data
