"""What Slack's Web API answers mean for us: which errors are permanent, and how long a 429 asks us to wait."""

from __future__ import annotations

from collections.abc import Mapping

from slack_sdk.errors import SlackApiError

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
        "restricted_action",
    }
)
# Why a confirmation cannot be posted in a channel at all (as opposed to a passing failure).
CANNOT_POST = frozenset({"not_in_channel", "channel_not_found", "is_archived", "restricted_action"})
# Errors after which the channel no longer takes our messages (or nothing of ours is accepted at all): nobody can
# be told there privately, so it is only logged and counted.
CHANNEL_GONE = frozenset(
    {
        "invalid_auth",
        "token_revoked",
        "account_inactive",
        "not_authed",
        "channel_not_found",
        "is_archived",
        "not_in_channel",
    }
)


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


def rate_limited(exc: SlackApiError) -> float | None:
    """Return the seconds a 429 asks us to wait, or None when the error is not a 429."""
    if exc.response is not None and exc.response.status_code == 429:
        return retry_after(exc.response.headers)
    return None
