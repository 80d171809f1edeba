"""Time-boxed runs end to end: `/vm start … --for`, the reminder with Extend and Stop now, the auto-stop, grant caps
and `/vm runs` — signed requests to the served app, the Slack stand-in, the Zenlayer simulator, and the database's
clock moved forward with travel() (every time it recorded moves into the past)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from bot.db import audit
from bot.db.session import Database
from bot.devtools.slack_driver import Confirmation, SlackDriver, button_values
from bot.devtools.slack_messages import message_text
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.server import RunningBot
from bot.slack import action_ids
from tests.db_support import BACKENDS, empty_database_url, travel
from tests.slack_support import wait_until
from tests.test_perms_cli import vm_bot

HOUR = 3600.0
LEAD = 900.0  # RUN_REMINDER_SECONDS's default


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The bot's database for these tests: a SQLite file, and a PostgreSQL schema when one is configured."""
    with empty_database_url(request.param, tmp_path) as url:
        yield url


def stop_calls(simulator: ZenlayerSimulator) -> list[tuple[list[str], object]]:
    """Every StopInstances call the simulator answered: its ids and the forceShutdown it sent."""
    return [(list(c.instance_ids), c.force_shutdown) for c in simulator.calls if c.action == "StopInstances"]


def start_running(
    slack: SlackDriver, simulator: ZenlayerSimulator, text: str, *, user: str = "U0REQUEST"
) -> tuple[Confirmation, list[str]]:
    """Send `/vm TEXT`, confirm it, and wait until the thread says every instance is RUNNING."""
    slack.command(text, user=user)
    confirmation = slack.wait_confirmation()
    slack.click(confirmation, action_ids.START, user=user)
    return confirmation, slack.wait_thread(confirmation, "RUNNING in")


def events(database_url: str, name: str) -> list[dict[str, object]]:
    """The audit events of one kind, oldest first: actor, request_id and detail in one dict."""
    db = Database(database_url)
    try:
        with db.session(readonly=True) as session:
            found = [e for e in audit.latest(session, limit=10_000) if e.event == name]
            return [{"actor": e.actor, "request_id": e.request_id, **audit.detail_of(e)} for e in reversed(found)]
    finally:
        db.close()


