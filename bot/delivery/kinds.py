"""What the outbox's rows ask for (bot/delivery/outbox.py), apart so that what builds on the outbox can name them."""

from __future__ import annotations

import enum

# What Session.info carries when a transaction enqueued something (Database wakes its listeners on commit).
TOPIC = "outbox"


class Kind(enum.StrEnum):
    """What a row asks the courier to do."""

    CONFIRM = "confirm"  # post the confirmation (the thread parent) in the channel
    PROGRESS = "progress"  # reply in the thread with the statuses not yet told
    FINAL = "final"  # reply in the thread with the outcome, and mark it told
    REFRESH = "refresh"  # re-render the confirmation from the operation's state
    REMINDER = "reminder"  # a time-boxed run's stop is near: remind its requester in the thread
    HOME = "home"  # publish a person's App Home (a row of theirs, not an operation's: bot/delivery/surfaces.py)
    STEP = "step"  # complete the Workflow Builder step that opened the operation, now that it has ended
