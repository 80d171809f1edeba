"""Work the surfaces' listeners hand off after their ack: there is no response_url to answer a failure through
(a Home, a shortcut, an event), so a failure is logged with a reference, and the work says what it can itself."""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Callable
from typing import Any

from bot.slack.surfaces import Surfaces

log = logging.getLogger(__name__)


def soon(surfaces: Surfaces, work: Callable[..., object], *args: Any) -> None:
    """Run work(*args) on the surfaces' pool, now (nothing it does waits behind a lookup at Zenlayer)."""

    def run() -> None:
        try:
            work(*args)
        except Exception:
            log.exception("a surface's work failed (reference %s)", uuid.uuid4().hex[:8])

    surfaces.pool.submit(contextvars.copy_context().run, run)


def require(surfaces: Surfaces | None) -> Surfaces:
    """Return the surfaces' services (create_app always wires them; a bare Context in a tool may not)."""
    if surfaces is None:
        raise RuntimeError("the Slack surfaces are not wired in this app")
    return surfaces
