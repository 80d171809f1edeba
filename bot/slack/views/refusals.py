"""Private answers when something is refused or cannot happen: grants, duplicates, clicks, posting in a channel."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from bot.domain.actions import ACTIONS
from bot.domain.durations import say_duration, typed_duration
from bot.grants.rules import Coverage
from bot.operations.click_model import ClickOutcome
from bot.operations.opening import Prepared
from bot.operations.records import OperationRecord
from bot.slack.views.confirmation import state_phrase
from bot.slack.views.format import REASON_LIMIT, REPLY_BUDGET, id_list, label, listing, mention, outside
from bot.slack.views.message import Message


def not_covered(action: str, coverage: Coverage) -> Message:
    """Explain which instances the user may not act on, and where they could."""

    def shown(instance_id: str) -> str:
        return label(instance_id, coverage.names.get(instance_id))

    elsewhere = [
        f"• {shown(instance_id)} can be {past(action)} from " + ", ".join(f"<#{c}>" for c in channels[:10])
        for instance_id, channels in coverage.channels_elsewhere.items()
    ]
    uncovered = ", ".join(listing([shown(i) for i in coverage.uncovered], budget=REPLY_BUDGET // 2))
    return Message(
        "\n".join(
            [
                f":no_entry: You may not {action} {uncovered}.",
                *listing(elsewhere, budget=REPLY_BUDGET // 2),
                f"Nothing was {past(action)}. Ask a vm-bot admin for a grant if you need one.",
            ]
        )
    )


def past(action: str) -> str:
    """Say a grant action done: "started", "stopped", "rebooted", "approved"."""
    power = ACTIONS.get(action)
    return power.words.done if power is not None else f"{action.removesuffix('e')}ed"


def run_too_long(cap_seconds: float) -> Message:
    """Refuse a time-boxed start longer than the grants covering it allow, naming the cap."""
    cap = say_duration(cap_seconds)
    return Message(
        f":no_entry: Your grants cap runs of these instances at {cap}. "
        f"Ask for `--for {typed_duration(cap_seconds)}` or less. Nothing was started."
    )


def nothing_to_do(prepared: Prepared) -> Message:
    """Explain why none of the ids can be acted on."""
    lines = [f"• {label(s.instance_id, s.name)} — {outside(s.reason, REASON_LIMIT)}" for s in prepared.skipped]
    return Message("\n".join([f":information_source: Nothing to {prepared.action.words.verb}:", *listing(lines)]))


def duplicate(permalink: str | None, verb: str = "start") -> Message:
    """Point the user at the confirmation they already have."""
    where = f"<{permalink}|your pending confirmation>" if permalink else "your pending confirmation in this channel"
    return Message(f":point_up: You already asked to {verb} these instances — use {where}.")


def post_unconfirmed(operation: OperationRecord) -> Message:
    """Tell the requester privately that Slack never confirmed the confirmation's post, so it was withdrawn."""
    words = operation.action.words
    return Message(
        f":warning: Slack did not confirm that it posted your confirmation in <#{operation.channel_id}>, so I "
        f"withdrew the request. If a confirmation shows up there anyway, its buttons do nothing. Nothing was "
        f"{words.done}: run `/vm {words.verb}` again."
    )


def confirmation_delayed(channel_id: str, seconds: float) -> Message:
    """Tell the requester privately that Slack is holding the channel back (429): the confirmation comes later."""
    return Message(
        f":snail: Slack is rate-limiting messages in <#{channel_id}> right now: your confirmation will appear there "
        f"in about {max(1, math.ceil(seconds))} s. Nothing happens until you confirm it."
    )


def cannot_post(operation: OperationRecord, error: str) -> Message:
    """Tell the requester privately why the confirmation could not be posted and how to fix it."""
    verb = operation.action.words.verb
    if operation.channel_id.startswith("D") or error == "channel_not_found":
        return Message(
            f":speech_balloon: I can't post a confirmation here. Use `/vm {verb}` in a channel I'm a member of "
            "(invite me there with `/invite @vm-bot`)."
        )
    return Message(
        f":wave: I'm not a member of <#{operation.channel_id}>, so I can't post the confirmation here. "
        "Invite me with `/invite @vm-bot` and run the command again."
    )


