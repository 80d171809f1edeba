"""One `/vm` command as the verbs see it, and the shape of a verb's acknowledgement."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from slack_bolt import Ack, Respond

from bot.slack.listeners.commands.parse import Command
from bot.slack.listeners.context import Context


@dataclass(frozen=True)
class Invocation:
    """Who typed the command, where, and what it says."""

    user_id: str
    channel_id: str
    parsed: Command
    trigger_id: str = ""  # what a modal opened for this command needs (within 3 s)


# A verb acknowledges its command (and hands slow work to an executor); it returns the outcome for the metrics.
Verb = Callable[[Context, Ack, Invocation, Respond], str]
