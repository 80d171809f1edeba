"""Links to other operations' messages, for replies that point at them."""

from __future__ import annotations

import dataclasses

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.operations.opening import Prepared


class Links:
    """Asks Slack for permalinks (best effort: a reply without a link still says what it means)."""

    def __init__(self, client: WebClient):
        self.client = client  # one that raises on 429 instead of sleeping: a link is never worth waiting for

    def permalink(self, channel_id: str, message_ts: str | None) -> str | None:
        """Return a link to a message, or None when Slack cannot give one."""
        if message_ts is None:
            return None
        try:
            return str(self.client.chat_getPermalink(channel=channel_id, message_ts=message_ts)["permalink"])
        except SlackApiError:
            return None

    def with_links(self, prepared: Prepared) -> Prepared:
        """Point each id another operation holds at that operation's thread, where Slack gives a link."""
        words = prepared.action.words
        for index, skipped in enumerate(prepared.skipped):
            if skipped.busy_with is not None:
                link = self.permalink(skipped.busy_with.channel_id, skipped.busy_with.message_ts)
                if link:
                    reason = f"already being {words.done}: {link}"
                    prepared.skipped[index] = dataclasses.replace(skipped, reason=reason)
        return prepared
