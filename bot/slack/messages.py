"""Every message vm-bot posts or edits in Slack: the confirmation, its thread, and links to other requests."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.db.models import StartRequest
from bot.domain.lifecycle import State
from bot.domain.ports import StatusChange
from bot.domain.starts import Prepared
from bot.slack import blocks

log = logging.getLogger(__name__)

# Errors that retrying cannot fix: the message, its channel or our access to it is gone.
PERMANENT_ERRORS = frozenset(
    {
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


class SlackMessages:
    """Posts and edits vm-bot's messages; the domain's Notifier (thread replies, confirmation edits)."""

    def __init__(self, client: WebClient, approver_group: str | None = None, *, broadcast_success: bool = False):
        self.client = client
        self.approver_group = approver_group  # a <!subteam^…> mention, when one is configured
        self.broadcast_success = broadcast_success

    def post_confirmation(self, request: StartRequest, approvers: Sequence[str]) -> str:
        """Post a request's confirmation (with its buttons) in its channel; return the message ts."""
        text, message_blocks = blocks.request_message(request, blocks.approver_phrase(approvers, self.approver_group))
        posted = self.client.chat_postMessage(channel=request.channel_id, text=text, blocks=message_blocks)
        return str(posted["ts"])

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

    def refresh(self, request: StartRequest) -> None:
        """Re-render the confirmation message from the request's current state."""
        if request.message_ts is None:
            return
        text, message_blocks = blocks.request_message(request, blocks.approver_phrase([], self.approver_group))
        self.client.chat_update(channel=request.channel_id, ts=request.message_ts, text=text, blocks=message_blocks)

    def progress(self, request: StartRequest, changes: Sequence[StatusChange]) -> None:
        """Reply in the thread with what changed, then refresh the parent's progress line."""
        if request.message_ts is None:
            return
        self._reply(request, blocks.progress_reply(request, changes))
        self._refresh_best_effort(request)

    def finished(self, request: StartRequest) -> None:
        """Post the final reply (none for an expired confirmation) and refresh the parent.

        Failures and timeouts are also shown in the channel, so they are not missed in a thread; success too
        when BROADCAST_SUCCESS is set.
        """
        if request.message_ts is None:
            return
        if request.state != State.EXPIRED:
            broadcast = request.state != State.DONE or self.broadcast_success
            self._reply(request, blocks.final_reply(request), broadcast=broadcast)
        self._refresh_best_effort(request)

    def _reply(self, request: StartRequest, text: str, *, broadcast: bool = False) -> None:
        """Post in the request's thread; a permanent failure is logged and dropped so the request can end."""
        assert request.message_ts is not None
        try:
            self.client.chat_postMessage(
                channel=request.channel_id, thread_ts=request.message_ts, text=text, reply_broadcast=broadcast
            )
        except SlackApiError as exc:
            if slack_error(exc) not in PERMANENT_ERRORS:
                raise
            log.warning(
                "cannot reply in the thread of request %s (%s); going on without it", request.id, slack_error(exc)
            )

    def _refresh_best_effort(self, request: StartRequest) -> None:
        """Update the parent after a reply went out; never let it undo or repeat the reply."""
        try:
            self.refresh(request)
        except SlackApiError as exc:
            log.warning("could not update the confirmation of request %s (%s)", request.id, slack_error(exc))


def slack_error(exc: SlackApiError) -> str:
    """Return Slack's error code from an API error."""
    return str(exc.response.get("error", "")) if exc.response is not None else ""
