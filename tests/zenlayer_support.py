"""Helpers shared by the Zenlayer client and simulator tests: credentials, hand-signed requests."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from bot.devtools.support import TEST_CREDENTIALS, free_port, wait_until
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.zenlayer import signing

__all__ = ["wait_until"]

ACCESS_KEY_ID = TEST_CREDENTIALS.zenlayer_access_key_id
ACCESS_KEY_SECRET = TEST_CREDENTIALS.zenlayer_access_key_secret
TOKEN = TEST_CREDENTIALS.zenlayer_token


def stopped_simulator(count: int) -> ZenlayerSimulator:
    """Return the simulator (verifying signatures, quick to change state) with stopped instances web-1 … web-COUNT."""
    return ZenlayerSimulator(
        boot_seconds=0.3,
        stop_seconds=0.3,
        reboot_seconds=0.3,
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        instances={f"web-{i}": "STOPPED" for i in range(1, count + 1)},
    )


def closed_port_url() -> str:
    """Return a loopback URL where nothing listens (a port just bound and released)."""
    return f"http://127.0.0.1:{free_port()}"


def host_of(url: str) -> str:
    """Return the Host header httpx sends for url."""
    return httpx.URL(url).netloc.decode("ascii")


def signed_headers(
    url: str,
    body: bytes,
    *,
    action: str = "DescribeInstancesStatus",
    key_id: str = ACCESS_KEY_ID,
    secret: str = ACCESS_KEY_SECRET,
    timestamp: int | None = None,
    host: str | None = None,
) -> dict[str, str]:
    """Build the headers of a ZC2-HMAC-SHA256 request, signed by hand (as another client would)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = signing.sign(secret, stamp, host or host_of(url), body)
    return {
        "X-ZC-Action": action,
        "X-ZC-Version": "2026-04-01",
        "X-ZC-Service": "vm",
        "X-ZC-Timestamp": stamp,
        "X-ZC-Signature-Method": "ZC2-HMAC-SHA256",
        "Content-Type": "application/json",
        "Authorization": signing.authorization_header(key_id, signature),
    }


# One pool for every hand-made request: building an httpx client (and its TLS context) costs ~20 ms each time.
_http = httpx.Client(timeout=5.0)


def post_api(url: str, body: bytes | Mapping[str, Any], headers: Mapping[str, str]) -> httpx.Response:
    """POST raw bytes (or a dict serialised SDK-style) to the simulator's API path."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _http.post(f"{url}/api/v2/vm", content=content, headers=dict(headers))


def signed_post(url: str, params: Mapping[str, Any], *, action: str = "DescribeInstancesStatus") -> httpx.Response:
    """POST params with a correct signature."""
    body = json.dumps(params).encode()
    return post_api(url, body, signed_headers(url, body, action=action))


class VmProxy:
    """The VM port passed through to a real client; a test subclass changes one call to script a fault."""

    def __init__(self, client: Any):
        self.client = client

    def start_instances(self, ids: Sequence[str]) -> str:
        return str(self.client.start_instances(ids))

    def stop_instances(self, ids: Sequence[str]) -> str:
        return str(self.client.stop_instances(ids))

    def reboot_instances(self, ids: Sequence[str]) -> str:
        return str(self.client.reboot_instances(ids))

    def describe_instances_status(self, ids: Sequence[str]) -> dict[str, str]:
        return dict(self.client.describe_instances_status(ids))

    def describe_instances(self, ids: Sequence[str]) -> Any:
        return self.client.describe_instances(ids)
