"""What the listeners post in Slack themselves: the confirmation and links to other requests (thread replies and
edits of the confirmation go through the outbox: bot/slack/sender.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.db.models import StartRequest
from bot.domain.starts import Prepared
from bot.slack import blocks

log = logging.getLogger(__name__)

# Errors that retrying cannot fix: the message is refused as it is, or its channel or our access to it is gone.
PERMANENT_ERRORS = frozenset(
    {
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_auth",
        "token_revoked",
        "account_inactive",
        "not_authed",
        "message_not_found",
        "cant_update_message",
        "channel_not_found",
        "is_archived",
        "not_in_channel",
        "thread_not_found",
        "edit_window_closed",
    }
)


# Why a confirmation cannot be posted in a channel at all (as opposed to a passing failure).
CANNOT_POST = frozenset({"not_in_channel", "channel_not_found", "is_archived", "restricted_action"})


class ChannelHeld(Exception):
    """Slack asked us (429) to leave a channel alone for a while (the listeners tell the user when to try again)."""


class SlackMessages:
    """Posts confirmations and finds links to other requests' messages."""

    def __init__(
        self,
        client: WebClient,
        approver_group: str | None = None,
        *,
        hold_on_429: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.approver_group = approver_group  # a <!subteam^…> mention, when one is configured
        # With hold_on_429 (for a client that does not sleep on 429), a 429 holds back only its channel until its
        # Retry-After has passed: calls to it raise ChannelHeld without reaching Slack, other channels go on.
        self.hold_on_429 = hold_on_429
        self._clock = clock
        self._held: dict[str, float] = {}
        self._held_lock = threading.Lock()

    def post_confirmation(self, request: StartRequest, approvers: Sequence[str]) -> str:
        """Post a request's confirmation (with its buttons) in its channel; return the message ts."""
        text, message_blocks = blocks.request_message(request, blocks.approver_phrase(approvers, self.approver_group))
        with self._channel(request.channel_id):
            posted = self.client.chat_postMessage(channel=request.channel_id, text=text, blocks=message_blocks)
        return str(posted["ts"])

    def held_for(self, channel_id: str) -> float:
        """Return the seconds Slack still wants a channel left alone after a 429 (0 when it is not held)."""
        with self._held_lock:
            until = self._held.get(channel_id, 0.0)
        return max(0.0, until - self._clock())

    def permalink(self, channel_id: str, message_ts: str | None) -> str | None:
        """Return a link to a message, or None when Slack cannot give one."""
        if message_ts is None:
            return None
        try:
            return str(self.client.chat_getPermalink(channel=channel_id, message_ts=message_ts)["permalink"])
        except SlackApiError:
            return None

    def with_links(self, prepared: Prepared) -> Prepared:
        """Point each id another request is starting at that request's thread, where Slack gives a link."""
        for index, skipped in enumerate(prepared.skipped):
            if skipped.busy_with is not None:
                link = self.permalink(skipped.busy_with.channel_id, skipped.busy_with.message_ts)
                if link:
                    prepared.skipped[index] = dataclasses.replace(skipped, reason=f"already being started: {link}")
        return prepared

    @contextlib.contextmanager
    def _channel(self, channel_id: str) -> Iterator[None]:
        """Refuse a call to a channel Slack told us to leave alone; start holding one back on its 429."""
        if not self.hold_on_429:
            yield
            return
        left = self.held_for(channel_id)
        if left > 0:
            raise ChannelHeld(f"{channel_id} is rate limited for another {left:.1f} s")
        try:
            yield
        except SlackApiError as exc:
            if exc.response is not None and exc.response.status_code == 429:
                seconds = retry_after(exc.response.headers)
                with self._held_lock:
                    self._held[channel_id] = max(self._held.get(channel_id, 0.0), self._clock() + seconds)
                log.warning("Slack rate-limited channel %s; holding it back for %.0f s", channel_id, seconds)
            raise


def retry_after(headers: object) -> float:
    """Read a 429's Retry-After (seconds); Slack always sends one, but never hold for less than 1 s."""
    value: object = None
    if isinstance(headers, Mapping):
        value = {str(k).lower(): v for k, v in headers.items()}.get("retry-after")
    if isinstance(value, list | tuple) and value:
        value = value[0]
    try:
        return max(1.0, float(str(value)))
    except ValueError:
        return 1.0


def slack_error(exc: SlackApiError) -> str:
    """Return Slack's error code from an API error."""
    return str(exc.response.get("error", "")) if exc.response is not None else ""
