"""The words stored in the database and shown to people, as enums (StrEnum: the stored values are the strings)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Outcome(StrEnum):
    """How the start of one instance ended."""

    RUNNING = "running"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"


class GrantAction(StrEnum):
    """What a grant lets its holder do with the instances it covers."""

    START = "start"
    APPROVE = "approve"
    ADMIN = "admin"


# The audit trail's actor for what vm-bot does on its own (expiry, recovery); otherwise a Slack user id.
SYSTEM_ACTOR: Final = "system"
