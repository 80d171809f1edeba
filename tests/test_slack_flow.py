"""The Slack flow end to end: signed requests (and, where marked by the `chat` fixture, Socket Mode envelopes)
to the served app, the fake Web API, the Zenlayer simulator."""

from __future__ import annotations

import concurrent.futures
import socket
import sqlite3
import time
from collections.abc import Callable

import httpx

from bot.db import audit
from bot.db.session import Database
from bot.devtools.slack_driver import SlackDriver, has_buttons
from bot.devtools.slack_messages import message_text
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.operations import repository
from bot.slack import action_ids
from tests.slack_support import SIGNING_SECRET, ask_to_start, start_calls, wait_until
from tests.transports import HttpSlack, SocketSlack


def test_happy_path_from_command_to_all_running(
    chat: HttpSlack | SocketSlack, grant: Callable[..., None], simulator: ZenlayerSimulator, fake_slack: FakeSlackWebApi
) -> None:
    grant("U0REQUEST", "web-*")
    # Long enough that the first poll sees BOOTING however loaded the machine (a quicker boot may settle at once,
    # and then the final reply rightly says it all).
    simulator.boot_seconds = 2

    ack, key = chat.say("start web-1, web-2 web-1")  # over HTTP, say() also checks the ack is a 200

    assert "Checking `web-1`" in ack
    confirmation = chat.wait_confirmation()
    shown = message_text(chat.message(confirmation))
    assert "<@U0REQUEST> wants to start 2 instances" in shown
    assert "`web-1`" in shown and "`web-2`" in shown and "STOPPED" in shown
    assert "Expires" in shown
    assert start_calls(simulator) == []

    click, click_key = chat.press(confirmation, action_ids.START)
    assert click == ""  # a bare ack; the outcome shows in the channel

    thread = chat.wait_thread(confirmation, "All 2 instances RUNNING")
    assert "Start requested (Zenlayer requestId" in thread[0]
    assert any("BOOTING" in t for t in thread)
    assert start_calls(simulator) == [["web-1", "web-2"]]
    parent = chat.message(confirmation)
    assert not has_buttons(parent)
    assert "Confirmed by <@U0REQUEST>" in message_text(parent)
    wait_until(lambda: "All 2 RUNNING" in message_text(chat.message(confirmation)), what="progress line")
    assert chat.private_replies(key) == []  # nothing went wrong, so nothing private beyond the ack
    assert fake_slack.responses(key) == [] and fake_slack.responses(click_key) == []


def test_user_without_grant_is_refused_privately_in_the_ack(
    chat: HttpSlack | SocketSlack,
    grant: Callable[..., None],
    simulator: ZenlayerSimulator,
    fake_slack: FakeSlackWebApi,
    database_url: str,
) -> None:
    grant("U0REQUEST", "web-1")

    stranger, _ = chat.say("start web-1", user="U0STRANGER")

    assert "You may not start `web-1`" in stranger  # no grant usable here at all: refused in the ack itself
    wait_until(lambda: denial_audited(database_url, "U0STRANGER"), what="the refusal in the audit trail")
    assert not any(c.action == "DescribeInstances" for c in simulator.calls)  # refused before any lookup

    # Someone holding a grant may have typed a name its instance id matches, so the words are looked up first.
    ack, key = chat.say("start web-1 web-2")
    reply = chat.wait_private(key, "You may not start")

    assert "Checking" in ack
    assert "`web-2`" in reply and "`web-1`" not in reply.split("You may not start")[1].split("\n")[0]
    wait_until(lambda: denial_audited(database_url, "U0REQUEST"), what="the refusal in the audit trail")
    assert fake_slack.calls_to("chat.postMessage") == []
    assert start_calls(simulator) == []


def denial_audited(database_url: str, user_id: str) -> bool:
    """True once a denial by user_id is in the audit trail."""
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            return any(e.event == "denied" for e in audit.latest(session, user=user_id))
    finally:
        db.close()


def test_only_the_requester_can_confirm(
    chat: HttpSlack | SocketSlack, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0OTHER", "web-*")
    confirmation = ask_to_start(chat, grant)

    _, key = chat.press(confirmation, action_ids.START, user="U0OTHER")

    assert "Only <@U0REQUEST> can confirm" in chat.wait_private(key, "Only")
    assert has_buttons(chat.message(confirmation))
    assert start_calls(simulator) == []


def test_concurrent_double_clicks_start_once(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    confirmation = ask_to_start(slack, grant)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: slack.click(confirmation, action_ids.START), range(8)))

    assert all(r.status_code == 200 for r, _ in responses)
    slack.wait_thread(confirmation, "RUNNING")
    assert start_calls(simulator) == [["web-1"]]
    wait_until(lambda: len([k for _, k in responses if slack.private_replies(k)]) == 7, what="seven explanations")
    explained = [k for _, k in responses if any("This request was already" in t for t in slack.private_replies(k))]
    assert len(explained) == 7  # every losing click is told why nothing more happens


