"""The words stored in the database and shown to people, as enums (StrEnum: the stored values are the strings)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class GrantAction(StrEnum):
    """What a grant lets its holder do with the instances it covers."""

    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    APPROVE = "approve"
    ADMIN = "admin"


# A grant's channel that means every channel.
ANY_CHANNEL: Final = "*"

# The audit trail's actor for what vm-bot does on its own (expiry, recovery); otherwise a Slack user id.
SYSTEM_ACTOR: Final = "system"
