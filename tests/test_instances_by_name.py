"""Instances as people know them, end to end through signed requests: grants by name, resource group and tag,
starting and checking by name, namesakes, `/vm list` and Start selected."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from bot.db.models import Click
from bot.db.session import Database
from bot.devtools.slack_driver import SlackDriver, has_buttons
from bot.devtools.slack_messages import message_text
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.devtools.zenlayer_simulator.state import resource_group_id
from bot.grants import rules as grant_rules
from bot.grants.selectors import Selector, SelectorKind
from bot.slack import action_ids
from tests.slack_support import start_calls, wait_until
from tests.transports import HttpSlack, SocketSlack

USER = "U0REQUEST"


@pytest.fixture
def fleet(simulator: ZenlayerSimulator) -> dict[str, str]:
    """Named instances in two resource groups, with tags; returns {name: opaque id}."""
    specs = {
        "api-1": ("dev", {"team": "api"}, "SEL-A"),
        "api-2": ("dev", {"team": "api"}, "FRA-A"),
        "db-9": ("ops", {"team": "db"}, "SEL-A"),
    }
    return {
        name: simulator.add_instance(None, "STOPPED", name=name, zone=zone, group=group, tags=tags)
        for name, (group, tags, zone) in specs.items()
    }


def responses_of(fake: FakeSlackWebApi, key: str) -> list[str]:
    return [message_text(body) for body in fake.responses(key)]


def confirmation_count(fake: FakeSlackWebApi) -> int:
    return sum(1 for m in fake.channel_messages("C0CHANNEL") if has_buttons(m))


SELECTORS = [
    pytest.param(Selector(SelectorKind.NAME, "api-*"), id="name-glob"),
    pytest.param(Selector(SelectorKind.GROUP, "dev"), id="group-by-name"),
    pytest.param(Selector(SelectorKind.GROUP, resource_group_id("dev")), id="group-by-id"),
    pytest.param(Selector(SelectorKind.TAG, "team=api"), id="tag"),
]


@pytest.mark.parametrize("selector", SELECTORS)
def test_each_selector_grants_what_it_selects_and_refuses_the_rest(
    selector: Selector,
    slack: SlackDriver,
    grant: Callable[..., None],
    fleet: dict[str, str],
    simulator: ZenlayerSimulator,
) -> None:
    grant(USER, selector)

    _, refused_key = slack.command(f"start {fleet['db-9']}")
    refusal = slack.wait_private(refused_key, "You may not start")
    _, key = slack.command(f"start {fleet['api-1']}")
    confirmation = slack.wait_confirmation()

    assert f"`{fleet['db-9']}`" in refusal and "(db-9)" not in refusal  # what was typed, and nothing behind it
    assert "wants to start 1 instance" in message_text(slack.message(confirmation))
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "All 1 instance RUNNING")
    assert start_calls(simulator) == [[fleet["api-1"]]]
    assert slack.private_replies(key) == []


def test_a_name_resolves_and_people_see_name_id_zone_then_the_address(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str], simulator: ZenlayerSimulator
) -> None:
    grant(USER, Selector(SelectorKind.GROUP, "dev"))

    slack.command("start api-2")
    confirmation = slack.wait_confirmation()

    shown = message_text(slack.message(confirmation))
    assert f"`{fleet['api-2']}` (api-2) · FRA-A — :white_circle: STOPPED" in shown
    slack.click(confirmation, action_ids.START)
    thread = slack.wait_thread(confirmation, "All 1 instance RUNNING")
    address = _describe_row(simulator, fleet["api-2"])["publicIpAddresses"][0]
    assert f"`{fleet['api-2']}` (api-2) · {address}" in thread[-1]  # the final reply: where to connect
    wait_until(lambda: f"RUNNING · {address}" in message_text(slack.message(confirmation)), what="the address")
    assert start_calls(simulator) == [[fleet["api-2"]]]


def _describe_row(simulator: ZenlayerSimulator, instance_id: str) -> dict[str, Any]:
    """Return the simulator's DescribeInstances row for one instance."""
    rows, _ = simulator.page([instance_id], 1, 1)
    return rows[0].describe()


