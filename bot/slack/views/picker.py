"""Picking instances and showing their status: `/vm list`, `/vm status`, and a name several instances share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from bot.domain.actions import START, Action
from bot.domain.ports import InstanceInfo
from bot.operations.inventory import Listing
from bot.slack import action_ids
from bot.slack.views.format import (
    PAGE_LINES,
    STATUS_EMOJI,
    WORD_LIMIT,
    Block,
    address,
    code,
    context,
    count,
    label,
    no_such_page_text,
    outside,
    page_footer,
    pages_of,
    quoted,
    section,
    sections,
    shorten,
)
from bot.slack.views.message import Message

PICK_PER_BLOCK = 10  # Slack's limit of options in one checkboxes element


MAX_PICKABLE = 80  # eight checkbox groups; namesakes beyond this are narrowed by typing an id


OPTION_TEXT_LIMIT = 75  # Slack's limit for an option's text and description


def _option(info: InstanceInfo) -> Block:
    """Return a checkbox option for an instance: its name, then id, zone and resource group."""
    details = " · ".join(part for part in (info.instance_id, info.zone, info.resource_group_name, info.status) if part)
    return {
        "text": {"type": "plain_text", "text": shorten(info.name or info.instance_id, OPTION_TEXT_LIMIT)},
        "description": {"type": "plain_text", "text": shorten(details, OPTION_TEXT_LIMIT)},
        "value": info.instance_id,
    }


def _status_line(info: InstanceInfo) -> str:
    """Describe an instance that cannot be ticked, with its status."""
    emoji = STATUS_EMOJI.get(info.status, ":large_orange_circle:")
    status = outside(info.status, WORD_LIMIT)
    return f"• {label(info.instance_id, info.name, info.zone)} — {emoji} {status}{address(info.ip, info.status)}"


def picker_blocks(
    heading: str,
    selectable: Sequence[InstanceInfo],
    *,
    preselected: Iterable[str] = (),
    others: Sequence[InstanceInfo] = (),
    footer: str | None = None,
    action: Action = START,
    run_seconds: float | None = None,
) -> list[Block]:
    """Return checkboxes (ten per group) for the selectable instances, the others as lines, and Start selected
    (Stop selected, …: the button carries the action and a start's run length on to the confirmation)."""
    ticked = set(preselected)
    blocks: list[Block] = sections(heading.split("\n"))
    for number, start in enumerate(range(0, len(selectable), PICK_PER_BLOCK)):
        options = [_option(i) for i in selectable[start : start + PICK_PER_BLOCK]]
        checkboxes: Block = {"type": "checkboxes", "action_id": action_ids.PICK, "options": options}
        initial = [o for o in options if o["value"] in ticked]
        if initial:
            checkboxes["initial_options"] = initial
        blocks.append(
            {"type": "actions", "block_id": f"{action_ids.PICK_BLOCK_PREFIX}{number}", "elements": [checkboxes]}
        )
    blocks.extend(sections(_status_line(i) for i in others))
    if selectable:
        button: Block = {
            "type": "button",
            "text": {"type": "plain_text", "text": f"{action.words.button} selected"},
            "action_id": action_ids.START_SELECTED,
            "value": pick_value(action, run_seconds),
            "style": "primary",
        }
        blocks.append({"type": "actions", "block_id": action_ids.PICK_SUBMIT_BLOCK, "elements": [button]})
    if footer:
        blocks.append(context(footer))
    return blocks


def status_message(
    ids: Sequence[str], found: Mapping[str, InstanceInfo], *, page: int = 1, command: str = "/vm status"
) -> Message:
    """Render one page of `/vm status` for the given ids: a short text and at most PAGE_LINES instances, with a
    footer saying how to see the next page (`command` is the user's command without `--page`)."""
    pages = pages_of(len(ids))
    if page > pages:
        text = no_such_page_text(page, pages, command)
        return Message(text, [section(text)])
    first = (page - 1) * PAGE_LINES
    lines = []
    for instance_id in ids[first : first + PAGE_LINES]:
        info = found.get(instance_id)
        if info is None:
            lines.append(f"• {code(instance_id)} — not found")
        else:
            emoji = STATUS_EMOJI.get(info.status, ":large_orange_circle:")
            status = outside(info.status, WORD_LIMIT)
            lines.append(
                f"• {label(instance_id, info.name, info.zone)} — {emoji} {status}{address(info.ip, info.status)}"
            )
    text = f"Instance status of {count(len(ids))}"
    status_blocks = [section("*Instance status*"), *sections(lines)]
    if pages > 1:
        text += f" (page {page} of {pages})"
        status_blocks.append(context(page_footer(page, pages, command)))
    return Message(text, status_blocks)


def list_message(channel_id: str, pattern: str | None, listing: Listing, *, page: int = 1) -> Message:
    """Render one page of `/vm list`: what the caller may start here, the STOPPED ones to tick, PAGE_LINES at most."""
    matching = f" matching {quoted(pattern)}" if pattern else ""
    if not listing.instances:
        return Message(f":information_source: There are no instances you may start in <#{channel_id}>{matching}.")
    command = f"/vm list {pattern}" if pattern else "/vm list"
    pages = pages_of(len(listing.instances))
    if page > pages:
        return Message(no_such_page_text(page, pages, command))
    shown = listing.instances[(page - 1) * PAGE_LINES : page * PAGE_LINES]
    selectable = [i for i in shown if i.status == "STOPPED"]
    others = [i for i in shown if i.status != "STOPPED"]
    total = count(len(listing.instances))
    heading = f"*Instances you may start in <#{channel_id}>*{matching} — {total}"
    if selectable:
        heading += ", tick the STOPPED ones to start:"
    notes = []
    if pages > 1:
        notes.append(page_footer(page, pages, command))
    if listing.truncated:
        notes.append(f"I stopped reading after {listing.scanned} of {listing.total} instances.")
    blocks = picker_blocks(heading, selectable, others=others, footer=" ".join(notes) or None)
    text = f"Instances you may start here: {total}" + (f" (page {page} of {pages})" if pages > 1 else "")
    return Message(text, blocks)


def pick_value(action: Action, run_seconds: float | None) -> str:
    """The picker button's value: "pick" for a plain start, else "pick:ACTION[:SECONDS]"."""
    if action == START and run_seconds is None:
        return "pick"
    return f"pick:{action.name}" + (f":{int(run_seconds)}" if run_seconds is not None else "")


def choice_message(
    ambiguous: Mapping[str, Sequence[InstanceInfo]],
    resolved: Sequence[InstanceInfo],
    action: Action = START,
    run_seconds: float | None = None,
) -> Message:
    """Ask which of several instances sharing a name were meant (the others asked for come ticked)."""
    lines = [
        f":twisted_rightwards_arrows: *{outside(name)}* is the name of {count(len(candidates))}; "
        "tick the ones you mean (name, id, zone and resource group below):"
        for name, candidates in ambiguous.items()
    ]
    candidates = [c for group in ambiguous.values() for c in group]
    selectable = list({i.instance_id: i for i in [*resolved, *candidates]}.values())[:MAX_PICKABLE]
    words = action.words
    footer = f"Nothing is {words.done} yet: *{words.button} selected* leads to the usual confirmation."
    blocks = picker_blocks(
        "\n".join(lines),
        selectable,
        preselected=[i.instance_id for i in resolved],
        footer=footer,
        action=action,
        run_seconds=run_seconds,
    )
    return Message("Several instances share that name — pick the ones you mean", blocks)


def picked(total: int, channel_id: str, action: Action = START) -> Message:
    """Replace a picker once its choice became a confirmation."""
    return Message(f":point_right: Asked to {action.words.verb} {count(total)} — confirm in <#{channel_id}>.")


def nothing_picked() -> Message:
    """Answer a Start selected with nothing ticked."""
    return Message(":point_up: Tick at least one instance first, then press the button under them.")
