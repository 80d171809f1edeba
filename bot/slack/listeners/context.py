"""What every listener works with, and the one error handler that turns failures into private replies."""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import BoltRequest, Respond

from bot.db.seen_requests import NotRecorded, SeenRequests, SignedRequest
from bot.domain.errors import UserError
from bot.grants.admin import GrantService
from bot.grants.authority import Authority, NotCovered
from bot.metrics import Metrics
from bot.operations.clicks import Clicks
from bot.operations.inventory import Inventory
from bot.operations.opening import DuplicatePending, NothingToDo, Opening, RunTooLong
from bot.operations.records import EXTENSION_SECONDS
from bot.operations.runs import RunBook
from bot.runtime.ack_first import AckFirst
from bot.slack.links import Links
from bot.slack.listeners.rate_limit import CommandLimiter
from bot.slack.surfaces import Surfaces
from bot.slack.views import refusals
from bot.slack.views.format import escape
from bot.slack.views.message import Message

log = logging.getLogger(__name__)


# The signed request being answered in this thread (None in Socket Mode): the work handed off after its ack runs only
# the first time those bytes (or that trigger_id) are seen, by any replica.
answering: contextvars.ContextVar[SignedRequest | None] = contextvars.ContextVar("answering", default=None)


def signed_request(request: BoltRequest) -> SignedRequest | None:
    """What identifies a signed HTTP request for the replay check (None in Socket Mode: no signature there, and the
    events arrive on the websocket vm-bot opened itself)."""
    signature = request.headers.get("x-slack-signature", [""])[0]
    timestamp = request.headers.get("x-slack-request-timestamp", [""])[0]
    if not signature or not (timestamp.isascii() and timestamp.isdigit()):
        return None
    body = request.body if isinstance(request.body, dict) else {}
    trigger_id = body.get("trigger_id")
    return SignedRequest(signature, trigger_id if isinstance(trigger_id, str) else None, int(timestamp))


@dataclass
class Context:
    """The services behind the listeners, the executors they hand work to, and the error handler."""

    opening: Opening
    clicks: Clicks
    authority: Authority
    grants: GrantService
    inventory: Inventory
    run_book: RunBook
    links: Links
    limiter: CommandLimiter
    lookups: Executor  # commands' lookups (Zenlayer, the database)
    decisions: Executor  # clicks: only the database, so they stay quick while Zenlayer is slow
    wake_engine: Callable[[], None]
    seen: SeenRequests | None = None  # signed requests accepted already (HTTP mode)
    extend_seconds: float = EXTENSION_SECONDS  # what a run's Extend adds (RUN_EXTEND_SECONDS)
    metrics: Metrics = field(default_factory=Metrics)
    ack_first: AckFirst = field(default_factory=AckFirst)
    surfaces: Surfaces | None = None  # the App Home, the start modal, type-ahead, the Workflow Builder step

    def later(
        self,
        executor: Executor,
        respond: Respond,
        work: Callable[..., None],
        *args: Any,
        on_replay: Callable[[], None] | None = None,
    ) -> None:
        """Run work(*args, respond) after the ack on vm-bot's executor, once per signed request (a replay runs
        nothing: `on_replay` instead); user errors become private replies, the rest a reference the user can quote
        (the one place failures are turned into replies)."""
        signed = answering.get()

        def run() -> None:
            self.ack_first.wait_turn()
            try:
                if signed is not None and not self._first_time(signed, respond):
                    if on_replay is not None:
                        on_replay()
                    return
                work(*args, respond)
            except Exception as exc:
                try:
                    self.reply_to_failure(exc, respond)
                except Exception:
                    # Nothing else would see this: an executor keeps a task's exception to itself.
                    log.exception("could not turn a failure into a reply")

        executor.submit(contextvars.copy_context().run, run)

    def _first_time(self, signed: SignedRequest, respond: Respond) -> bool:
        """True the first time these bytes are answered; a replay is logged and counted (and has no effect). A
        request the database could not record fails closed: it could be replayed, so nothing is done, and said."""
        if self.seen is None:
            return True
        try:
            if self.seen.first_time(signed):
                return True
        except NotRecorded as exc:
            self.metrics.http_refused.labels("unavailable").inc()
            log.warning("did nothing for a request the database could not record against replays: %s", exc)
            reply(respond, Message(":warning: I could not record your request, so nothing was done. Try again."))
            return False
        self.metrics.http_refused.labels("replay").inc()
        log.warning("ignored a replay of a request accepted before")
        return False

    def reply_to_failure(self, exc: Exception, respond: Respond) -> None:
        """Tell the user privately what went wrong; log unexpected failures with an id they can quote."""
        if isinstance(exc, UserError):
            message = self.user_error(exc)
        else:
            reference = uuid.uuid4().hex[:8]
            log.exception("unexpected failure (reference %s)", reference)
            message = Message(
                f":boom: Something went wrong on my side. Nothing more will happen. Reference: `{reference}`"
            )
        reply(respond, message)

    def user_error(self, exc: UserError) -> Message:
        """Render a user-facing error, with links where the operation points at another one."""
        if isinstance(exc, NotCovered):
            return refusals.not_covered(exc.action, exc.coverage)
        if isinstance(exc, NothingToDo):
            return refusals.nothing_to_do(self.links.with_links(exc.prepared))
        if isinstance(exc, DuplicatePending):
            return refusals.duplicate(self.links.permalink(exc.channel_id, exc.message_ts))
        if isinstance(exc, RunTooLong):
            return refusals.run_too_long(exc.cap_seconds)
        return Message(f":warning: {escape(str(exc))}")  # UserError messages are plain text


def reply(respond: Respond, message: Message, *, replace_original: bool = False) -> None:
    """Answer privately through the response_url; a reply that cannot be delivered is logged, never raised."""
    try:
        respond(**message.private(replace_original=replace_original))
    except Exception:
        log.exception("could not deliver a private reply")


def response_url(respond: Respond) -> str | None:
    """Return where a private answer to this request goes (a capability: never logged)."""
    return getattr(respond, "response_url", None)


def part(body: dict[str, Any], key: str) -> dict[str, Any]:
    """Return body[key] when it is an object (Slack's payloads are checked, never trusted to have a shape)."""
    value = body.get(key)
    return value if isinstance(value, dict) else {}
