"""A Slack WebClient that counts every Web API call by method and error."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from bot.metrics import NO_ERROR, Metrics


class MeteredWebClient(WebClient):
    """WebClient whose every call (all methods go through api_call) is counted in vmbot_slack_api_calls."""

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._metrics = metrics

    def api_call(self, api_method: str, *args: Any, **kwargs: Any) -> SlackResponse:
        try:
            response = super().api_call(api_method, *args, **kwargs)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown")) if exc.response is not None else "unknown"
            self._metrics.slack_calls.labels(api_method, error).inc()
            raise
        except Exception as exc:
            self._metrics.slack_calls.labels(api_method, type(exc).__name__).inc()
            raise
        self._metrics.slack_calls.labels(api_method, NO_ERROR).inc()
        return response