def test_status_takes_names_and_ids_mixed(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str]
) -> None:
    grant(USER, Selector(SelectorKind.TAG, "team=api"))

    _, key = slack.command(f"status api-1 {fleet['api-2']}")
    reply = slack.wait_private(key, "Instance status")
    _, refused = slack.command("status db-9")

    assert f"`{fleet['api-1']}` (api-1) · SEL-A" in reply and f"`{fleet['api-2']}` (api-2) · FRA-A" in reply
    refusal = slack.wait_private(refused, "You may not")
    assert "You may not start `db-9`" in refusal and fleet["db-9"] not in refusal  # the name typed, not its id


def test_a_name_and_an_id_for_the_same_instance_are_one(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str], simulator: ZenlayerSimulator
) -> None:
    grant(USER, Selector(SelectorKind.NAME, "api-*"))

    slack.command(f"start api-1 {fleet['api-1']} api-1")
    confirmation = slack.wait_confirmation()

    shown = message_text(slack.message(confirmation))
    assert "wants to start 1 instance" in shown and shown.count(fleet["api-1"]) == 1
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "RUNNING")
    assert start_calls(simulator) == [[fleet["api-1"]]]


def test_a_name_shared_by_several_instances_is_not_guessed(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str], simulator: ZenlayerSimulator
) -> None:
    twin_dev = simulator.add_instance(None, name="worker", group="dev", zone="SEL-A")
    twin_ops = simulator.add_instance(None, name="worker", group="ops", zone="FRA-A")
    hidden = simulator.add_instance(None, name="worker", group="secret", zone="FRA-A")
    grant(USER, Selector(SelectorKind.GROUP, "dev"), Selector(SelectorKind.GROUP, "ops"))

    _, key = slack.command("start worker api-1")
    picker = slack.picker(key)

    text = "\n".join(responses_of(slack.fake, key))
    assert "*worker* is the name of 2 instances" in text
    assert twin_dev in text and twin_ops in text and "dev" in text and "ops" in text and "SEL-A" in text
    assert hidden not in text  # a namesake the user may not start is not shown
    assert confirmation_count(slack.fake) == 0 and start_calls(simulator) == []
    ticked_first = [o["value"] for b in picker for e in b.get("elements", []) for o in e.get("initial_options", [])]
    assert ticked_first == [fleet["api-1"]]  # what was named unambiguously comes ticked

    response, pick_key = slack.pick(picker, [twin_ops, fleet["api-1"]])
    assert response.status_code == 200
    confirmation = slack.wait_confirmation()
    shown = message_text(slack.message(confirmation))
    assert "wants to start 2 instances" in shown and twin_ops in shown and twin_dev not in shown
    assert "Asked to start 2 instances" in slack.wait_private(pick_key, "Asked to start")
    assert slack.fake.responses(pick_key)[-1].get("replace_original") is True
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "All 2 instances RUNNING")
    assert sorted(start_calls(simulator)[0]) == sorted([twin_ops, fleet["api-1"]])
    assert simulator.status(twin_dev) == "STOPPED"


def test_a_name_whose_every_namesake_is_out_of_reach_is_refused(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str], simulator: ZenlayerSimulator
) -> None:
    simulator.add_instance(None, name="twin", group="ops")
    simulator.add_instance(None, name="twin", group="ops")
    grant(USER, Selector(SelectorKind.GROUP, "dev"))

    _, key = slack.command("start twin")

    assert "You may not start `twin`" in slack.wait_private(key, "You may not")
    assert confirmation_count(slack.fake) == 0


