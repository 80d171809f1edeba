"""The lifecycle the Slack stand-ins share: a socketserver run from a background thread on loopback."""

from __future__ import annotations

import socketserver
import threading
from typing import Self


class LoopbackServer:
    """Serves a socketserver from a daemon thread; `with` starts it and stops it."""

    thread_name = "loopback-server"

    def __init__(self, server: socketserver.ThreadingMixIn | socketserver.BaseServer):
        self._server = server
        self._server.daemon_threads = True  # type: ignore[union-attr]
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Return the host and port the server listens on."""
        host, port = self._server.server_address[:2]  # type: ignore[misc]
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

    def _close_connections(self) -> None:
        """Close connections still open after the server stopped accepting (none by default)."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
