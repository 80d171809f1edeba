"""The simulator as a threaded HTTP server on loopback (and as a WSGI app, for in-process clients)."""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from bot.config import Secret
from bot.devtools.zenlayer_simulator.api import API_PATH, handle_api
from bot.devtools.zenlayer_simulator.auth import Credentials
from bot.devtools.zenlayer_simulator.control import CONTROL_PREFIX, handle_control
from bot.devtools.zenlayer_simulator.replies import Reply, error_reply, json_bytes
from bot.devtools.zenlayer_simulator.state import SimulatedCloud

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20


class ZenlayerSimulator(SimulatedCloud):
    """A threaded HTTP server that behaves like Zenlayer's VM API, with Python-side and HTTP controls."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        boot_seconds: float = 5.0,
        stop_seconds: float = 5.0,
        reboot_seconds: float = 5.0,
        access_key_id: str | None = None,
        access_key_secret: str | Secret | None = None,
        token: str | Secret | None = None,
        instances: Mapping[str, str | Mapping[str, Any]] | None = None,
        max_skew_seconds: float = 300,
        max_recorded_calls: int = 100_000,
        clock_offset_seconds: float = 0.0,
    ):
        self.credentials = Credentials.of(access_key_id, access_key_secret, token)
        super().__init__(
            boot_seconds=boot_seconds,
            stop_seconds=stop_seconds,
            reboot_seconds=reboot_seconds,
            instances=instances,
            max_recorded_calls=max_recorded_calls,
        )
        self._bind_host = host
        self._bind_port = port
        self.max_skew_seconds = max_skew_seconds
        # How far the cloud's clock is ahead of this host's (negative: behind): its Date header and the timestamp
        # check read it, so a skewed host clock can be played without touching the real one.
        self.clock_offset_seconds = clock_offset_seconds
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"ZenlayerSimulator({where}, instances={len(self.summaries())})"

    def start(self) -> ZenlayerSimulator:
        """Bind the port and serve in a background daemon thread; return self."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server_class = _Server6 if ":" in self._bind_host else _Server
        server = server_class((self._bind_host, self._bind_port), _Handler)
        server.simulator = self
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_until_stopped, name="zenlayer-simulator", daemon=True)
        self._thread.start()
        log.debug("zenlayer simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, wake hanging replies, close every connection; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.wake()
        if thread is not None:
            thread.join(timeout=5)
        server.server_close()
        server.close_connections()
        self._server = None
        self._thread = None

    def __enter__(self) -> ZenlayerSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port actually bound (useful with port=0)."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to give the client, e.g. http://127.0.0.1:54321."""
        host = self._bind_host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def now(self) -> float:
        """Return the cloud's time in Unix seconds: this host's plus clock_offset_seconds."""
        return time.time() + self.clock_offset_seconds

    def hang(self, seconds: float | None) -> None:
        """Delay a reply; stop() cuts the wait short."""
        if seconds:
            self._stopping.wait(seconds)

    def handle_api(self, headers: Message, body: bytes) -> Reply:
        """Answer one POST to the API path."""
        return handle_api(self, headers, body)

    def handle_control(self, method: str, path: str, body: bytes) -> Reply:
        """Answer one request under /_simulator/."""
        return handle_control(self, method, path, body)

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Serve one request as a WSGI app, so an in-process client (httpx.WSGITransport) needs no socket."""
        headers = Message()
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").title()] = value
        for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
            if environ.get(key):
                headers[name] = environ[key]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if not 0 <= length <= MAX_BODY_BYTES:
            reply = error_reply(413, "REQUEST_TOO_LARGE", f"body must be at most {MAX_BODY_BYTES} bytes")
        else:
            body = environ["wsgi.input"].read(length) if length else b""
            reply = _route(self, environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/", headers, body)
        try:
            reason = HTTPStatus(reply.status).phrase
        except ValueError:
            reason = ""
        response_headers = {"Content-Type": "application/json", **reply.headers}
        response_headers["Content-Length"] = str(len(reply.body))
        start_response(f"{reply.status} {reason}".strip(), list(response_headers.items()))
        return [reply.body]


def _route(simulator: ZenlayerSimulator, method: str, path: str, headers: Message, body: bytes) -> Reply:
    """Send a request to the API path or the control routes; 404 for anything else."""
    if path == API_PATH and method == "POST":
        return handle_api(simulator, headers, body)
    if path.startswith(CONTROL_PREFIX):
        return handle_control(simulator, method, path, body)
    payload = {"requestId": str(uuid.uuid4()), "code": "NOT_FOUND", "message": f"no route {path}"}
    return Reply(404, json_bytes(payload))


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that does not wait for hanging handlers and can drop open connections."""

    daemon_threads = True
    # A hanging (scripted) reply must not block stop(); the threads are daemons and get woken anyway.
    block_on_close = False
    simulator: ZenlayerSimulator

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._stop_requested = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        try:
            super().__init__(address, handler)
        except BaseException:
            self._wake_reader.close()
            self._wake_writer.close()
            raise

    def serve_until_stopped(self) -> None:
        """Accept connections until wake() is called; unlike serve_forever, stopping needs no poll interval."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._stop_requested:
                for key, _ in selector.select():
                    if key.fileobj is self.socket and not self._stop_requested:
                        self._handle_request_noblock()  # type: ignore[attr-defined]  # socketserver hook typeshed omits

    def wake(self) -> None:
        """Make serve_until_stopped return promptly."""
        self._stop_requested = True
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def track(self, connection: socket.socket, *, add: bool) -> None:
        """Remember or forget an open connection."""
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut down every keep-alive connection so idle handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Server6(_Server):
    """The same server on IPv6."""

    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """Routes HTTP requests to the simulator."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each reply would wait for a delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, by the cloud's clock."""
        return super().date_time_string(self.server.simulator.now() if timestamp is None else timestamp)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        """Read the body, route the request and write the reply."""
        simulator = self.server.simulator
        path = urlsplit(self.path).path
        body = self._read_body()
        if body is None:
            return
        reply = _route(simulator, self.command, path, self.headers, body)
        self._write(reply)

    def _read_body(self) -> bytes | None:
        """Read exactly Content-Length bytes; answer 411/413 and return None when that is impossible."""
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                self._write(error_reply(411, "MISSING_CONTENT_LENGTH", "send the body with Content-Length"))
                return None
            return b""
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._write(error_reply(413, "REQUEST_TOO_LARGE", f"body must be at most {MAX_BODY_BYTES} bytes"))
            return None
        return self.rfile.read(length)

    def _write(self, reply: Reply) -> None:
        """Send a reply; a client that already hung up is not an error."""
        try:
            self.send_response(reply.status)
            headers = {"Content-Type": "application/json", **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("simulator %s " + format, self.address_string(), *args)
