"""What every listener works with, and the one error handler that turns failures into private replies."""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import Respond

from bot.domain.errors import UserError
from bot.grants.admin import GrantService
from bot.grants.authority import Authority, NotCovered
from bot.metrics import Metrics
from bot.operations.clicks import Clicks
from bot.operations.inventory import Inventory
from bot.operations.opening import DuplicatePending, NothingToDo, Opening
from bot.runtime.ack_first import AckFirst
from bot.slack.links import Links
from bot.slack.listeners.rate_limit import CommandLimiter
from bot.slack.surfaces import Surfaces
from bot.slack.views import refusals
from bot.slack.views.format import escape
from bot.slack.views.message import Message

log = logging.getLogger(__name__)


@dataclass
class Context:
    """The services behind the listeners, the executors they hand work to, and the error handler."""

    opening: Opening
    clicks: Clicks
    authority: Authority
    grants: GrantService
    inventory: Inventory
    links: Links
    limiter: CommandLimiter
    lookups: Executor  # commands' lookups (Zenlayer, the database)
    decisions: Executor  # clicks: only the database, so they stay quick while Zenlayer is slow
    wake_engine: Callable[[], None]
    metrics: Metrics = field(default_factory=Metrics)
    ack_first: AckFirst = field(default_factory=AckFirst)
    surfaces: Surfaces | None = None  # the App Home, the start modal, type-ahead, the Workflow Builder step

    def later(self, executor: Executor, respond: Respond, work: Callable[..., None], *args: Any) -> None:
        """Run work(*args, respond) after the ack on vm-bot's executor; user errors become private replies, the
        rest a reference the user can quote (the one place failures are turned into replies)."""

        def run() -> None:
            self.ack_first.wait_turn()
            try:
                work(*args, respond)
            except Exception as exc:
                try:
                    self.reply_to_failure(exc, respond)
                except Exception:
                    # Nothing else would see this: an executor keeps a task's exception to itself.
                    log.exception("could not turn a failure into a reply")

        executor.submit(contextvars.copy_context().run, run)

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