def test_list_pages_through_zenlayer_and_shows_only_what_the_caller_may_start(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str], simulator: ZenlayerSimulator
) -> None:
    for n in range(1100):  # more than one 1000-row page
        simulator.add_instance(None, "STOPPED" if n % 3 else "RUNNING", name=f"bulk-{n:04d}", group="bulk")
    grant(USER, Selector(SelectorKind.TAG, "team=api"))
    grant(USER, Selector(SelectorKind.NAME, "bulk-10*"), Selector(SelectorKind.NAME, "bulk-09*"))  # 200 of 1100

    ack, key = slack.command("list")
    reply = slack.wait_private(key, "Instances you may start")

    assert "Looking up" in slack.ack_text(ack)
    body = slack.fake.responses(key)[-1]
    pages = [c.params for c in simulator.calls if c.action == "DescribeInstances"]
    assert [(p["pageNum"], p["pageSize"]) for p in pages] == [(1, 1000), (2, 1000)]
    assert "— 202 instances" in reply
    assert fleet["api-1"] in reply and fleet["api-2"] in reply
    assert fleet["db-9"] not in reply and "bulk-0899" not in reply and "bulk-0001" not in reply
    assert "Page 1 of 5 — `/vm list --page 2` for more." in reply  # 50 of 202 on a page
    assert len(body["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in body["blocks"] if b["type"] == "section")
    checkboxes = [e for b in body["blocks"] for e in b.get("elements", []) if e.get("type") == "checkboxes"]
    ticks = sum(len(c["options"]) for c in checkboxes)
    assert all(len(c["options"]) <= 10 for c in checkboxes) and 30 <= ticks <= 50  # the STOPPED among 50 shown
    assert all(o["value"] != fleet["db-9"] for c in checkboxes for o in c["options"])
    _, last = slack.command("list --page 5")
    page_5 = slack.wait_private(last, "Instances you may start")
    assert "Page 5 of 5." in page_5 and "bulk-1099" in page_5 and "bulk-0900" not in page_5

    _, narrowed = slack.command("list api-*")
    narrow = slack.wait_private(narrowed, "Instances you may start")
    assert "— 2 instances" in narrow and "more" not in narrow and "bulk" not in narrow

    _, nothing = slack.command("list zzz")
    assert "no instances you may start" in slack.wait_private(nothing, "no instances")


def test_start_selected_leads_to_the_usual_confirmation_and_running(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str], simulator: ZenlayerSimulator
) -> None:
    grant(USER, Selector(SelectorKind.GROUP, "dev"))
    simulator.set_status(fleet["api-2"], "RUNNING")

    _, key = slack.command("list")
    picker = slack.picker(key)
    reply = "\n".join(responses_of(slack.fake, key))
    tick = slack.pick(picker, [fleet["api-1"]], action_id=action_ids.PICK)[0]
    nothing, nothing_key = slack.pick(picker, [])

    assert "RUNNING" in reply and fleet["api-2"] in reply  # shown, but not to tick
    options = [o["value"] for b in picker for e in b.get("elements", []) for o in e.get("options", [])]
    assert options == [fleet["api-1"]]
    assert tick.status_code == 200 and nothing.status_code == 200  # a tick is only acknowledged
    assert "Tick at least one instance" in slack.wait_private(nothing_key, "Tick at least one")

    slack.pick(picker, [fleet["api-1"]])
    confirmation = slack.wait_confirmation()
    slack.pick(picker, [fleet["api-1"]])  # the same choice again: the duplicate rule still holds
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "All 1 instance RUNNING")
    assert start_calls(simulator) == [[fleet["api-1"]]]
    assert confirmation_count(slack.fake) <= 1


