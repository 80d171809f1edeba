"""Posts a start request's progress to its Slack thread and keeps the confirmation message current."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk import WebClient

from bot.db.models import StartRequest
from bot.domain.lifecycle import State
from bot.domain.ports import StatusChange
from bot.slack import blocks


class SlackNotifier:
    """The domain's Notifier, backed by chat.postMessage (thread replies) and chat.update (the parent)."""

    def __init__(self, client: WebClient, approver_group: str | None = None):
        self.client = client
        self.approver_group = approver_group  # a <!subteam^…> mention, when one is configured

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
        self.client.chat_postMessage(
            channel=request.channel_id,
            thread_ts=request.message_ts,
            text=blocks.progress_reply(request, changes),
        )
        self.refresh(request)

    def finished(self, request: StartRequest) -> None:
        """Post the final reply (none for an expired confirmation) and refresh the parent."""
        if request.message_ts is None:
            return
        self.refresh(request)
        if request.state != State.EXPIRED:
            self.client.chat_postMessage(
                channel=request.channel_id, thread_ts=request.message_ts, text=blocks.final_reply(request)
            )
