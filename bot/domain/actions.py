"""The one table of power actions: what each calls at Zenlayer, the status it needs, the status it ends in, its words.

Adding an action is a new entry here (and its words in the views): the engine, the grants and the conversation are
the same for every action.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.domain.vocabulary import GrantAction

RUNNING = "RUNNING"
STOPPED = "STOPPED"
# Statuses from which an instance will not reach any goal by itself (anything unknown counts as still changing).
_GONE = frozenset({"CREATE_FAILED", "RELEASING", "RECYCLE", "RECYCLING"})


class Outcome(StrEnum):
    """How the action on one instance ended."""

    REACHED = "reached"  # the action's goal status (RUNNING for a start)
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Words:
    """How people read an action: `/vm start`, "wants to start", "Starting…", "started", the Start button."""

    verb: str  # start
    doing: str  # Starting
    done: str  # started
    button: str  # Start
    emoji: str  # the confirmation's headline emoji
    requested: str  # the first thread reply's headline, e.g. "Start requested"


@dataclass(frozen=True)
class Action:
    """One power action: its grant, its Zenlayer call (a VmApi method), and the instance statuses it goes through."""

    name: str  # stored in operations.action
    grant: GrantAction  # the grant action that allows it
    call: str  # the VmApi method that performs it on at most 100 ids, returning Zenlayer's requestId
    zenlayer_action: str  # the Zenlayer action name, for the audit trail
    needs: str  # the status an instance must be in to be acted on
    goal: str  # the status that ends the action on an instance
    off_path: frozenset[str]  # statuses from which the goal will not come by itself
    words: Words

    def applied(self, status: str) -> bool:
        """True when an instance's status shows a call of unknown outcome was applied (it left `needs`)."""
        return status != self.needs

    @property
    def visible(self) -> bool:
        """True when an instance's status alone tells whether the call took effect (it ends elsewhere than it
        began); a reboot ends where it began, so a call of unknown outcome is never repeated blindly for it."""
        return self.goal != self.needs


START = Action(
    name="start",
    grant=GrantAction.START,
    call="start_instances",
    zenlayer_action="StartInstances",
    needs=STOPPED,
    goal=RUNNING,
    off_path=_GONE | {"STOPPING"},
    words=Words("start", "Starting", "started", "Start", ":rocket:", "Start requested"),
)

STOP = Action(
    name="stop",
    grant=GrantAction.STOP,
    call="stop_instances",  # always a graceful shutdown (forceShutdown false)
    zenlayer_action="StopInstances",
    needs=RUNNING,
    goal=STOPPED,
    off_path=_GONE | {"BOOTING"},
    words=Words("stop", "Stopping", "stopped", "Stop", ":stop_button:", "Stop requested"),
)

REBOOT = Action(
    name="reboot",
    grant=GrantAction.REBOOT,
    call="reboot_instances",
    zenlayer_action="RebootInstances",
    needs=RUNNING,
    goal=RUNNING,
    off_path=_GONE | {"STOPPING", "STOPPED"},
    words=Words("reboot", "Rebooting", "rebooted", "Reboot", ":arrows_counterclockwise:", "Reboot requested"),
)

ACTIONS: dict[str, Action] = {action.name: action for action in (START, STOP, REBOOT)}


def action_named(name: str) -> Action:
    """Return the action stored under name (KeyError for an unknown one: the database holds only these)."""
    return ACTIONS[name]
