"""Issue 21's findings 4, 6, 7 and 9, end to end through signed HTTP: what people are told and shown is true, a click
carries no authority, a refusal reveals nothing, and nothing from the cloud can ping a channel.

These tests use only the Slack stand-in, the simulator, the driver and the database file, so the same file runs
against older versions of vm-bot (that is how each was shown to fail before its fix).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

from bot.devtools.slack_driver import Confirmation, SlackDriver, has_buttons
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.server import RunningBot
from bot.slack import action_ids
from tests.slack_support import start_calls, wait_until

CHANNEL = "C0CHANNEL"


# --- 4: a durable click is never reported as "nothing will happen" ---------------------------------------------


def _refuse_deciding_clicks(database_url: str, refuse: bool) -> None:
    """Make the database refuse (or accept again) to mark any click decided: a fault at the true edge, the
    database, which leaves the click's own insert alone."""
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
        connection.executescript(
            """
            CREATE TABLE IF NOT EXISTS test_fault (refuse INTEGER NOT NULL);
            CREATE TRIGGER IF NOT EXISTS test_refuse_deciding BEFORE UPDATE OF decided_at ON clicks
            WHEN NEW.decided_at IS NOT NULL AND (SELECT max(refuse) FROM test_fault) = 1
            BEGIN SELECT RAISE(ABORT, 'the test makes deciding clicks fail'); END;
            DELETE FROM test_fault;
            """
        )
        connection.execute("INSERT INTO test_fault VALUES (?)", (int(refuse),))


def test_a_click_whose_deciding_fails_is_reported_pending_and_decided_by_the_replica_itself(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
    grant: Callable[..., None],
    database_url: str,
    simulator: ZenlayerSimulator,
) -> None:
    grant("U0REQUEST", "web-*")  # also brings the database to the newest migration
    _refuse_deciding_clicks(database_url, refuse=True)
    _, slack = start_bot(LEASE_SECONDS="15", POLL_INTERVAL_SECONDS="0.2")
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    response, key = slack.click(confirmation, action_ids.START)
    assert response.status_code == 200  # acknowledged: the click is on disk

    told = slack.fake.wait_for(lambda: slack.private_replies(key), timeout=10, what="a reply to the clicker")
    assert not any("Nothing more will happen" in t for t in told), told  # it will happen: it is recorded
    assert any("recorded" in t and "decided shortly" in t for t in told), told

    _refuse_deciding_clicks(database_url, refuse=False)
    # One replica alone: nobody else would decide it, so it sweeps its own undecided click, a heartbeat (5 s)
    # after it was recorded rather than a whole lease (15 s): "shortly".
    slack.wait_thread(confirmation, "All 1 instance RUNNING", timeout=11)
    assert start_calls(simulator) == [["web-1"]]


# --- 6: a click acts only on the operation whose message it was made on -----------------------------------------


def test_a_forged_button_value_cannot_repoint_another_request_at_this_message(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator
) -> None:
    grant("U0ALICE", "web-*")
    grant("U0BOB", "web-*")
    slack.command("start web-1", user="U0ALICE")
    alices = slack.wait_confirmation()
    before = slack.message(alices).text
    # Bob's confirmation is never posted (Slack refuses it), so his request has no message of its own.
    fake_slack.fail_next("chat.postMessage", error="not_in_channel")
    _, bobs_key = slack.command("start web-2", user="U0BOB")
    slack.fake.wait_for(lambda: slack.private_replies(bobs_key), timeout=10, what="Bob told it was not posted")

    # Bob presses Start on Alice's message with his own request's number as the button's value.
    forged = Confirmation(alices.channel, alices.ts, alices.request_id + 1)
    response, key = slack.click(forged, action_ids.START, user="U0BOB")
    assert response.status_code == 200
    slack.fake.wait_for(lambda: slack.private_replies(key), timeout=10, what="a reply to the forged click")
    time.sleep(1.0)  # room for any edit the click would have caused

    mine = slack.message(alices)
    assert has_buttons(mine) and mine.text == before and mine.edits == 0  # Alice's message is still hers
    assert start_calls(simulator) == []
    slack.click(alices, action_ids.START, user="U0ALICE")
    slack.wait_thread(alices, "All 1 instance RUNNING")
    assert start_calls(simulator) == [["web-1"]]


