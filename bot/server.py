"""Serving: HTTP under waitress (or Socket Mode), the watcher thread, and a clean stop on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt.adapter.wsgi import SlackRequestHandler
from waitress.server import create_server

from bot.app import BotApp, create_app
from bot.config import Settings
from bot.db.migrate import upgrade
from bot.slack.socket_mode import GaplessSocketModeHandler

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HTTP_THREADS = 16
CONNECTION_LIMIT = 1000
IDLE_CONNECTION_SECONDS = 30

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def make_wsgi_app(bot: BotApp) -> WsgiApp:
    """Return the WSGI app: Slack at /slack/events, a health check at /healthz, 404 elsewhere."""
    slack = SlackRequestHandler(bot.app, path=EVENTS_PATH)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == "/healthz" and method in ("GET", "HEAD"):
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if path == EVENTS_PATH:
            return slack(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found\n"]

    return wsgi


class HttpServer:
    """The bot's HTTP endpoint under waitress, runnable in a background thread and stoppable."""

    def __init__(self, bot: BotApp, host: str = "0.0.0.0", port: int = 3000):  # noqa: S104 — Slack must reach it
        # A short loop timeout lets stop() take effect promptly instead of after waitress's default 1 s select.
        # Waitress stops accepting at 100 open connections and drops idle ones only after 120 s, so a proxy's
        # keep-alive pool (or anyone) could lock Slack out for minutes: allow more, and close idle ones sooner.
        self._server = create_server(
            make_wsgi_app(bot),
            host=host,
            port=port,
            threads=HTTP_THREADS,
            ident="vm-bot",
            asyncore_loop_timeout=0.1,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=IDLE_CONNECTION_SECONDS,
        )
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)

    def _serve(self) -> None:
        """Run waitress's loop; closing sockets from stop() may wake its select with EBADF, which is fine then."""
        try:
            self._server.run()
        except (OSError, ValueError):
            if not self._stopping:
                raise

    @property
    def url(self) -> str:
        """Return the base URL the server listens on."""
        return f"http://{self._server.effective_host}:{self._server.effective_port}"

    def start(self) -> HttpServer:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to timeout), then close every connection."""
        server = self._server
        self._stopping = True
        server.accepting = False
        server.close()
        deadline = time.monotonic() + timeout
        dispatcher = server.task_dispatcher
        while (dispatcher.active_count or dispatcher.queue) and time.monotonic() < deadline:
            time.sleep(0.02)
        while any(getattr(ch, "total_outbufs_len", 0) for ch in list(server._map.values())):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        dispatcher.shutdown(cancel_pending=True, timeout=max(0.1, deadline - time.monotonic()))
        from waitress import wasyncore

        wasyncore.close_all(server._map)
        self._thread.join(timeout=5)


class RunningBot:
    """A started bot: its Slack transport and its watcher; `stop()` shuts both down cleanly."""

    def __init__(self, bot: BotApp, *, host: str = "0.0.0.0", port: int | None = None):  # noqa: S104
        self.bot = bot
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=bot.watcher.run, args=(self._stop,), name="watcher", daemon=True)
        self.http: HttpServer | None = None
        self._socket_mode: GaplessSocketModeHandler | None = None
        if bot.settings.socket_mode:
            assert bot.settings.slack_app_token is not None
            self._socket_mode = GaplessSocketModeHandler(bot.app, bot.settings.slack_app_token.reveal())
        else:
            self.http = HttpServer(bot, host=host, port=bot.settings.port if port is None else port)

    def start(self) -> RunningBot:
        """Start serving Slack and watching requests."""
        self._watcher.start()
        if self.http is not None:
            self.http.start()
            log.info("vm-bot listening on %s%s", self.http.url, EVENTS_PATH)
        elif self._socket_mode is not None:
            self._socket_mode.connect()
            if self._socket_mode.client.is_connected():
                log.info("vm-bot connected to Slack in Socket Mode")
            else:
                # slack_sdk keeps retrying in the background; say so instead of claiming a connection.
                log.warning("vm-bot could not connect to Slack in Socket Mode yet; retrying in the background")
        return self

    def stop(self) -> None:
        """Stop taking requests, finish in-flight work, and leave watched requests for the next start."""
        if self.http is not None:
            self.http.stop()
        if self._socket_mode is not None:
            self._socket_mode.close()  # prompt: the client wakes its readers instead of waiting out their reads
        self._stop.set()
        self.bot.watcher.wake()
        self._watcher.join(timeout=30)
        self.bot.close()


def run(settings: Settings) -> int:
    """`vm-bot run`: migrate, serve until SIGTERM or SIGINT, then stop cleanly."""
    upgrade(settings.database_url)
    running = RunningBot(create_app(settings)).start()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    running.stop()
    log.info("vm-bot stopped")
    return 0
