"""The confirmation message — the thread's parent — rendered from an operation as it stands now."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.actions import Outcome
from bot.operations.records import InstanceRecord, OperationRecord
from bot.operations.states import State
from bot.slack import action_ids
from bot.slack.views import runs
from bot.slack.views.format import (
    CONFIRMATION_BUDGET,
    REASON_LIMIT,
    STATUS_EMOJI,
    WORD_LIMIT,
    Block,
    address,
    context,
    count,
    label,
    listing,
    mention,
    outside,
    section,
    sections,
    slack_date,
)
from bot.slack.views.message import Message


def status_hint(operation: OperationRecord) -> str:
    """Point from a summarised list at the command that shows every instance of the operation (page by page)."""
    return f" — `/vm status --request {operation.id}` for all"


def approver_phrase(approvers: Sequence[str], group_mention: str | None) -> str:
    """Name who can approve: the configured group, else the people whose grants allow it."""
    if group_mention:
        return group_mention
    if approvers:
        return " or ".join(mention(u) for u in approvers[:10]) + (" or another approver" if len(approvers) > 10 else "")
    return "someone with an approve grant"


def confirmation(operation: OperationRecord, group_mention: str | None = None) -> Message:
    """Render the confirmation (the thread parent) from the operation's current state."""
    words = operation.action.words
    headline = f"{mention(operation.requester_id)} wants to {words.verb} {count(len(operation.included))}"
    pending = operation.state == State.PENDING
    flag = " — *needs approval*" if operation.needs_approval and pending else ""
    blocks: list[Block] = [section(f"{words.emoji} {headline}{flag}")]
    lines = [instance_line(operation, i) for i in operation.instances]
    blocks.extend(sections(listing(lines, budget=CONFIRMATION_BUDGET, hint=status_hint(operation))))
    time_box = runs.run_line(operation)
    if time_box is not None:
        blocks.append(context(time_box))
    expires = slack_date(operation.expires_at)
    if pending and operation.needs_approval:
        who = approver_phrase(operation.approvers, group_mention)
        blocks.append(context(f"Waiting for {who} to approve. Expires {expires}."))
        blocks.append(_buttons(operation, approval=True))
    elif pending:
        blocks.append(context(f"Only {mention(operation.requester_id)} can confirm. Expires {expires}."))
        blocks.append(_buttons(operation, approval=False))
    else:
        blocks.append(context(decision_line(operation)))
        progress = progress_line(operation)
        if progress:
            blocks.append(context(progress))
    return Message(headline, blocks)


def _buttons(operation: OperationRecord, *, approval: bool) -> Block:
    """Return the action buttons; the value is only the operation id, everything else is read from the database."""
    if approval:
        specs = [
            ("Approve", action_ids.APPROVE, "primary"),
            ("Reject", action_ids.REJECT, "danger"),
            ("Cancel", action_ids.CANCEL, None),
        ]
    else:
        specs = [(operation.action.words.button, action_ids.START, "primary"), ("Cancel", action_ids.CANCEL, "danger")]
    elements = []
    for text, action_id, style in specs:
        button: Block = {
            "type": "button",
            "text": {"type": "plain_text", "text": text},
            "action_id": action_id,
            "value": str(operation.id),
        }
        if style:
            button["style"] = style
        elements.append(button)
    return {"type": "actions", "block_id": action_ids.CONFIRM_BLOCK, "elements": elements}


def instance_line(operation: OperationRecord, instance: InstanceRecord) -> str:
    """Describe one instance as it currently stands: name, id, zone, and its address once RUNNING."""
    name = label(instance.instance_id, instance.name, instance.zone)
    if not instance.included:
        return f"• {name} — {outside(instance.skip_reason or 'skipped', REASON_LIMIT)}, skipped"
    status = instance.last_status or instance.initial_status
    emoji = STATUS_EMOJI.get(status or "", ":large_orange_circle:")
    shown = f"{emoji} {outside(status, WORD_LIMIT)}" if status else ":grey_question: not found"
    if instance.outcome == Outcome.SKIPPED:
        return f"• {name} — {outside(instance.skip_reason or 'skipped', REASON_LIMIT)}"
    if instance.outcome == Outcome.FAILED and instance.skip_reason:
        return f"• {name} — :x: {outside(instance.skip_reason, REASON_LIMIT)}"
    return f"• {name} — {shown}{address(instance.ip_address, status)}"


def decision_line(operation: OperationRecord) -> str:
    """Say who decided and when, or why nobody did."""
    state = operation.state
    done = operation.action.words.done
    when = slack_date(operation.decided_at) if operation.decided_at else ""
    who = mention(operation.decided_by) if operation.decided_by else ""
    if state == State.EXPIRED:
        return f":hourglass: Expired {slack_date(operation.expires_at)} — nothing was {done}."
    if state == State.WITHDRAWN:
        return (
            f":no_entry_sign: Withdrawn ({outside(operation.error or 'not posted', REASON_LIMIT)}) — these buttons "
            f"do nothing and nothing was {done}. Run `/vm {operation.action.words.verb}` again if you still need it."
        )
    if state in (State.CANCELLED, State.REJECTED):
        verb = "Rejected" if state == State.REJECTED else "Cancelled"
        return f":x: {verb} by {who} {when} — nothing was {done}."
    verb = "Approved" if operation.needs_approval else "Confirmed"
    return f":white_check_mark: {verb} by {who} {when}."


def progress_line(operation: OperationRecord) -> str | None:
    """Summarise how far the operation has come, for the parent message."""
    state = operation.state
    goal = operation.action.goal
    included = operation.included
    reached = sum(1 for i in included if i.outcome == Outcome.REACHED)
    if state in (State.APPROVED, State.STARTING):
        return f":hourglass_flowing_sand: {operation.action.words.doing}…"
    if state == State.WATCHING:
        return f":hourglass_flowing_sand: {reached}/{len(included)} {goal} — details in the thread"
    if state == State.DONE:
        return f":large_green_circle: All {len(included)} {goal}{took(operation)}"
    if state == State.FAILED:
        return f":warning: {reached}/{len(included)} {goal} — see the thread for what failed"
    if state == State.TIMED_OUT:
        return f":warning: Timed out with {reached}/{len(included)} {goal} — see the thread"
    return None


def state_phrase(operation: OperationRecord) -> str:
    """Say in a word where an operation stands, for replies about it."""
    return {
        State.CANCELLED: "cancelled",
        State.REJECTED: "cancelled",
        State.WITHDRAWN: "cancelled",
        State.EXPIRED: "expired",
        State.APPROVED: "approved",
        State.STARTING: "approved",
        State.WATCHING: "approved",
        State.DONE: "completed",
        State.FAILED: "completed",
        State.TIMED_OUT: "completed",
    }.get(operation.state, operation.state.value)


def took(operation: OperationRecord) -> str:
    """Say how long the operation took from its first call to its end (empty when unknown)."""
    end = operation.finished_at or operation.as_of
    if operation.started_at is None or end is None:
        return ""
    return f" in {duration((end - operation.started_at).total_seconds())}"


def duration(seconds: float) -> str:
    """Say a duration the way the thread does: "2 s", "1 min 5 s"."""
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
