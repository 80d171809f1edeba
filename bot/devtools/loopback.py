"""The lifecycle the Slack stand-ins share: a socketserver run from a background thread on loopback."""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any, Self, TypeVar

T = TypeVar("T")


class LoopbackServer:
    """Serves a socketserver from a daemon thread; `with` starts it and stops it."""

    thread_name = "loopback-server"

    def __init__(self, server: socketserver.ThreadingTCPServer | ThreadingHTTPServer):
        # Guards subclasses' state; they notify it whenever something a test may wait for happens.
        self._lock = threading.Condition()
        self._server = server
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Return the host and port the server listens on."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> Self:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, let subclasses close what is open, and release the port."""
        self._server.shutdown()
        self._close_connections()
        self._server.server_close()

    def go_away(self) -> None:
        """Take the server away as an outage does: stop answering and close the port (connections are refused)
        until come_back(); what it recorded is kept."""
        self._outage_address = self.address
        self.stop()

    def come_back(self) -> None:
        """End an outage: serve again on the same address."""
        server_class = type(self._server)
        handler: Any = self._server.RequestHandlerClass  # the one this server was made with
        self._server = server_class(self._outage_address, handler)
        self._server.daemon_threads = True
        self.start()

    def wait_for(self, predicate: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
        """Wait until predicate() returns something truthy (re-checked when notified), or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out waiting for {what}{self._timeout_detail()}")
                self._lock.wait(min(remaining, 0.2))

    def _timeout_detail(self) -> str:
        """Return what a timeout message should add about the server's state (nothing by default)."""
        return ""

    def _close_connections(self) -> None:
        """Close connections still open after the server stopped accepting (none by default)."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