def test_a_forged_pick_of_an_instance_not_granted_is_refused(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str], simulator: ZenlayerSimulator
) -> None:
    grant(USER, Selector(SelectorKind.GROUP, "dev"))
    _, key = slack.command("list")
    picker = slack.picker(key)
    forged = json.loads(json.dumps(picker).replace(fleet["api-1"], fleet["db-9"]))

    _, pick_key = slack.pick(forged, [fleet["db-9"]])

    assert "You may not start" in slack.wait_private(pick_key, "You may not start")
    assert confirmation_count(slack.fake) == 0 and start_calls(simulator) == []


def test_a_tag_grant_revoked_between_list_and_click_starts_nothing(
    slack: SlackDriver,
    grant: Callable[..., None],
    fleet: dict[str, str],
    simulator: ZenlayerSimulator,
    database_url: str,
) -> None:
    grant(USER, Selector(SelectorKind.TAG, "team=api"))
    _, key = slack.command("list")
    picker = slack.picker(key)

    revoke(database_url, Selector(SelectorKind.TAG, "team=api"))
    _, pick_key = slack.pick(picker, [fleet["api-1"]])

    assert "You may not start" in slack.wait_private(pick_key, "You may not start")
    assert confirmation_count(slack.fake) == 0 and start_calls(simulator) == []


def test_a_tag_changed_between_confirmation_and_click_is_checked_again(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str], simulator: ZenlayerSimulator
) -> None:
    grant(USER, Selector(SelectorKind.TAG, "team=api"))
    slack.command("start api-1")
    confirmation = slack.wait_confirmation()

    simulator.rename_instance(fleet["api-1"], name=None, zone=None, tags={"team": "db"})  # someone retagged it
    _, click_key = slack.click(confirmation, action_ids.START)

    assert "You may not start" in slack.wait_private(click_key, "You may not start")
    assert has_buttons(slack.message(confirmation)) and start_calls(simulator) == []


def test_grants_by_group_and_tag_from_slack_within_an_admins_reach(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str], database_url: str
) -> None:
    grant("U0ADMIN", Selector(SelectorKind.GROUP, "dev"), action="admin")

    _, ok_key = slack.command("grant <@U0BOB> --resource-group dev --channel <#C0CHANNEL>", user="U0ADMIN")
    done = slack.wait_private(ok_key, "Granted")
    _, out_key = slack.command("grant <@U0BOB> --tag team=db", user="U0ADMIN")
    _, bad_key = slack.command("grant <@U0BOB> --tag team", user="U0ADMIN")

    assert "resource group `dev`" in done
    assert "admin grant that covers those selectors" in slack.wait_private(out_key, "admin grant")
    assert "is not a tag: write KEY=VALUE" in slack.wait_private(bad_key, "KEY=VALUE")
    assert grants_of(database_url, "U0BOB") == [("start", "group", "dev", "C0CHANNEL")]

    slack.command("start api-2", user="U0BOB")
    assert "wants to start 1 instance" in message_text(slack.message(slack.wait_confirmation()))
    _, revoke_key = slack.command("revoke <@U0BOB> --resource-group dev", user="U0ADMIN")
    assert "Removed 1 grant" in slack.wait_private(revoke_key, "Removed")
    assert grants_of(database_url, "U0BOB") == []


def revoke(database_url: str, selector: Selector) -> None:
    db = Database(database_url)
    try:
        with db.session() as session:
            assert grant_rules.revoke_grants(session, USER, patterns=[selector]) == 1
    finally:
        db.close()


def grants_of(database_url: str, user: str) -> list[tuple[str, str, str, str]]:
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            return [(g.action, g.kind, g.pattern, g.channel_id) for g in grant_rules.list_grants(session, user)]
    finally:
        db.close()