def test_a_time_boxed_run_is_reminded_then_stopped_on_time_once(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    grant("U0REQUEST", "web-*")
    slack.command("start web-1 --for 4h")
    confirmation = slack.wait_confirmation()
    assert "Time-boxed: stopped 4 h after it is RUNNING" in message_text(slack.message(confirmation))

    slack.click(confirmation, action_ids.START)
    thread = slack.wait_thread(confirmation, "RUNNING in")
    assert re.search(r"Time-boxed: stops at \d\d:\d\d UTC, in (4 h|3 h 59 min)", thread[-1]), thread[-1]

    db = Database(database_url)
    try:
        travel(db, 4 * HOUR - LEAD + 1)  # the reminder falls due RUN_REMINDER_SECONDS before the stop
        reminder = slack.wait_reminder(confirmation)
        shown = slack.fake.messages[(reminder.channel, reminder.ts)]
        assert "<@U0REQUEST>" in shown.text and "stops at" in shown.text and "in 14 min" in shown.text
        assert [b["action_id"] for b in _buttons(shown)] == [action_ids.EXTEND, action_ids.STOP_RUN]
        assert stop_calls(simulator) == []

        travel(db, LEAD)
        slack.wait_thread(confirmation, "Stopped after 4 h (time-boxed run)")
    finally:
        db.close()
    assert stop_calls(simulator) == [(["web-1"], False)]  # once, graceful
    assert simulator.status("web-1") == "STOPPED"
    wait_until(lambda: "Stopped after 4 h" in message_text(slack.message(confirmation)), what="the parent to show it")
    assert len(slack.wait_thread(confirmation, "Stopped after")) == len(slack.thread_texts(confirmation))
    assert [e["request_id"] for e in events(database_url, "run_auto_stopped")] == [confirmation.request_id]


def _buttons(message: object) -> list[dict[str, object]]:
    """The buttons of a message."""
    return [
        element
        for block in getattr(message, "blocks", [])
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    ]


def test_extend_moves_the_stop_and_an_extend_after_the_stop_is_told_so(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    grant("U0REQUEST", "web-*")
    confirmation, _ = start_running(slack, simulator, "start web-1 --for 1h")
    db = Database(database_url)
    try:
        travel(db, HOUR - LEAD + 1)
        reminder = slack.wait_reminder(confirmation)
        _, key = slack.click(reminder, action_ids.EXTEND)
        assert "Extended by 1 h" in slack.wait_private(key, "Extended")

        travel(db, LEAD + 5)  # past the first stop time: the extension holds it off
        _, key = slack.click(reminder, action_ids.STOP_RUN, user="U0NOBODY")  # takes the engine a few ticks
        slack.wait_private(key, "Only the person")
        assert stop_calls(simulator) == []
        assert simulator.status("web-1") == "RUNNING"

        travel(db, HOUR)  # the second reminder came and went; the stop is due now
        slack.wait_thread(confirmation, "Stopped after 2 h (time-boxed run)")
        assert stop_calls(simulator) == [(["web-1"], False)]

        _, late = slack.click(reminder, action_ids.EXTEND)
        assert "Too late" in slack.wait_private(late, "Too late")
    finally:
        db.close()
    assert simulator.status("web-1") == "STOPPED"
    assert [e["actor"] for e in events(database_url, "run_extended")] == ["U0REQUEST"]


def test_an_extend_landing_while_the_due_stop_is_being_checked_wins_and_nothing_stops(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    grant("U0REQUEST", "web-*")
    later, _ = start_running(slack, simulator, "start web-2 --for 90m")  # falls due after the race: a marker
    confirmation, _ = start_running(slack, simulator, "start web-1 --for 1h")
    db = Database(database_url)
    try:
        travel(db, HOUR - LEAD + 1)
        reminder = slack.wait_reminder(confirmation)
        # The timer reads the run as due, then asks Zenlayer whether it still runs: that answer hangs meanwhile.
        simulator.fail_next("DescribeInstancesStatus", status=None, hang_seconds=3)
        travel(db, LEAD)
        wait_until(lambda: not simulator.faults, what="the timer to be asking Zenlayer about the due run")
        _, key = slack.click(reminder, action_ids.EXTEND)
        assert "Extended by 1 h" in slack.wait_private(key, "Extended")
        # The timer's compare-and-set comes after the extension and finds web-1 no longer due. Its passes run one
        # at a time: once web-2 (due 30 minutes on) is stopped, the pass that raced is long over.
        travel(db, 30 * 60)
        slack.wait_thread(later, "Stopped after 1 h 30 min (time-boxed run)")
    finally:
        db.close()
    assert stop_calls(simulator) == [(["web-2"], False)]
    assert simulator.status("web-1") == "RUNNING"
    assert not any("Stopped" in t for t in slack.thread_texts(confirmation))


def test_only_the_requester_or_an_admin_can_extend_or_stop_a_run(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    grant("U0REQUEST", "web-*")
    grant("U0OTHER", "web-*")  # may start the same instances, but this run is not theirs
    grant("U0ADMIN", "*", action="admin")
    confirmation, _ = start_running(slack, simulator, "start web-1 --for 1h")
    db = Database(database_url)
    try:
        travel(db, HOUR - LEAD + 1)
        reminder = slack.wait_reminder(confirmation)
    finally:
        db.close()

    _, key = slack.click(reminder, action_ids.STOP_RUN, user="U0OTHER")
    assert "Only the person who started this run" in slack.wait_private(key, "Only")
    _, key = slack.click(reminder, action_ids.EXTEND, user="U0OTHER")
    assert "Only the person who started this run" in slack.wait_private(key, "Only")
    assert [e["outcome"] for e in events(database_url, "click_refused")] == ["not_run_owner", "not_run_owner"]

    _, key = slack.click(reminder, action_ids.STOP_RUN, user="U0ADMIN")
    assert "Stopping it now" in slack.wait_private(key, "Stopping")
    slack.wait_thread(confirmation, "Stopped early")
    assert stop_calls(simulator) == [(["web-1"], False)]
    assert [e["actor"] for e in events(database_url, "run_stopped_early")] == ["U0ADMIN"]


def test_a_capped_grant_time_boxes_every_start_and_refuses_longer_runs_and_extensions(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    grant("U0REQUEST", "web-*", max_run_seconds=2 * HOUR)

    _, key = slack.command("start web-1 --for 3h")
    refusal = slack.wait_private(key, "cap")
    assert "cap runs of these instances at 2 h" in refusal and "`--for 2h`" in refusal
    assert slack.fake.channel_messages("C0CHANNEL") == []

    slack.command("start web-1")  # no --for: the cap is the run
    confirmation = slack.wait_confirmation()
    assert "Time-boxed: stopped 2 h after it is RUNNING" in message_text(slack.message(confirmation))
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "RUNNING in")

    db = Database(database_url)
    try:
        travel(db, 2 * HOUR - LEAD + 1)
        reminder = slack.wait_reminder(confirmation)
    finally:
        db.close()
    shown = slack.fake.messages[(reminder.channel, reminder.ts)]
    # 14 minutes left + 1 h is within now + 2 h: Extend is offered; after one extension (1 h 14 min left) it is not.
    assert [b["action_id"] for b in _buttons(shown)] == [action_ids.EXTEND, action_ids.STOP_RUN]
    _, key = slack.click(reminder, action_ids.EXTEND)
    slack.wait_private(key, "Extended by 1 h")
    _, key = slack.click(reminder, action_ids.EXTEND)  # the button is still on the old message: the cap decides
    assert "past the 2 h your grants allow" in slack.wait_private(key, "Not extended")
    assert [e["outcome"] for e in events(database_url, "click_refused")] == ["over_cap"]


def test_the_most_generous_grant_decides_the_cap(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0REQUEST", "web-*", max_run_seconds=HOUR)
    grant("U0REQUEST", "web-1")  # uncapped for web-1
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    assert "Time-boxed" not in message_text(slack.message(confirmation))


def test_runs_stopped_or_released_behind_the_bots_back_are_noted_not_stopped_again(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    grant("U0REQUEST", "web-*")
    confirmation, _ = start_running(slack, simulator, "start web-1 web-2 --for 30m")
    simulator.console_stop("web-1")
    simulator.console_release("web-2")
    wait_until(lambda: simulator.statuses().get("web-1") == "STOPPED", what="the console stop")
    db = Database(database_url)
    try:
        travel(db, 30 * 60 + 1)
        reply = slack.wait_thread(confirmation, "nothing was left to stop")[-1]
    finally:
        db.close()
    assert "`web-1` — already STOPPED: stopped elsewhere" in reply
    assert "`web-2` — released elsewhere (no longer exists)" in reply
    assert stop_calls(simulator) == []


def test_a_short_run_is_reminded_at_half_time(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    grant("U0REQUEST", "web-*")
    confirmation, _ = start_running(slack, simulator, "start web-1 \u2014for 10m")  # a phone's dash
    db = Database(database_url)
    try:
        travel(db, 5 * 60 - 30)
        assert not [m for m in slack.fake.thread(confirmation.channel, confirmation.ts) if button_values(m)]
        travel(db, 31)
        slack.wait_reminder(confirmation)
    finally:
        db.close()


def test_runs_lists_your_runs_and_an_admin_sees_everyones_with_all(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
    grant: Callable[..., None],
    simulator: ZenlayerSimulator,
    fake_slack: FakeSlackWebApi,
) -> None:
    _, slack = start_bot()
    grant("U0REQUEST", "web-*")
    grant("U0ADMIN", "*", action="admin")
    start_running(slack, simulator, "start web-1 --for 4h")

    _, key = slack.command("runs")
    mine = slack.wait_private(key, "Your time-boxed runs")
    assert "`web-1`" in mine and re.search(r"(4 h|3 h 59 min) left", mine)
    blocks = fake_slack.responses(key)[-1]["blocks"]
    assert any(e.get("action_id") == action_ids.STOP_RUN for b in blocks for e in b.get("elements", []))

    _, key = slack.command("runs", user="U0ADMIN")
    assert "No time-boxed runs of yours" in slack.wait_private(key, "No time-boxed runs")
    _, key = slack.command("runs --all", user="U0ADMIN")
    everyone = slack.wait_private(key, "you administer")
    assert "`web-1`" in everyone and "<@U0REQUEST>" in everyone
    _, key = slack.command("runs --all", user="U0OTHER")  # no admin grant: nobody's runs
    assert "No time-boxed runs in the channels you administer" in slack.wait_private(key, "No time-boxed")


def test_an_admin_grants_a_capped_start_from_slack_and_the_cap_shows_in_grants_and_help(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    grant("U0ADMIN", "*", action="admin")
    _, key = slack.command("grant <@U0DEV> web-* --max-run 2h", user="U0ADMIN")
    assert "runs of at most 2 h" in slack.wait_private(key, "Granted")
    _, key = slack.command("grant <@U0DEV> web-* --action stop --max-run 2h", user="U0ADMIN")
    assert "--max-run caps the runs of start grants only" in slack.wait_private(key, "start grants only")

    _, key = slack.command("grants", user="U0DEV")
    assert "start `web-*` in any channel, runs of at most 2 h" in slack.wait_private(key, "Your vm-bot grants")
    _, key = slack.command("help", user="U0DEV")
    shown = slack.wait_private(key, "What you can do")
    assert "runs of at most 2 h" in shown and "--for DURATION" in shown


def test_an_auto_stop_zenlayer_failed_says_it_will_try_again_and_does(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    grant("U0REQUEST", "web-*")
    confirmation, _ = start_running(slack, simulator, "start web-1 --for 30m")
    simulator.fail_next("StopInstances", status=500, times=2)  # both calls fail, nothing applied
    db = Database(database_url)
    try:
        travel(db, 30 * 60 + 1)
        failed = slack.wait_thread(confirmation, "Not every instance stopped")[-1]
        assert "I will try again in a minute" in failed
        assert simulator.status("web-1") == "RUNNING"

        travel(db, 61)
        slack.wait_thread(confirmation, "Stopped after 30 min (time-boxed run)")
    finally:
        db.close()
    assert [ids for ids, _ in stop_calls(simulator)] == [["web-1"]] * 3
    assert simulator.status("web-1") == "STOPPED"


def test_a_stop_now_zenlayer_failed_leaves_the_time_box_standing_and_the_timer_stops_it_on_time(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, database_url: str
) -> None:
    grant("U0REQUEST", "web-*")
    confirmation, _ = start_running(slack, simulator, "start web-1 --for 1h")
    db = Database(database_url)
    try:
        travel(db, HOUR - LEAD + 1)
        reminder = slack.wait_reminder(confirmation)
        simulator.fail_next("StopInstances", status=500, times=2)  # both calls fail, nothing applied
        slack.click(reminder, action_ids.STOP_RUN)
        failed = slack.wait_thread(confirmation, "Not every instance stopped")[-1]
        assert "The run stays time-boxed: I will still stop it when its time is up" in failed
        assert simulator.status("web-1") == "RUNNING" and len(stop_calls(simulator)) == 2

        travel(db, LEAD)  # its time is up: the timer stops it, as it would have without the Stop now
        slack.wait_thread(confirmation, "Stopped after 1 h (time-boxed run)")
    finally:
        db.close()
    assert [ids for ids, _ in stop_calls(simulator)] == [["web-1"]] * 3
    assert simulator.status("web-1") == "STOPPED"


def run_counters(slack: SlackDriver) -> dict[str, float]:
    """The runs' counters /metrics shows (one sample each; instance-hours by how runs ended)."""
    answer = httpx.get(slack.events_url.removesuffix("/slack/events") + "/metrics", timeout=10)
    return {
        s.name + "".join(f"{{{v}}}" for v in s.labels.values()): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
        if s.name.startswith("vmbot_run_") and s.name.endswith("_total")
    }


def test_pruning_old_runs_leaves_the_run_counters_where_they_were(
    slack: SlackDriver,
    grant: Callable[..., None],
    simulator: ZenlayerSimulator,
    database_url: str,
    tmp_path: Path,
) -> None:
    grant("U0REQUEST", "web-*")
    extended, _ = start_running(slack, simulator, "start web-1 --for 1h")
    slack.command("start web-2 --for 1h", channel="C0OTHER")
    early = slack.wait_confirmation(channel="C0OTHER")
    slack.click(early, action_ids.START)
    slack.wait_thread(early, "RUNNING in")
    db = Database(database_url)
    try:
        travel(db, HOUR - LEAD + 1)
        _, key = slack.click(slack.wait_reminder(extended), action_ids.EXTEND)
        slack.wait_private(key, "Extended")
        slack.click(slack.wait_reminder(early), action_ids.STOP_RUN)
        slack.wait_thread(early, "Stopped early")
        travel(db, HOUR + LEAD)
        slack.wait_thread(extended, "Stopped after 2 h (time-boxed run)")
        before = run_counters(slack)
        assert before["vmbot_run_auto_stops_total"] == 1 and before["vmbot_run_extensions_total"] == 1
        assert before["vmbot_run_instance_hours_total{auto}"] == pytest.approx(2, abs=0.02)
        assert before["vmbot_run_instance_hours_total{early}"] == pytest.approx(0.75, abs=0.02)
        assert before["vmbot_run_instance_hours_saved_total"] == pytest.approx(0.25, abs=0.02)

        travel(db, 2 * 86400)
        pruned = vm_bot(tmp_path, database_url, "db", "prune", "--older-than", "1d", "--audit")
        assert pruned.returncode == 0, pruned.stderr
        with db.session(readonly=True) as session:
            assert session.scalar(text("SELECT COUNT(*) FROM runs")) == 0  # the runs are gone: pruned for real
    finally:
        db.close()
    after = run_counters(slack)
    assert after == pytest.approx(before)