# --- 7: refusals name only what the user typed --------------------------------------------------------------------


def _refusal(slack: SlackDriver, text: str, user: str) -> str:
    """Send a command and return everything the user was told about it (ack and private replies)."""
    response, key = slack.command(text, user=user)
    ack = slack.ack_text(response)
    if "may not" in ack:
        return ack
    return ack + "\n" + slack.wait_private(key, "may not")


def test_a_refusal_names_what_was_typed_and_cannot_tell_a_forbidden_instance_from_none(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    simulator.add_instance("8841237700012", "STOPPED", name="payroll-db")
    grant("U0IDS", "web-*")
    grant("U0NAMES", kind_names("web-*"))
    for user in ("U0IDS", "U0NAMES"):
        for verb in ("start", "status"):
            forbidden = _refusal(slack, f"{verb} payroll-db", user)
            unknown = _refusal(slack, f"{verb} nosuch-db", user)
            assert "8841237700012" not in forbidden, forbidden
            assert "`payroll-db`" in forbidden, forbidden
            # The same words whether the instance exists or not: no way to probe the inventory.
            assert forbidden.replace("payroll-db", "X") == unknown.replace("nosuch-db", "X")


def kind_names(pattern: str) -> Any:
    """A name selector for the grant fixture (a plain string is an id glob), wherever this version keeps it."""
    try:
        from bot.grants.selectors import Selector, SelectorKind
    except ImportError:  # before the feature slices
        from bot.domain.selectors import Selector, SelectorKind  # type: ignore[no-redef]
    return Selector(SelectorKind.NAME, pattern)


# --- 9: nothing from the cloud can ping ---------------------------------------------------------------------------

# What Slack notifies a whole channel (or a user group) for: the escapes, anywhere, and the bare words wherever
# Slack parses text itself — a message's top-level text, and mrkdwn objects without `verbatim`.
_EXPLICIT = re.compile(r"<!(here|channel|everyone|subteam\^)")
_BARE = re.compile(r"(?<![\w@])@(here|channel|everyone)\b")


def _text_objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
            yield node
        for value in node.values():
            yield from _text_objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from _text_objects(item)


def pings(payload: dict[str, Any]) -> list[str]:
    """Return the mentions of a whole channel or group Slack would notify for a message payload."""
    found = _EXPLICIT.findall(str(payload.get("text") or "")) + _BARE.findall(str(payload.get("text") or ""))
    for obj in _text_objects(payload.get("blocks") or []):
        found += _EXPLICIT.findall(obj["text"])
        if obj["type"] == "mrkdwn" and obj.get("verbatim") is not True:
            found += _BARE.findall(obj["text"])
    return found


def test_cloud_names_with_mentions_never_ping_and_mrkdwn_from_outside_is_verbatim(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi, simulator: ZenlayerSimulator
) -> None:
    simulator.rename_instance("web-1", name="@here web <!channel> @channel <!everyone|all>", zone=None)
    grant("U0REQUEST", "web-*")
    response, _ = slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "All 1 instance RUNNING")
    _, status = slack.command("status web-1")
    wait_until(lambda: fake_slack.responses(status), timeout=10, what="the status reply")

    sent = [c.args for c in fake_slack.calls if c.method in ("chat.postMessage", "chat.update", "response_url")]
    assert any("web" in str(args) for args in sent)
    ack = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    for args in [ack, *sent]:
        assert pings(args) == [], args
        for obj in _text_objects(args.get("blocks") or []):
            assert obj["type"] == "plain_text" or obj.get("verbatim") is True, obj
