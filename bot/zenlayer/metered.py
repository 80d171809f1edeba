"""An httpx transport that counts Zenlayer calls by action and error code, with their latency."""

from __future__ import annotations

import json
import time

import httpx

from bot.metrics import NO_ERROR, Metrics


class MeteredTransport(httpx.BaseTransport):
    """Wraps the real transport; every HTTP attempt is one vmbot_zenlayer_calls sample."""

    def __init__(self, inner: httpx.BaseTransport, metrics: Metrics):
        self._inner = inner
        self._metrics = metrics

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        action = request.headers.get("X-ZC-Action", "unknown")
        started = time.monotonic()
        try:
            response = self._inner.handle_request(request)
            response.read()  # Zenlayer's replies are small; the client reads them whole anyway
        except httpx.TimeoutException:
            self._count(action, "TIMEOUT", started)
            raise
        except httpx.TransportError:
            self._count(action, "NETWORK_ERROR", started)
            raise
        self._count(action, _error_code(response), started)
        return response

    def _count(self, action: str, error: str, started: float) -> None:
        """Record one attempt."""
        self._metrics.zenlayer_calls.labels(action, error).inc()
        self._metrics.zenlayer_seconds.labels(action).observe(time.monotonic() - started)

    def close(self) -> None:
        self._inner.close()


def _error_code(response: httpx.Response) -> str:
    """Return the reply's error code, HTTP_<status> when it has none, or NO_ERROR for a success."""
    if response.status_code == 200:
        return NO_ERROR
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        code = None
    return code if isinstance(code, str) and code else f"HTTP_{response.status_code}"
