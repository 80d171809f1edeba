"""The start modal, end to end over both transports: how it opens, what its type-ahead offers whom, and that a
submission leads to the usual confirmation after the same checks as `/vm start` — made at submit time, answered as
field errors, never trusting what the view carries besides what the user picked."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bot.devtools.slack_messages import message_text
from bot.devtools.slack_payloads import view_payload
from bot.devtools.slack_view_state import view_state
from bot.devtools.slack_views import SlackView, view_text
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.slack import action_ids
from tests.surfaces_support import audit_events
from tests.transports import CHANNEL, HttpSlack, SocketSlack

Chat = HttpSlack | SocketSlack
USER = "U0REQUEST"
CHANNEL_FIELD, INSTANCES, DURATION = action_ids.MODAL_CHANNEL, action_ids.MODAL_INSTANCES, action_ids.MODAL_DURATION


def texts(options: list[dict[str, Any]]) -> list[str]:
    return [o["text"]["text"] for o in options]


def open_from_command(chat: Chat, user: str = USER, channel: str = CHANNEL) -> SlackView:
    chat.command("start", user=user, channel=channel)
    return chat.wait_modal(user, action_ids.START_MODAL)


def test_vm_start_alone_opens_the_modal_and_a_submission_asks_for_the_usual_confirmation(
    chat: Chat, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant(USER, "web-*")
    modal = open_from_command(chat)
    assert modal.title == "Start instances"
    _, select = modal.element(DURATION)  # no cap: any duration on offer, and none at all (it is optional)
    assert [o["value"] for o in select["options"]][-2:] == ["7d", "none"]

    offered = chat.suggest(modal, INSTANCES, "web")

    assert texts(offered) == ["web-1 · web-1 · SEL-A · STOPPED", "web-2 · web-2 · SEL-A · STOPPED"]
    answer = chat.submit_view(modal, {INSTANCES: ["web-1"]})  # the channel: where /vm start was typed

    assert answer["response_action"] == "update"
    assert "Asked to start 1 instance" in view_text(chat.fake.view(modal.id))
    confirmation = chat.wait_confirmation()
    shown = str(chat.message(confirmation).blocks)
    assert f"<@{USER}> wants to start 1 instance" in shown and "`web-1`" in shown and "web-2" not in shown
    chat.press(confirmation, action_ids.START)
    chat.wait_thread(confirmation, "RUNNING")
    assert simulator.status("web-1") in ("BOOTING", "RUNNING") and simulator.status("web-2") == "STOPPED"


def test_the_home_button_and_the_shortcut_open_it_without_a_channel(chat: Chat, grant: Callable[..., None]) -> None:
    grant(USER, "web-1")  # in any channel
    grant(USER, "web-2", channels=["C0OTHER"])
    chat.open_home(USER)
    chat.wait_home(USER, contains="Start instances")
    chat.click_home_button(action_ids.HOME_START, user=USER)
    from_home = chat.wait_modal(USER, action_ids.START_MODAL)
    assert from_home.opened_from is None

    # No channel picked yet: only what a grant allows in any channel; with one picked, what it allows there.
    assert texts(chat.suggest(from_home, INSTANCES, "")) == ["web-1 · web-1 · SEL-A · STOPPED"]
    there = chat.suggest(from_home, INSTANCES, "", values={CHANNEL_FIELD: "C0OTHER"})
    assert texts(there) == ["web-1 · web-1 · SEL-A · STOPPED", "web-2 · web-2 · SEL-A · STOPPED"]

    chat.close_modal(from_home)
    chat.shortcut(action_ids.START_SHORTCUT, user=USER)
    from_shortcut = chat.wait_modal(USER, action_ids.START_MODAL)
    assert from_shortcut.id != from_home.id and from_shortcut.opened_from is None
    # Slack does not submit a modal without its channel; the bot refuses a forged submission without one too.
    forged = forged_submission(from_shortcut, USER, {INSTANCES: ["web-1"]})
    assert chat.deliver_interaction(forged).body == {
        "response_action": "errors",
        "errors": {CHANNEL_FIELD: "Pick a channel."},
    }


def test_field_errors_keep_the_modal_open(
    chat: Chat, grant: Callable[..., None], fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator
) -> None:
    grant(USER, "web-*", channels=[CHANNEL])
    grant(USER, "db-*", channels=["C0GONE"])
    modal = open_from_command(chat)

    no_grant = chat.submit_view(modal, {CHANNEL_FIELD: "C0ELSEWHERE", INSTANCES: ["web-1"]})
    fake_slack.remove_bot_from("C0GONE")
    simulator.add_instance("db-9", "STOPPED", name="db-9")
    not_member = chat.submit_view(modal, {CHANNEL_FIELD: "C0GONE", INSTANCES: ["db-9"]})
    simulator.set_status("web-2", "RUNNING")
    nothing = chat.submit_view(modal, {INSTANCES: ["web-2"]})

    assert no_grant["errors"] == {
        CHANNEL_FIELD: "You hold no grant to start instances in that channel: pick another one, or ask a vm-bot admin."
    }
    assert "invite me there with /invite @vm-bot" in not_member["errors"][CHANNEL_FIELD]
    assert nothing["errors"][INSTANCES] == "None of these can be started now: web-2 is RUNNING."
    assert chat.fake.modals(USER) == [chat.fake.view(modal.id)]  # still open, as it was
    assert fake_slack.calls_to("chat.postMessage") == []


def test_a_forged_submission_outside_the_grants_starts_nothing_and_is_audited(
    chat: Chat, grant: Callable[..., None], fake_slack: FakeSlackWebApi, database_url: str
) -> None:
    grant(USER, "web-*")
    modal = open_from_command(chat)
    chat.suggest(modal, INSTANCES, "")
    # db-1 was never offered; the client sends it anyway, with metadata claiming another user and channel.
    forged = forged_submission(
        modal, USER, {INSTANCES: [{"text": {"type": "plain_text", "text": "db-1"}, "value": "db-1"}]}
    )
    forged["view"]["private_metadata"] = json.dumps({"user_id": "U0ADMIN", "channel_id": "C0ADMINS", "ids": ["db-1"]})

    answer = chat.deliver_interaction(forged).body

    assert answer["errors"] == {INSTANCES: "You may not start db-1 in that channel."}
    denied = audit_events(database_url, "denied")
    assert [(d["actor"], d["channel"], d["uncovered"]) for d in denied] == [(USER, CHANNEL, ["db-1"])]
    assert fake_slack.calls_to("chat.postMessage") == []


def test_a_grant_revoked_after_picking_is_refused_at_submit(
    chat: Chat, grant: Callable[..., None], database_url: str
) -> None:
    grant(USER, "web-*")
    modal = open_from_command(chat)
    assert texts(chat.suggest(modal, INSTANCES, "web-1")) == ["web-1 · web-1 · SEL-A · STOPPED"]
    revoke(database_url, USER)

    answer = chat.submit_view(modal, {INSTANCES: ["web-1"]})

    # Refused under the channel (no grant here any more) or under the instances (when the check before it still
    # had the grant from its copy, at most a second old): either way from the database, and on record.
    assert answer["response_action"] == "errors" and set(answer["errors"]) <= {CHANNEL_FIELD, INSTANCES}
    assert chat.fake.channel_messages(CHANNEL) == []
    assert [d["actor"] for d in audit_events(database_url, "denied")] == [USER]


def test_type_ahead_offers_nothing_without_a_grant_there_and_audits_it_once(
    chat: Chat, grant: Callable[..., None], database_url: str
) -> None:
    grant(USER, "web-*", channels=[CHANNEL])
    modal = open_from_command(chat)

    for typed in ("w", "we", "web"):
        assert chat.suggest(modal, INSTANCES, typed, values={CHANNEL_FIELD: "C0ELSEWHERE"}) == []
    chat.fake.wait_for(lambda: chat.suggest(modal, INSTANCES, "web-1"), what="the instance mirror")
    for typed in ("db", "db-", "db-1", "db-1"):  # db-1 exists, but no grant of theirs covers it
        assert chat.suggest(modal, INSTANCES, typed) == []

    denied = audit_events(database_url, "denied")
    assert [(d["actor"], d["channel"], d["uncovered"], d["at"]) for d in denied] == [
        (USER, "C0ELSEWHERE", [], "type-ahead"),  # no grant usable there: once, however much was typed
        (USER, CHANNEL, ["db-1"], "type-ahead"),  # naming an instance they may not start: once a minute
    ]


def forged_submission(view: SlackView, user: str, values: dict[str, Any]) -> dict[str, Any]:
    """A view_submission for `view` with these values, as a client could forge it (nothing looked up)."""
    state, _ = view_state(view, values, {})
    return view_payload("view_submission", view, state, user, trigger_id=f"{view.id}.forged", response_urls=[])


def revoke(database_url: str, user: str) -> None:
    from bot.db.session import Database
    from bot.grants import rules

    db = Database(database_url)
    try:
        with db.session() as session:
            rules.revoke_grants(session, user)
    finally:
        db.close()


def test_the_duration_select_shows_the_cap_and_a_duration_over_it_is_refused_under_its_field(
    chat: Chat, grant: Callable[..., None]
) -> None:
    grant(USER, "web-*", max_run_seconds=4 * 3600.0)
    modal = open_from_command(chat)
    _, select = modal.element(DURATION)
    assert [o["value"] for o in select["options"]] == ["30m", "1h", "2h", "4h"]  # within the 4 h cap
    assert "cap runs at 4 h" in view_text(modal)

    over = forged_submission(modal, USER, {INSTANCES: ["web-1"], DURATION: {"text": plain("8h"), "value": "8h"}})
    refused = chat.deliver_interaction(over).body
    answer = chat.submit_view(modal, {INSTANCES: ["web-1"], DURATION: "1h"})

    assert refused["errors"] == {DURATION: "Your grants cap runs of these instances at 4 h."}
    assert answer["response_action"] == "update"
    confirmation = chat.wait_confirmation()
    assert "Time-boxed: stopped 1 h after it is RUNNING" in message_text(chat.message(confirmation))


def test_checks_slower_than_slack_waits_show_in_the_modal_when_done(
    chat: Chat, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant(USER, "web-*")
    modal = open_from_command(chat)
    simulator.fail_next("DescribeInstances", times=3, status=200, hang_seconds=3)  # Zenlayer answers, late

    answer = chat.submit_view(modal, {INSTANCES: ["web-1"]})

    assert answer["response_action"] == "update" and "Checking the instances" in view_text(chat.fake.view(modal.id))
    chat.fake.wait_for(lambda: "Asked to start 1 instance" in view_text(chat.fake.view(modal.id)), what="the outcome")
    chat.wait_confirmation()


def plain(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}
