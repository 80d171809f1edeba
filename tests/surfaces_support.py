"""What the surface tests share: the audit trail as `vm-bot audit` shows it."""

from __future__ import annotations

import json
from typing import Any

from bot.db import audit
from bot.db.session import Database

REQUESTER = "U0REQUEST"
CAP = 4 * 3600.0


def audit_events(database_url: str, event: str) -> list[dict[str, Any]]:
    """Return the audit rows of one event, oldest first (what `vm-bot audit` shows)."""
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            rows = [e for e in reversed(audit.latest(session, limit=500)) if e.event == event]
            return [{"actor": e.actor, "request_id": e.request_id, **json.loads(e.detail)} for e in rows]
    finally:
        db.close()
