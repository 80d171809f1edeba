"""Serving: HTTP under waitress (or Socket Mode), the engine and sender threads, and a clean stop on SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from bot.app import BotApp, create_app
from bot.config import Settings
from bot.metrics import Metrics
from bot.slack.socket_mode import GaplessSocketModeHandler
from bot.startup import StartupError, preflight
from bot.web import EVENTS_PATH, WsgiApp, make_wsgi_app

log = logging.getLogger(__name__)

HTTP_THREADS = 16
CONNECTION_LIMIT = 1000
IDLE_CONNECTION_SECONDS = 30

__all__ = ["EVENTS_PATH", "HttpServer", "RunningBot", "WsgiApp", "make_wsgi_app", "run"]


def _counting_channel(metrics: Metrics) -> type:
    """Return waitress's connection class, counting and logging the requests waitress refuses before the app sees
    them (a malformed or too large Content-Length, oversized headers) as the app counts the ones it refuses."""

    class CountedRefusal(ErrorTask):  # type: ignore[misc]  # waitress ships no type hints
        def execute(self) -> None:
            error = self.request.error
            if error.code < 500:  # a 500 is the app's own failure, already logged with its traceback
                size = error.code in (413, 431)
                reason = "too_large" if size else "bad_length" if "Content-Length" in error.body else "malformed"
                metrics.http_refused.labels(reason).inc()
                log.warning("refused a request to %s: %s", self.request.path or "?", error.body)
            super().execute()

    class CountingChannel(HTTPChannel):  # type: ignore[misc]  # waitress ships no type hints
        error_task_class = CountedRefusal

    return CountingChannel


class HttpServer:
    """The bot's HTTP endpoint under waitress, runnable in a background thread and stoppable."""

    def __init__(self, bot: BotApp, host: str = "0.0.0.0", port: int = 3000):  # noqa: S104 — Slack must reach it
        # Waitress stops accepting at 100 open connections and drops idle ones only after 120 s, so a proxy's
        # keep-alive pool (or anyone) could lock Slack out for minutes: allow more, and close idle ones sooner.
        # The select loop keeps waitress's default 1 s timeout: it casts the timeout to int, so anything shorter
        # becomes 0 and the loop spins a whole core while idle. stop() wakes the loop with its trigger instead.
        self._server = create_server(
            make_wsgi_app(bot),
            host=host,
            port=port,
            threads=HTTP_THREADS,
            ident="vm-bot",
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=IDLE_CONNECTION_SECONDS,
            # Waitress's default is 1 GiB, spooled before the app sees it: refuse oversized bodies (413) up front.
            max_request_body_size=bot.settings.max_body_bytes,
        )
        self._server.channel_class = _counting_channel(bot.metrics)
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
        # Sockets are closed in the loop's own thread (the trigger wakes its select at once): closing them from
        # here would leave the loop waiting in select on a dead descriptor until its timeout.
        self._in_loop(self._stop_accepting)
        deadline = time.monotonic() + timeout
        dispatcher = server.task_dispatcher
        while (dispatcher.active_count or dispatcher.queue) and time.monotonic() < deadline:
            time.sleep(0.02)
        while any(getattr(ch, "total_outbufs_len", 0) for ch in list(server._map.values())):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        dispatcher.shutdown(cancel_pending=True, timeout=max(0.1, deadline - time.monotonic()))
        self._in_loop(lambda: wasyncore.close_all(server._map))  # an empty map ends the loop
        self._thread.join(timeout=5)

    def _in_loop(self, thunk: Callable[[], object]) -> None:
        """Run thunk in the loop's thread (its trigger wakes the select at once), or here once the loop has ended."""
        try:
            self._server.trigger.pull_trigger(thunk)
        except OSError:  # the trigger is closed: the loop is over or ending, so nothing else touches the map
            thunk()

    def _stop_accepting(self) -> None:
        """Close the listening socket (run in the loop thread); open connections stay until they are done."""
        self._server.accepting = False
        wasyncore.dispatcher.close(self._server)


class RunningBot:
    """A started bot: its Slack transport, its engine and its sender; `stop()` shuts them down cleanly."""

    def __init__(self, bot: BotApp, *, host: str | None = None, port: int | None = None):
        self.bot = bot
        host = bot.settings.host if host is None else host
        port = bot.settings.port if port is None else port
        self._stop = threading.Event()
        self._engine = threading.Thread(target=bot.engine.run, args=(self._stop,), name="engine", daemon=True)
        self._sender = threading.Thread(target=bot.sender.run, args=(self._stop,), name="sender", daemon=True)
        self.http: HttpServer | None = None
        self._socket_mode: GaplessSocketModeHandler | None = None
        if bot.settings.socket_mode:
            assert bot.settings.slack_app_token is not None
            self._socket_mode = GaplessSocketModeHandler(bot.app, bot.settings.slack_app_token.reveal())
        # In Socket Mode too: /healthz, /readyz and /metrics, so orchestrators probe either mode the same way.
        self.http = HttpServer(bot, host=host, port=port)

    def start(self) -> RunningBot:
        """Start serving Slack, moving operations along and sending what they owe Slack."""
        self._sender.start()
        self._engine.start()
        if self.http is not None:
            self.http.start()
            if self._socket_mode is None:
                log.info("vm-bot listening on %s%s", self.http.url, EVENTS_PATH)
            else:
                log.info("vm-bot serving /healthz, /readyz and /metrics on %s", self.http.url)
        if self._socket_mode is not None:
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
        self.bot.engine.wake()
        self.bot.sender.wake()
        self._engine.join(timeout=30)
        self._sender.join(timeout=30)
        self.bot.close()


def run(settings: Settings) -> int:
    """`vm-bot run`: check and migrate, serve until SIGTERM or SIGINT, then stop cleanly."""
    try:
        preflight(settings)
    except StartupError as exc:
        print(f"vm-bot cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        running = RunningBot(create_app(settings))
    except OSError as exc:
        print(
            f"vm-bot cannot start: cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}); "
            "choose another PORT or HOST, or stop what is using it",
            file=sys.stderr,
        )
        return 2
    running.start()
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
