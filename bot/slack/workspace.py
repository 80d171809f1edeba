"""Links into the workspace: a thread's permalink, built from the workspace's URL (one auth.test per process)
instead of a chat.getPermalink per message — a Home lists ten threads, and Slack limits that method."""

from __future__ import annotations

import logging
import threading

from slack_sdk import WebClient

log = logging.getLogger(__name__)


class Workspace:
    """Knows the workspace's URL (asked once, when first needed) and links to messages with it."""

    def __init__(self, client: WebClient):
        self.client = client
        self._url: str | None = None
        self._lock = threading.Lock()

    def url(self) -> str | None:
        """Return the workspace's URL, like `https://example.slack.com/` (None when Slack did not say)."""
        with self._lock:
            if self._url is None:
                try:
                    answer = self.client.auth_test()
                    url = str(answer.get("url") or "")
                    self._url = url if url.startswith("https://") else ""
                except Exception as exc:
                    log.warning("could not ask Slack for the workspace's URL (%s)", type(exc).__name__)
                    return None
            return self._url or None

    def message_link(self, channel_id: str, message_ts: str | None) -> str | None:
        """Return a permalink to a top-level message (a thread's parent), or None when it cannot be built."""
        base = self.url()
        if base is None or not message_ts:
            return None
        return f"{base.rstrip('/')}/archives/{channel_id}/p{message_ts.replace('.', '')}"
