"""What the listeners post in Slack themselves: the confirmation and links to other requests (thread replies and
edits of the confirmation go through the outbox: bot/slack/sender.py)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

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


class SlackMessages:
    """Posts confirmations and finds links to other requests' messages."""

    def __init__(self, client: WebClient, approver_group: str | None = None):
        self.client = client
        self.approver_group = approver_group  # a <!subteam^…> mention, when one is configured

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


def slack_error(exc: SlackApiError) -> str:
    """Return Slack's error code from an API error."""
    return str(exc.response.get("error", "")) if exc.response is not None else ""