def test_cancel_then_late_click_does_nothing(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    confirmation = ask_to_start(slack, grant)

    slack.click(confirmation, action_ids.CANCEL)
    wait_until(lambda: not has_buttons(slack.message(confirmation)), what="buttons removed")
    assert "Cancelled by <@U0REQUEST>" in message_text(slack.message(confirmation))

    _, key = slack.click(confirmation, action_ids.START)
    assert "already cancelled" in slack.wait_private(key, "already")
    assert start_calls(simulator) == []


def test_unclicked_confirmation_expires(
    start_bot: Callable[..., tuple[object, SlackDriver]],
    grant: Callable[..., None],
    simulator: ZenlayerSimulator,
) -> None:
    _, slack = start_bot(CONFIRM_TTL_SECONDS="1")
    confirmation = ask_to_start(slack, grant)

    wait_until(lambda: "Expired" in message_text(slack.message(confirmation)), timeout=10, what="expiry")
    assert not has_buttons(slack.message(confirmation))
    _, key = slack.click(confirmation, action_ids.START)
    assert "expired" in slack.wait_private(key, "expired")
    assert start_calls(simulator) == []
    assert slack.thread_texts(confirmation) == []


def test_forged_and_stale_signatures_are_refused(slack: SlackDriver, fake_slack: FakeSlackWebApi) -> None:
    body = "command=%2Fvm&text=start+web-1&user_id=U0REQUEST&channel_id=C0CHANNEL"

    forged = slack.post(body, signature="v0=" + "0" * 64)
    stale = slack.post(body, timestamp=int(time.time()) - 600)
    unsigned = slack.http.post(
        slack.events_url, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )

    assert (forged.status_code, stale.status_code, unsigned.status_code) == (401, 401, 401)
    assert fake_slack.calls_to("chat.postMessage") == []


def test_hostile_input_is_escaped_and_refused(slack: SlackDriver, fake_slack: FakeSlackWebApi) -> None:
    ping, _ = slack.command("start <!channel> web-1")
    glob, _ = slack.command("start web-*")
    huge, _ = slack.command("start " + "a" * 5000)
    unknown, _ = slack.command("destroy <@U0BOSS>")  # reboot was the example until it became a verb

    assert "&lt;!channel&gt;" in ping.text and "<!channel>" not in ping.text
    assert "`web-*`" in glob.text and "Not valid instance ids" in glob.text
    assert "too much" in huge.text
    assert "&lt;@U0BOSS&gt;" not in unknown.text and "Unknown command `destroy`" in unknown.text
    assert fake_slack.calls_to("chat.postMessage") == []


def test_help_and_empty_command_show_usage(slack: SlackDriver) -> None:
    for text in ("", "help"):
        _, key = slack.command(text)
        assert "ask a vm-bot admin" in slack.wait_private(key, "vm-bot")
    response, _ = slack.command("status")
    assert "/vm status ID" in response.text
    response, _ = slack.command("start")  # `/vm start` alone opens the start modal instead (test_start_modal)
    assert response.text == "" and slack.wait_modal(callback_id="vm_start_modal").title == "Start instances"


def test_mixed_states_only_start_what_is_stopped(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "*")
    slack.command("start web-1 db-1 nope-1")
    confirmation = slack.wait_confirmation()
    shown = message_text(slack.message(confirmation))
    assert "wants to start 1 instance" in shown
    assert "`db-1`" in shown and "is RUNNING, skipped" in shown
    assert "`nope-1`" in shown and "not found, skipped" in shown

    slack.click(confirmation, action_ids.START)

    slack.wait_thread(confirmation, "All 1 instance RUNNING")
    assert start_calls(simulator) == [["web-1"]]


def test_nothing_startable_gets_a_private_explanation(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    grant("U0REQUEST", "*")
    _, key = slack.command("start db-1 nope-1")
    reply = slack.wait_private(key, "Nothing to start")
    assert "`db-1` — is RUNNING" in reply and "`nope-1` — not found" in reply
    assert fake_slack.calls_to("chat.postMessage") == []


def test_status_command_answers_privately(slack: SlackDriver, grant: Callable[..., None]) -> None:
    grant("U0REQUEST", "*")
    _, key = slack.command("status web-1 db-1 nope-1")
    reply = slack.wait_private(key, "Instance status")
    assert "`web-1`" in reply and "STOPPED" in reply
    assert "`db-1`" in reply and "RUNNING" in reply
    assert "`nope-1` — not found" in reply


def test_bot_not_in_channel_tells_the_user_how_to_invite_it(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    grant("U0REQUEST", "web-*")
    fake_slack.remove_bot_from("C0PRIVATE")
    _, key = slack.command("start web-1", channel="C0PRIVATE")
    assert "/invite @vm-bot" in slack.wait_private(key, "invite")


def test_a_rate_limit_on_the_confirmation_delays_it_and_never_loses_the_command(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "web-*")
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=1)
    _, key = slack.command("start web-1")
    told = slack.wait_private(key, "rate-limiting")
    assert "your confirmation will appear" in told and "in about 1 s" in told  # the bot owes the retry, not the user
    confirmation = slack.wait_confirmation()  # posted once Slack's Retry-After has passed
    assert confirmation.request_id > 0
    statuses = [c.status for c in fake_slack.calls_to("chat.postMessage")]
    assert statuses == [429, 200]
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "All 1 instance RUNNING")
    assert start_calls(simulator) == [["web-1"]]


def test_zenlayer_refusing_the_start_is_reported_with_request_id(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    confirmation = ask_to_start(slack, grant)
    simulator.fail_next(
        "StartInstances", status=403, code="OPERATION_DENIED_INSTANCE_RECYCLED", message="in recycle bin"
    )
    # The re-check finds it no longer STOPPED, as the real service would show a recycled instance.
    simulator.set_status("web-1", "RECYCLE")

    slack.click(confirmation, action_ids.START)

    thread = slack.wait_thread(confirmation, "Not every instance started")
    assert "was RECYCLE when starting" in thread[-1]
    (refused,) = [c for c in simulator.calls if c.action == "StartInstances"]
    assert f"requestId {refused.request_id}" in thread[-1]  # the final reply quotes Zenlayer's own requestId


def test_start_outcome_unknown_with_nothing_booted_is_started_again_within_a_few_polls(
    start_bot: Callable[..., tuple[object, SlackDriver]],
    grant: Callable[..., None],
    simulator: ZenlayerSimulator,
) -> None:
    _, slack = start_bot(START_TIMEOUT_SECONDS="60")
    confirmation = ask_to_start(slack, grant)
    simulator.boot_seconds = 2  # the first reply comes while it boots, however loaded the machine
    simulator.fail_next("StartInstances", status=500, code="INTERNAL_ERROR", message="boom")

    slack.click(confirmation, action_ids.START)

    # Not after START_TIMEOUT_SECONDS: a few polls show the first call did not take effect, so it is made again.
    thread = slack.wait_thread(confirmation, "All 1 instance RUNNING", timeout=10)
    assert "outcome unknown" in thread[0]
    assert [(c.action, c.http_status) for c in simulator.calls if c.action == "StartInstances"] == [
        ("StartInstances", 500),
        ("StartInstances", 200),
    ]


def test_watch_times_out_when_boot_is_slow(
    start_bot: Callable[..., tuple[object, SlackDriver]],
    grant: Callable[..., None],
    simulator: ZenlayerSimulator,
) -> None:
    simulator.boot_seconds = 30
    _, slack = start_bot(START_TIMEOUT_SECONDS="1")
    confirmation = ask_to_start(slack, grant)

    slack.click(confirmation, action_ids.START)

    thread = slack.wait_thread(confirmation, "Stopped watching")
    assert "`web-1` — BOOTING" in thread[-1]
    wait_until(lambda: "Timed out" in message_text(slack.message(confirmation)), what="the parent to say so")


def test_restart_while_booting_resumes_in_the_same_thread(
    fake_slack: FakeSlackWebApi,
    simulator: ZenlayerSimulator,
    database_url: str,
    grant: Callable[..., None],
) -> None:
    from tests.slack_support import bot_settings, running_bot

    # Long enough that the BOOTING reply is sent before RUNNING settles the request (which would drop it unsent).
    simulator.boot_seconds = 4
    grant("U0REQUEST", "web-*")
    settings = bot_settings(database_url=database_url, slack_url=fake_slack.url, zenlayer_url=simulator.url)
    with running_bot(settings) as first:
        assert first.http is not None
        slack = SlackDriver(first.http.url, fake_slack, SIGNING_SECRET)
        slack.command("start web-1 web-2")
        confirmation = slack.wait_confirmation()
        slack.click(confirmation, action_ids.START)
        slack.wait_thread(confirmation, "BOOTING")
    assert not any("RUNNING" in t for t in slack.thread_texts(confirmation))

    with running_bot(settings) as second:
        assert second.http is not None
        thread = slack.wait_thread(confirmation, "All 2 instances RUNNING")
    assert start_calls(simulator) == [["web-1", "web-2"]]
    assert sum("All 2 instances RUNNING" in t for t in thread) == 1


def test_many_commands_at_once_are_all_acknowledged_quickly(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    for n in range(40):
        simulator.add_instance(f"load-{n}")
    grant("U0REQUEST", "load-*")
    simulator.fail_next("DescribeInstances", times=40, status=200, hang_seconds=2.0)

    # Four channels: confirmations are paced like every message (about one a second per channel, as Slack allows).
    channels = [f"C0LOAD{c}" for c in range(4)]

    def send(n: int) -> tuple[int, bool]:
        channel = channels[n % 4]
        response, _ = slack.command(f"start load-{n}", channel=channel)
        # Ordering, not a stopwatch: the ack is back while this command's lookup still hangs.
        posted = any(f"load-{n}`" in message_text(m) for m in slack.fake.channel_messages(channel))
        return response.status_code, posted

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        results = list(pool.map(send, range(40)))

    assert all(status == 200 for status, _ in results)
    assert not any(posted for _, posted in results)  # no ack waited for its lookup (latency: benchmarks/)
    posted = lambda: sum(len(slack.fake.channel_messages(c)) for c in channels)  # noqa: E731
    wait_until(lambda: posted() == 40, timeout=30, what="40 confirmations")


def test_acks_do_not_wait_for_writers_stuck_on_the_database_lock(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    # Another process holds SQLite's write lock: the work after each ack waits for it (holding a connection
    # each), and the grant checks before the acks must not queue behind those writers for a connection.
    for n in range(40):
        simulator.add_instance(f"lock-{n}")
    grant("U0REQUEST", "lock-*")
    # No grant usable in this channel, so the refusal comes in the ack itself (a grant here would have the words
    # looked up first, as they might be names).
    grant("U0OTHER", "nothing-*", channels=["C0ELSEWHERE"])
    blocker = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")

    def send(n: int) -> tuple[int, str, float]:
        user = "U0REQUEST" if n % 2 else "U0OTHER"  # refusals too: their audit rows are writes
        started = time.monotonic()
        response, _ = slack.command(f"start lock-{n}", user=user)
        return response.status_code, response.text, time.monotonic() - started

    try:
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            results = list(pool.map(send, range(40)))
    finally:
        blocker.rollback()
        blocker.close()

    assert all(status == 200 for status, _, _ in results)
    assert all(("Checking" if n % 2 else "You may not start") in text for n, (_, text, _) in enumerate(results))
    assert max(elapsed for _, _, elapsed in results) < 3.0  # Slack's own limit, not a tuning target
    wait_until(lambda: len(slack.fake.channel_messages("C0CHANNEL")) == 20, timeout=30, what="20 confirmations")


def test_health_check(start_bot: Callable[..., tuple[object, SlackDriver]]) -> None:
    running, _ = start_bot()
    assert httpx.get(f"{running.http.url}/healthz").text == "ok\n"  # type: ignore[attr-defined]


def test_a_failing_parent_edit_neither_repeats_replies_nor_blocks_the_outcome(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    confirmation = ask_to_start(slack, grant)
    slack.click(confirmation, action_ids.START)
    wait_until(lambda: fake_slack.calls_to("chat.update"), what="the click's edit")
    fake_slack.fail_next("chat.update", times=1000, error="message_not_found")  # someone deleted it

    thread = slack.wait_thread(confirmation, "All 1 instance RUNNING")

    assert len(thread) == len(set(thread)), thread  # no reply posted twice
    assert sum("All 1 instance RUNNING" in t for t in thread) == 1


def test_the_outcome_is_posted_exactly_once(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    confirmation = ask_to_start(slack, grant)
    slack.click(confirmation, action_ids.START)

    wait_until(lambda: outcome_posted(database_url, confirmation.request_id), what="the outcome recorded as posted")

    thread = slack.thread_texts(confirmation)
    assert sum("All 1 instance RUNNING" in t for t in thread) == 1, thread
    assert sum("BOOTING → :large_green_circle: RUNNING" in t for t in thread) == 0  # folded into the final reply


def outcome_posted(database_url: str, request_id: int) -> bool:
    """True once the bot has recorded that a request's final reply went out."""
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            request = repository.record(session, request_id)
            return request is not None and request.outcome_posted_at is not None
    finally:
        db.close()


def test_idle_connections_do_not_lock_slack_out(slack: SlackDriver, grant: Callable[..., None]) -> None:
    host, port = slack.events_url.removeprefix("http://").split("/")[0].split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(150)]
    try:
        response, _ = slack.command("help")
        assert response.status_code == 200
    finally:
        for sock in idle:
            sock.close()