def test_approval_by_selector_looks_the_instances_up_again_at_the_click(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str], simulator: ZenlayerSimulator
) -> None:
    grant(USER, Selector(SelectorKind.GROUP, "dev"), needs_approval=True)
    grant("U0APPROVER", Selector(SelectorKind.TAG, "team=api"), action="approve")
    grant("U0OTHER", Selector(SelectorKind.TAG, "team=db"), action="approve")

    slack.command("start api-1")
    confirmation = slack.wait_confirmation()
    shown = message_text(slack.message(confirmation))
    _, refused_key = slack.click(confirmation, action_ids.APPROVE, user="U0OTHER")

    assert "needs approval" in shown and "<@U0APPROVER>" in shown and "<@U0OTHER>" not in shown
    assert "You can't approve this request" in slack.wait_private(refused_key, "can't approve")
    describes = sum(1 for c in simulator.calls if c.action == "DescribeInstances")
    slack.click(confirmation, action_ids.APPROVE, user="U0APPROVER")
    slack.wait_thread(confirmation, "All 1 instance RUNNING")
    assert start_calls(simulator) == [[fleet["api-1"]]]
    assert sum(1 for c in simulator.calls if c.action == "DescribeInstances") > describes  # looked up at the click


def test_grants_by_selector_show_as_people_wrote_them_and_only_in_their_channel(
    slack: SlackDriver, grant: Callable[..., None], fleet: dict[str, str]
) -> None:
    grant(USER, Selector(SelectorKind.TAG, "team=api"), channels=["C0ELSEWHERE"])
    grant(USER, Selector(SelectorKind.NAME, "db-*"))

    _, grants_key = slack.command("grants")
    mine = slack.wait_private(grants_key, "Your vm-bot grants")
    _, list_key = slack.command("list")
    listed = slack.wait_private(list_key, "Instances you may start")
    _, start_key = slack.command("start api-1")

    assert "start tag `team=api` in <#C0ELSEWHERE>" in mine and "start name `db-*` in any channel" in mine
    assert fleet["db-9"] in listed and fleet["api-1"] not in listed  # the tag grant is for another channel
    refusal = slack.wait_private(start_key, "You may not start")
    assert "can be started from <#C0ELSEWHERE>" in refusal  # where it would be covered


def test_a_click_that_cannot_look_the_instances_up_starts_nothing(
    slack: SlackDriver,
    grant: Callable[..., None],
    fleet: dict[str, str],
    simulator: ZenlayerSimulator,
    database_url: str,
) -> None:
    grant(USER, Selector(SelectorKind.TAG, "team=api"))
    slack.command("start api-1")
    confirmation = slack.wait_confirmation()

    simulator.fail_next("DescribeInstances", status=400, code="INVALID_PARAMETER", message="simulated refusal")
    _, click_key = slack.click(confirmation, action_ids.START)

    assert "could not look these instances up" in slack.wait_private(click_key, "could not look")
    assert has_buttons(slack.message(confirmation)) and start_calls(simulator) == []
    assert click_outcomes(database_url) == ["lookup_failed"]  # decided, so recovery never starts it later
    slack.click(confirmation, action_ids.START)  # Zenlayer answers again: the same confirmation still works
    slack.wait_thread(confirmation, "All 1 instance RUNNING")


def test_list_and_names_work_over_both_transports(
    chat: HttpSlack | SocketSlack, grant: Callable[..., None], fleet: dict[str, str]
) -> None:
    grant(USER, Selector(SelectorKind.GROUP, "dev"))

    ack, key = chat.say("list api")
    listed = chat.wait_private(key, "Instances you may start")
    chat.say("start api-1")

    assert "Looking up" in ack and "— 2 instances" in listed and fleet["db-9"] not in listed
    assert fleet["api-1"] in message_text(chat.message(chat.wait_confirmation()))


def test_the_simulator_command_documents_its_instance_specs() -> None:
    shown = " ".join(
        subprocess.run(
            [sys.executable, "-m", "bot", "simulator", "--help"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.split()
    )

    assert "name=NAME" in shown and "tag=KEY=VALUE" in shown and "generated opaque id" in shown


def click_outcomes(database_url: str) -> list[str | None]:
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            return [c.outcome for c in session.scalars(select(Click).order_by(Click.id))]
    finally:
        db.close()
