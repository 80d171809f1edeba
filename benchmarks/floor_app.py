"""The floor of vm-bot's stack: a bare slack_bolt app whose `/vm` and buttons only call ack(), under the same waitress.

Run: ``python benchmarks/floor_app.py --port N --signing-secret S --slack-api-url URL [--process-before-response]``;
it serves `POST /slack/events` and `GET /healthz` on 127.0.0.1 until SIGTERM. The waitress settings are vm-bot's own
(`bot.server`), so the only difference from `vm-bot run` is everything vm-bot does besides acknowledging.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from slack_bolt import Ack, App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from waitress import wasyncore
from waitress.server import create_server

from bot import server as bot_server
from bot.slack import action_ids


def make_floor_app(signing_secret: str, slack_api_url: str, *, process_before_response: bool) -> App:
    """Return a bolt app whose only work is ack(), for `/vm` and for every confirmation button."""
    app = App(
        # bolt asks auth.test once, on the first request, as it does for vm-bot: point it at the same stand-in.
        client=WebClient(token="xoxb-floor", base_url=slack_api_url),  # noqa: S106 — a stand-in's token
        signing_secret=signing_secret,
        token_verification_enabled=False,
        process_before_response=process_before_response,
    )

    def only_ack(ack: Ack) -> None:
        ack()

    app.command("/vm")(only_ack)
    for action_id in action_ids.DECISION_ACTIONS:
        app.action(action_id)(only_ack)
    return app


def make_wsgi(app: App) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """Return the WSGI app: Slack at /slack/events, a health check at /healthz."""
    slack = SlackRequestHandler(app, path=bot_server.EVENTS_PATH)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        return slack(environ, start_response)

    return wsgi


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the floor app until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--signing-secret", required=True)
    parser.add_argument("--slack-api-url", required=True, help="the Slack Web API stand-in (bolt calls auth.test)")
    parser.add_argument("--process-before-response", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    app = make_floor_app(args.signing_secret, args.slack_api_url, process_before_response=args.process_before_response)
    server = create_server(
        make_wsgi(app),
        host="127.0.0.1",
        port=args.port,
        threads=bot_server.HTTP_THREADS,
        ident="vm-bot-floor",
        connection_limit=bot_server.CONNECTION_LIMIT,
        channel_timeout=bot_server.IDLE_CONNECTION_SECONDS,
    )

    def on_signal(signum: int, frame: object) -> None:
        # Closing every socket from the loop's own thread empties its map, which ends the loop at once.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))  # type: ignore[union-attr]

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.current_thread().name = "floor"
    with contextlib.suppress(OSError, ValueError):  # a socket closed under the loop at shutdown
        server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