def click_refusal(
    outcome: ClickOutcome,
    operation: OperationRecord | None,
    coverage: Coverage | None,
    busy: Sequence[str] = (),
    links: Mapping[str, str | None] | None = None,
) -> Message:
    """Explain privately why a click did nothing."""
    return Message(_refusal_text(outcome, operation, coverage, busy, links or {}))


def _refusal_text(
    outcome: ClickOutcome,
    operation: OperationRecord | None,
    coverage: Coverage | None,
    busy: Sequence[str],
    links: Mapping[str, str | None],
) -> str:
    """Say why a click did nothing, in one sentence or two."""
    verb = operation.action.words.verb if operation else "start"
    done = operation.action.words.done if operation else "started"
    if outcome == ClickOutcome.NOT_REQUESTER and operation is not None:
        return f"Only {mention(operation.requester_id)} can confirm or cancel this request."
    if outcome == ClickOutcome.SELF_APPROVAL:
        return "This request needs a second person: someone else with an approve grant must approve it."
    if outcome == ClickOutcome.NOT_APPROVER:
        return f"You can't approve this request: your approve grants here don't cover {id_list(_uncovered(coverage))}."
    if outcome == ClickOutcome.NOT_ALLOWED and coverage is not None:
        return not_covered(verb, coverage).text
    if outcome == ClickOutcome.REQUESTER_NOT_ALLOWED and operation is not None and coverage is not None:
        ids = id_list(coverage.uncovered)
        return f"{mention(operation.requester_id)} may no longer {verb} {ids}, so this request cannot be approved."
    if outcome == ClickOutcome.NEEDS_APPROVAL:
        return (
            "Your grants now require a second person's approval for these instances. "
            f"Cancel this and run `/vm {verb}` again to ask for it."
        )
    if outcome == ClickOutcome.RUN_TOO_LONG:
        return _capped_now(coverage, verb, done)
    if outcome == ClickOutcome.BUSY:
        where = sorted({link for link in links.values() if link})
        by = "another request" + (f" ({', '.join(f'<{link}|see its thread>' for link in where[:3])})" if where else "")
        return f"{id_list(busy)} {'is' if len(busy) == 1 else 'are'} already being {done} by {by}; nothing was {done}."
    if outcome == ClickOutcome.LOOKUP_FAILED:
        return (
            f"I could not look these instances up at Zenlayer to check the grants again; nothing was {done}. Try again."
        )
    if outcome == ClickOutcome.EXPIRED:
        return f"This confirmation has expired; nothing was {done}. Run `/vm {verb}` again if you still need it."
    if outcome == ClickOutcome.WITHDRAWN:
        return (
            "This confirmation was withdrawn: Slack did not confirm that it was posted, so its buttons do nothing. "
            f"Nothing was {done}. Run `/vm {verb}` again if you still need it."
        )
    if outcome == ClickOutcome.WRONG_MESSAGE:
        return f"That button does not belong to this message; nothing was {done}."
    if outcome == ClickOutcome.ALREADY_DECIDED and operation is not None:
        return f"This request was already {state_phrase(operation)}; nothing more to do."
    return "This request no longer exists."


def _capped_now(coverage: Coverage | None, verb: str, done: str) -> str:
    """Say that the grants now cap runs below what a pending start asked for."""
    cap = coverage.run_cap if coverage is not None else None
    capped = f"at {say_duration(cap)}" if cap is not None else "shorter than this"
    return (
        f"The grants covering these instances now cap runs {capped}; nothing was {done}. "
        f"Cancel this and run `/vm {verb}` again (with `--for`) to ask for a run they allow."
    )


def _uncovered(coverage: Coverage | None) -> list[str]:
    """The ids a coverage leaves uncovered (none when there is no coverage)."""
    return coverage.uncovered if coverage else []


def decision_pending(reference: str) -> Message:
    """Tell a clicker whose click is recorded but could not be decided just now that it will be, shortly."""
    return Message(
        ":hourglass_flowing_sand: Your click is recorded, but I could not decide it just now; it will be decided "
        f"shortly and the message will show the outcome. Reference: `{reference}`"
    )
