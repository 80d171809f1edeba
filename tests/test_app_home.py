"""The App Home, end to end over both transports against the Slack stand-in: what it shows whom, its buttons (the
same click rules as a confirmation's), and that it is published again — through the outbox — when something on it
changes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bot.devtools.slack_payloads import view_payload
from bot.devtools.slack_views import SlackView, view_text
from bot.devtools.slack_web_api import WORKSPACE_URL, FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.slack import action_ids
from tests.surfaces_support import audit_events
from tests.transports import HttpSlack, SocketSlack

REQUESTER, APPROVER, STRANGER = "U0REQUEST", "U0APPROVE", "U0STRANGER"

Chat = HttpSlack | SocketSlack


def buttons(view: SlackView) -> list[tuple[str, str]]:
    """Return (action_id, value) of every button and menu option in a view."""
    found = []
    for block in view.blocks:
        elements = block.get("elements", []) if block.get("type") == "actions" else [block.get("accessory") or {}]
        for element in elements:
            if element.get("type") == "button":
                found.append((element["action_id"], element.get("value", "")))
            for option in element.get("options", []) if element.get("type") == "overflow" else []:
                found.append((element["action_id"], option["value"]))
    return found


def test_someone_without_a_grant_sees_one_sentence_on_how_to_get_one(chat: Chat) -> None:
    assert chat.open_home(STRANGER).status == 200

    home = chat.wait_home(STRANGER, contains="grant")

    assert view_text(home).count(".") <= 3 and "ask a vm-bot admin" in view_text(home)
    assert buttons(home) == []  # no Start instances: they may start nothing


def test_recent_requests_link_their_threads_and_follow_the_request_through_the_outbox(
    chat: Chat, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    grant(REQUESTER, "web-*")
    chat.open_home(REQUESTER)
    first = chat.wait_home(REQUESTER, contains="Nothing here yet")
    assert (action_ids.HOME_START, "home") in buttons(first)

    chat.command("start web-1", user=REQUESTER)
    confirmation = chat.wait_confirmation()
    link = f"{WORKSPACE_URL}archives/{confirmation.channel}/p{confirmation.ts.replace('.', '')}"
    waiting = chat.wait_home(REQUESTER, contains=f"<{link}|thread>")  # published again, not opened again
    assert "Your recent requests\n• :rocket: start `web-1` in <#C0CHANNEL> — :point_right: waiting for you" in (
        view_text(waiting)
    )

    chat.press(confirmation, action_ids.START)
    chat.wait_thread(confirmation, "RUNNING")
    done = chat.wait_home(REQUESTER, contains=":large_green_circle: done")
    assert "`web-1`" in view_text(done)
    assert {c.args.get("user_id") for c in fake_slack.calls_to("views.publish")} == {REQUESTER}


def test_an_approver_approves_from_the_home_and_the_request_leaves_it(
    chat: Chat, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    grant(REQUESTER, "web-*", needs_approval=True)
    grant(APPROVER, "*", action="approve")
    chat.open_home(APPROVER)
    chat.wait_home(APPROVER, contains="Nothing here yet")

    chat.command("start web-1", user=REQUESTER)
    confirmation = chat.wait_confirmation()
    home = chat.wait_home(APPROVER, contains="Waiting for your approval")
    assert f"<@{REQUESTER}> wants to start 1 instance" in view_text(home)
    assert (action_ids.HOME_APPROVE, str(confirmation.request_id)) in buttons(home)
    assert not any(a == action_ids.HOME_START for a, _ in buttons(home))  # an approve grant starts nothing

    assert chat.click_home_button(action_ids.HOME_APPROVE, user=APPROVER).status == 200

    chat.wait_thread(confirmation, "RUNNING")
    assert f"Approved by <@{APPROVER}>" in str(chat.message(confirmation).blocks)
    after = chat.wait_home(APPROVER, contains="Nothing here yet")
    assert "Waiting for your approval" not in view_text(after)


def test_a_home_click_follows_the_confirmations_rules(
    chat: Chat, grant: Callable[..., None], fake_slack: FakeSlackWebApi, database_url: str
) -> None:
    grant(REQUESTER, "web-*", needs_approval=True)
    grant(STRANGER, "db-*", action="approve")  # approves other instances only
    chat.command("start web-1", user=REQUESTER)
    confirmation = chat.wait_confirmation()
    for user in (REQUESTER, STRANGER):
        chat.open_home(user)
    # Neither is offered the button; both forge it on their own Home.
    assert "Waiting for your approval" not in view_text(chat.wait_home(STRANGER, contains="Nothing here yet"))
    for user in (REQUESTER, STRANGER):
        home = chat.wait_home(user)
        forged = forge_home_click(home, action_ids.HOME_APPROVE, str(confirmation.request_id), user)
        assert chat.deliver_interaction(forged).status == 200

    assert "needs a second person" in view_text(chat.wait_home(REQUESTER, contains="second person"))
    assert "can't approve this request" in view_text(chat.wait_home(STRANGER, contains="approve this"))
    assert chat.message(confirmation).blocks[-1]["block_id"] == action_ids.CONFIRM_BLOCK  # still pending
    refused = {(e["actor"], e["outcome"]) for e in audit_events(database_url, "click_refused")}
    assert refused == {(REQUESTER, "self_approval"), (STRANGER, "not_approver")}


def test_a_click_from_outside_a_home_is_ignored(chat: Chat, grant: Callable[..., None], database_url: str) -> None:
    grant(REQUESTER, "web-*", needs_approval=True)
    grant(APPROVER, "*", action="approve")
    chat.command("start web-1", user=REQUESTER)
    confirmation = chat.wait_confirmation()
    chat.open_home(APPROVER)
    home = chat.wait_home(APPROVER, contains="Waiting for your approval")
    forged = forge_home_click(home, action_ids.HOME_APPROVE, str(confirmation.request_id), APPROVER)
    forged["container"] = {"type": "message", "message_ts": "1.2", "channel_id": "C0ELSEWHERE"}

    assert chat.deliver_interaction(forged).status == 200

    chat.fake.wait_for(lambda: audit_events(database_url, "request_created"), what="the request")
    assert audit_events(database_url, "request_approved") == []
    assert chat.message(confirmation).blocks[-1]["block_id"] == action_ids.CONFIRM_BLOCK


def forge_home_click(home: SlackView, action_id: str, value: str, user: str) -> dict[str, Any]:
    """A block_actions payload from a Home, as a client could forge it (any action id and value)."""
    payload = view_payload("block_actions", home, {"values": {}}, user)
    payload.update(
        container={"type": "view", "view_id": home.id},
        trigger_id=f"{home.id}.forged",
        actions=[{"action_id": action_id, "block_id": "forged", "type": "button", "value": value, "action_ts": "1"}],
    )
    return payload


def test_running_for_you_lists_runs_with_extend_and_stop(
    chat: Chat, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    grant(REQUESTER, "web-1")  # uncapped
    grant(REQUESTER, "web-2", max_run_seconds=2 * 3600.0)  # every start of it a run of at most 2 h
    starts = []
    for text in ("start web-1 --for 2h", "start web-2"):
        chat.command(text, user=REQUESTER)
        confirmation = chat.wait_confirmation()
        chat.press(confirmation, action_ids.START, user=REQUESTER)
        chat.wait_thread(confirmation, "RUNNING in")
        starts.append(confirmation.request_id)

    chat.open_home(REQUESTER)
    home = chat.wait_home(REQUESTER, contains="Running for you")

    assert re.search(r"`web-1` — stops .*, in (2 h|1 h 59 min)", view_text(home)), view_text(home)
    assert "`web-2` — stops" in view_text(home)
    first, second = starts
    assert [v for a, v in buttons(home) if a == action_ids.HOME_RUN] == [
        f"extend:{first}:web-1",
        f"stop:{first}:web-1",
        f"stop:{second}:web-2",  # its cap leaves no room for an extension
    ]
    chat.click_home_button(action_ids.HOME_RUN, user=REQUESTER, choice=f"extend:{first}:web-1")
    assert "Extended by 1 h" in view_text(chat.wait_home(REQUESTER, contains="Extended"))
    assert [e["actor"] for e in audit_events(database_url, "run_extended")] == [REQUESTER]
    chat.open_home(STRANGER)
    assert "Running for you" not in view_text(chat.wait_home(STRANGER))  # nobody else's runs
    chat.click_home_button(action_ids.HOME_RUN, user=REQUESTER, choice=f"stop:{second}:web-2")
    chat.wait_home(REQUESTER, contains="Stopping it now")
    chat.fake.wait_for(lambda: simulator.status("web-2") == "STOPPED", what="web-2 stopped from the Home")
    assert simulator.status("web-1") == "RUNNING"  # the other start's run is untouched
