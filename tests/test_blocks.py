"""Block Kit builders: whatever Zenlayer returns, every message fits Slack's limits and reads as the cloud named it.

Pure functions, checked with the same rules the Slack stand-in applies to every posted message.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.devtools.slack_messages import message_error
from bot.domain.actions import START, Outcome
from bot.domain.ports import InstanceInfo
from bot.grants.rules import Coverage
from bot.operations.click_model import ClickOutcome
from bot.operations.inventory import Listing
from bot.operations.opening import Prepared, Skipped
from bot.operations.records import InstanceRecord, OperationRecord
from bot.operations.states import State
from bot.slack.views import confirmation, help, picker, refusals, thread
from bot.slack.views import format as blocks

T0 = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
# What a hostile or careless cloud could return: every character mrkdwn cares about, entities that grow when
# escaped, newlines, and far more text than any column would keep.
NASTY = ("*b* _i_ ~s~ `c` :fire: <!channel> <@U0BOSS> & &amp; \n\t" * 200)[:3100]
MAX_ID = "i" * 64


def ids(n: int) -> list[str]:
    return [f"{MAX_ID[:60]}{k:04d}" for k in range(n)]


def request(
    state: State, n: int = 200, *, outcome: Outcome | None = None, error: str | None = NASTY
) -> OperationRecord:
    """A request as big and as strange as the database can hold."""
    instances = tuple(
        InstanceRecord(
            row_id=k,
            instance_id=i,
            name=NASTY[:255],
            zone=NASTY[:64],
            included=k % 4 != 0,
            skip_reason=NASTY[:255],
            initial_status="STOPPED",
            last_status=NASTY[:32],
            outcome=outcome,
            zenlayer_request_id="r" * 128,
        )
        for k, i in enumerate(ids(n))
    )
    return OperationRecord(
        id=1,
        action=START,
        requester_id="U0REQUEST",
        channel_id="C0CHANNEL",
        message_ts="1.2",
        state=state,
        needs_approval=False,
        created_at=T0,
        expires_at=T0 + timedelta(minutes=10),
        as_of=T0 + timedelta(seconds=90),
        decided_by="U0REQUEST",
        decided_at=T0,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=90),
        error=error,
        instances=instances,
    )


def assert_accepted(text: str, message_blocks: list[blocks.Block] | None = None) -> None:
    """Fail unless Slack (the stand-in's rules) would accept the message."""
    payload: dict[str, object] = {"text": text}
    if message_blocks is not None:
        payload["blocks"] = message_blocks
    assert message_error(payload) is None
    assert len(text) <= blocks.REPLY_BUDGET + 500  # and it is short, not merely under Slack's 40,000


@pytest.mark.parametrize("state", list(State))
def test_every_confirmation_state_fits(state: State) -> None:
    message = confirmation.confirmation(request(state), "<!subteam^S0APPROVE>")
    text, message_blocks = message.text, message.blocks
    assert_accepted(text, message_blocks)
    shown = "\n".join(b["text"]["text"] for b in message_blocks if b["type"] == "section")
    assert "more — `/vm status --request 1` for all" in shown


@pytest.mark.parametrize("outcome", [Outcome.REACHED, Outcome.FAILED, Outcome.TIMED_OUT, None])
@pytest.mark.parametrize("state", [State.DONE, State.FAILED, State.TIMED_OUT])
def test_every_final_reply_fits(state: State, outcome: Outcome | None) -> None:
    reply = thread.final(request(state, outcome=outcome)).text
    assert_accepted(reply)
    assert reply.startswith("<@U0REQUEST> ")


def test_progress_replies_fit() -> None:
    watching = request(State.WATCHING)
    reply = thread.progress(watching, list(watching.instances)).text
    assert_accepted(reply)
    assert "more — `/vm status --request 1` for all" in reply


def test_status_answers_fit_for_as_many_ids_as_a_command_takes() -> None:
    found = {i: InstanceInfo(i, NASTY, NASTY, NASTY) for i in ids(200)}
    message = picker.status_message(ids(200), found)
    assert_accepted(message.text, message.blocks)


def shown_ids(message_blocks: list[blocks.Block], among: list[str]) -> list[str]:
    """Return which of `among` a message shows, in order."""
    shown = "\n".join(str(b) for b in message_blocks)
    return [i for i in among if f"`{i}`" in shown]


def test_status_is_paged_fifty_instances_a_page_and_every_page_points_at_the_next() -> None:
    asked = [f"web-{n:03d}" for n in range(120)]
    found = {i: InstanceInfo(i, NASTY, NASTY, NASTY) for i in asked}
    pages = [
        (m.text, m.blocks)
        for m in (picker.status_message(asked, found, page=p, command="/vm status web-*") for p in (1, 2, 3))
    ]

    for text, message_blocks in pages:
        assert_accepted(text, message_blocks)
    assert [len(shown_ids(b, asked)) for _, b in pages] == [50, 50, 20]
    assert [i for _, b in pages for i in shown_ids(b, asked)] == asked  # every instance, once, in order
    footers = [b[-1]["elements"][0]["text"] for _, b in pages]
    assert footers == [
        "Page 1 of 3 — `/vm status web-* --page 2` for more.",
        "Page 2 of 3 — `/vm status web-* --page 3` for more.",
        "Page 3 of 3.",
    ]
    assert pages[0][0] == "Instance status of 120 instances (page 1 of 3)"


def test_a_page_past_the_last_is_a_clear_error() -> None:
    asked = [f"web-{n:03d}" for n in range(60)]
    message = picker.status_message(asked, {}, page=3, command="/vm status --request 7")
    text = message.text
    assert_accepted(text, message.blocks)
    assert text == (
        ":warning: There is no page 3: this answer has 2 pages, the last is `/vm status --request 7 --page 2`."
    )


def test_a_short_status_has_no_page_footer() -> None:
    message = picker.status_message(["web-1"], {})
    assert "page" not in message.text.lower() and all(b["type"] == "section" for b in message.blocks)


def test_a_long_command_is_not_repeated_in_the_footer() -> None:
    command = "/vm status " + " ".join(ids(40))
    assert blocks.page_footer(1, 2, command) == "Page 1 of 2 — add `--page 2` to the same command for more."


def test_list_is_paged_and_every_instance_is_reachable() -> None:
    instances = [InstanceInfo(f"vm-{n:03d}", NASTY, "STOPPED" if n % 3 else "RUNNING", NASTY) for n in range(130)]
    listing = Listing(instances=instances, scanned=130, total=130)
    every = [i.instance_id for i in instances]

    bodies = [picker.list_message("C0CHANNEL", "vm-*", listing, page=p) for p in (1, 2, 3)]

    for body in bodies:
        assert_accepted(body.text, body.blocks)
    seen = [
        i for body in bodies for i in every if f"'value': '{i}'" in str(body.blocks) or f"`{i}`" in str(body.blocks)
    ]
    assert seen == every
    assert "Page 1 of 3 — `/vm list vm-* --page 2` for more." in str(bodies[0].blocks[-1])
    assert "There is no page 4" in picker.list_message("C0CHANNEL", None, listing, page=4).text


def test_a_withdrawn_confirmation_says_its_buttons_do_nothing() -> None:
    withdrawn = replace(
        request(State.WITHDRAWN, 2, error="Slack did not confirm the post (TimeoutError)"), decided_by=None
    )
    message = confirmation.confirmation(withdrawn)
    text, message_blocks = message.text, message.blocks
    assert_accepted(text, message_blocks)
    shown = str(message_blocks)
    assert "Withdrawn (Slack did not confirm the post (TimeoutError))" in shown
    assert "these buttons do nothing and nothing was started" in shown
    assert not [b for b in message_blocks if b["type"] == "actions"]


def test_refusals_and_explanations_fit() -> None:
    many = ids(200)
    coverage = Coverage(uncovered=many, channels_elsewhere={i: [f"C{k:010d}" for k in range(30)] for i in many})
    prepared = Prepared(START, "U0REQUEST", "C0CHANNEL", skipped=[Skipped(i, NASTY, NASTY, NASTY) for i in many])
    texts = [
        refusals.not_covered("start", coverage).text,
        refusals.nothing_to_do(prepared).text,
        help.invalid_ids([NASTY] * 200).text,
        help.checking(many).text,
        *(refusals.click_refusal(o, request(State.PENDING), coverage, many).text for o in ClickOutcome),
    ]
    for text in texts:
        assert_accepted(text)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("web server", "web server"),
        ("Tom & Jerry <3", "Tom &amp; Jerry &lt;3"),
        ("*prod*", "`*prod*`"),
        ("_it_ ~s~", "`_it_ ~s~`"),
        ("a `b` c", f"`a {blocks.BACKTICK_STAND_IN}b{blocks.BACKTICK_STAND_IN} c`"),
        (":fire: db", "`:fire: db`"),
        ("two\nlines", "two lines"),
        ("x" * 100, "x" * (blocks.NAME_LIMIT - 1) + "…"),
    ],
)
def test_outside_text_cannot_format_ping_or_overflow(name: str, shown: str) -> None:
    assert blocks.outside(name) == shown


def test_listing_summarises_what_does_not_fit() -> None:
    lines = [f"• line {n:03d} " + "y" * 50 for n in range(100)]
    kept = blocks.listing(lines, budget=1000, hint=confirmation.status_hint(request(State.WATCHING, 1)))
    assert sum(len(line) + 1 for line in kept) <= 1000
    assert kept[-1] == f"…and {100 - (len(kept) - 1)} more — `/vm status --request 1` for all"
    assert blocks.listing(lines[:3]) == lines[:3]  # nothing to summarise
