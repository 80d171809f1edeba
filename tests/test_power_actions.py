"""`/vm stop` and `/vm reboot` end to end: the same conversation as a start (pre-flight, confirmation, claims,
threaded status, Zenlayer's requestId on errors), each behind a grant of its own — and the one exception: the
requester of a time-boxed run may stop that run without a stop grant."""

from __future__ import annotations

from collections.abc import Callable

from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_messages import message_text
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.slack import action_ids
from tests.slack_support import wait_until


def calls(simulator: ZenlayerSimulator, action: str) -> list[list[str]]:
    """The instance ids of every call of one action the simulator answered."""
    return [list(c.instance_ids) for c in simulator.calls if c.action == action]


def test_stop_is_confirmed_then_watched_until_stopped(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "db-*", action="stop")
    simulator.stop_seconds = 1.5  # the first poll sees STOPPING

    slack.command("stop db-1")
    confirmation = slack.wait_confirmation()
    shown = slack.message(confirmation)
    assert "<@U0REQUEST> wants to stop 1 instance" in message_text(shown)
    assert "RUNNING" in message_text(shown)
    labels = [e["text"]["text"] for b in shown.blocks if b.get("type") == "actions" for e in b["elements"]]
    assert labels == ["Stop", "Cancel"]
    assert calls(simulator, "StopInstances") == []

    slack.click(confirmation, action_ids.START)
    thread = slack.wait_thread(confirmation, "All 1 instance STOPPED")
    assert "Stop requested (Zenlayer requestId" in thread[0]
    assert any("STOPPING" in t for t in thread)
    (stop,) = [c for c in simulator.calls if c.action == "StopInstances"]
    assert stop.force_shutdown is False  # a graceful shutdown, never a power cut
    assert simulator.status("db-1") == "STOPPED"
    wait_until(lambda: "All 1 STOPPED" in message_text(slack.message(confirmation)), what="the progress line")


def test_reboot_is_confirmed_then_watched_until_running_again(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "db-*", action="reboot")
    simulator.reboot_seconds = 1.5

    slack.command("reboot db-1")
    confirmation = slack.wait_confirmation()
    assert "wants to reboot 1 instance" in message_text(slack.message(confirmation))
    slack.click(confirmation, action_ids.START)

    thread = slack.wait_thread(confirmation, "All 1 instance RUNNING")
    assert "Reboot requested (Zenlayer requestId" in thread[0]
    assert calls(simulator, "RebootInstances") == [["db-1"]]  # once: a reboot is never repeated blindly


def test_stop_and_reboot_need_a_running_instance_and_a_grant_of_their_own(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "*")  # start only
    ack, _ = slack.command("stop db-1")
    assert "You may not stop `db-1`" in slack.ack_text(ack)  # refused in the acknowledgement itself
    ack, _ = slack.command("reboot db-1")
    assert "You may not reboot `db-1`" in slack.ack_text(ack)

    grant("U0REQUEST", "*", action="stop")
    _, key = slack.command("stop web-1")
    assert "Nothing to stop" in slack.wait_private(key, "Nothing to stop")
    assert "is STOPPED" in slack.wait_private(key, "Nothing to stop")
    assert slack.fake.channel_messages("C0CHANNEL") == []
    assert calls(simulator, "StopInstances") == [] and calls(simulator, "RebootInstances") == []


def test_zenlayer_refusing_a_stop_is_reported_with_its_request_id(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "db-*", action="stop")
    slack.command("stop db-1")
    confirmation = slack.wait_confirmation()
    simulator.console_stop("db-1")  # someone stops it in the console between the confirmation and the click
    wait_until(lambda: simulator.status("db-1") == "STOPPED", what="the console stop")
    simulator.set_status("db-1", "RUNNING")  # the bot's re-check still finds it running…
    simulator.fail_next("StopInstances", status=403, code="OPERATION_DENIED_INSTANCE_NOT_RUNNING", message="no")
    simulator.set_status("db-1", "STOPPED")  # …but Zenlayer refuses: it is not

    slack.click(confirmation, action_ids.START)
    thread = slack.wait_thread(confirmation, "Not every instance stopped")
    (refused,) = [c for c in simulator.calls if c.action == "StopInstances"]
    assert f"requestId {refused.request_id}" in "\n".join(thread)


def test_a_stop_refused_because_another_operation_holds_the_instance_links_to_its_thread(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "db-*", action="stop")
    grant("U0REQUEST", "db-*", action="reboot")
    simulator.reboot_seconds = 5  # the reboot holds db-1 while this test runs
    slack.command("reboot db-1")
    reboot = slack.wait_confirmation()
    slack.command("stop db-1")
    stop = slack.wait_confirmation(index=1)

    slack.click(reboot, action_ids.START)
    slack.wait_thread(reboot, "Reboot requested")
    _, key = slack.click(stop, action_ids.START)

    refusal = slack.wait_private(key, "already being")
    assert "`db-1` is already being stopped by another request" in refusal
    assert "see its thread" in refusal and reboot.ts.replace(".", "") in refusal
    assert calls(simulator, "StopInstances") == []


def test_the_requester_of_a_run_may_stop_it_early_without_a_stop_grant(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "web-*")  # start only
    grant("U0OTHER", "web-*")
    slack.command("start web-1 --for 4h")
    start = slack.wait_confirmation()
    slack.click(start, action_ids.START)
    slack.wait_thread(start, "RUNNING in")

    ack, _ = slack.command("stop web-1", user="U0OTHER")  # not their run, and no stop grant
    assert "You may not stop `web-1`" in slack.ack_text(ack)

    slack.command("stop web-1")
    stop = slack.wait_confirmation()  # the start's confirmation has no buttons any more
    slack.click(stop, action_ids.START)
    assert "all 1 instance STOPPED" in slack.wait_thread(stop, "Stopped early, after")[-1]
    assert calls(simulator, "StopInstances") == [["web-1"]]
    wait_until(lambda: "Stopped early" in message_text(slack.message(start)), what="the run's end on its start")
