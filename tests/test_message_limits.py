"""Messages Slack accepts whatever Zenlayer returns, typed text read as typed, and the requester told the end.

End to end: signed requests to the served bot, the Slack stand-in (which rejects what Slack rejects) and the
Zenlayer simulator.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_messages import Message, message_text
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.server import RunningBot
from bot.slack import action_ids
from bot.slack.views import format as blocks
from tests.slack_support import ask_to_start, start_calls

HOSTILE = "*bold* _it_ ~s~ `code` :fire: <!channel> & more"


def long_name(n: int) -> str:
    return f"{HOSTILE} server number {n} " + "x" * 700


def shown_outside_code(text: str) -> str:
    """Return the parts of mrkdwn text that are not inside inline code."""
    return "".join(text.split("`")[::2])


def test_a_hundred_instances_with_long_names_fit_every_message(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, fake_slack: FakeSlackWebApi
) -> None:
    ids = [f"big-{n}" for n in range(100)]
    for n, instance_id in enumerate(ids):
        simulator.add_instance(instance_id, name=long_name(n))
    grant("U0REQUEST", "big-*")
    simulator.boot_seconds = 2  # the first poll sees them BOOTING however loaded the machine: a progress reply

    _, status_key = slack.command("status " + " ".join(ids))
    status = slack.wait_private(status_key, "Instance status")
    slack.command("start " + " ".join(ids))
    confirmation = slack.wait_confirmation(timeout=20)
    slack.click(confirmation, action_ids.START)
    thread = slack.wait_thread(confirmation, "All 100 instances RUNNING", timeout=30)

    assert fake_slack.rejections() == [], fake_slack.summary()
    # A page of the status answer lists 50 of those asked about, and says how to see the rest.
    assert [n for n in range(100) if f"`big-{n}`" in status] == list(range(50))
    assert "Page 1 of 2 — add `--page 2` to the same command for more." in status  # too long to repeat
    parent = slack.message(confirmation)
    # How many lines fit depends on each line's length (zone, status and, once RUNNING, the address).
    hint = f"more — `/vm status --request {confirmation.request_id}` for all"
    assert re.search(rf"…and \d+ {re.escape(hint)}", message_text(parent))
    progress = next(t for t in thread if "Start requested" in t)
    assert re.search(rf"…and \d+ {re.escape(hint)}", progress)
    for text in [progress, status, message_text(parent)]:
        assert "server number" in text and "x" * 100 not in text  # names are shortened…
        assert "x…`)" in text  # …with an ellipsis, inside the inline code that keeps `*bold*` from rendering
    assert max(len(t) for t in thread) <= blocks.REPLY_BUDGET + 200  # short, far below Slack's 40,000

    # The command the summaries point at really shows every instance of the request, page by page.
    command = f"status --request {confirmation.request_id}"
    _, first = slack.command(command)
    page_1 = slack.wait_private(first, "Instance status")
    assert f"Page 1 of 2 — `/vm {command} --page 2` for more." in page_1
    _, second = slack.command(f"{command} --page 2")
    page_2 = slack.wait_private(second, "Instance status")
    assert "Page 2 of 2." in page_2
    assert [i for i in ids if f"`{i}`" in page_1 + page_2] == ids
    assert "RUNNING" in page_2
    _, past = slack.command(f"{command} --page 3")
    assert "There is no page 3: this answer has 2 pages" in slack.wait_private(past, "no page")
    assert fake_slack.rejections() == [], fake_slack.summary()


def test_a_bad_page_number_is_a_clear_private_error(slack: SlackDriver, grant: Callable[..., None]) -> None:
    grant("U0REQUEST", "web-*")
    for typed in ("status web-1 --page two", "status web-1 --page 0", "list --page", "status --request x"):
        ack, _ = slack.command(typed)
        shown = slack.ack_text(ack)
        assert ":warning: `--" in shown and "takes a" in shown, (typed, shown)


def test_status_of_a_request_someone_may_not_see_is_refused(slack: SlackDriver, grant: Callable[..., None]) -> None:
    confirmation = ask_to_start(slack, grant)
    grant("U0OTHER", "db-*")

    _, key = slack.command(f"status --request {confirmation.request_id}", user="U0OTHER")
    refused = slack.wait_private(key, "You may not")
    assert f"`request {confirmation.request_id}`" in refused and "web-1" not in refused  # only what was typed
    _, missing = slack.command("status --request 999999", user="U0REQUEST")
    assert "There is no start request 999999" in slack.wait_private(missing, "no start request")


def test_a_3100_character_name_still_gets_a_confirmation(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, fake_slack: FakeSlackWebApi
) -> None:
    simulator.add_instance("huge-1", name="n" * 3100)
    grant("U0REQUEST", "huge-*")

    slack.command("start huge-1")
    confirmation = slack.wait_confirmation()
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "All 1 instance RUNNING")

    shown = message_text(slack.message(confirmation))
    assert "`huge-1` (" + "n" * (blocks.NAME_LIMIT - 1) + "…)" in shown
    assert fake_slack.rejections() == []
    assert start_calls(simulator) == [["huge-1"]]


def test_names_cannot_format_ping_or_link(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    simulator.add_instance("fmt-1", name=HOSTILE)
    simulator.add_instance("fmt-2", name="plain name & co")
    grant("U0REQUEST", "fmt-*")

    slack.command("start fmt-1 fmt-2")
    confirmation = slack.wait_confirmation()
    shown = message_text(slack.message(confirmation))

    # The name is inline code (where Slack formats nothing), its own backticks replaced, its brackets escaped.
    stand_in = blocks.BACKTICK_STAND_IN
    assert f"`fmt-1` (`*bold* _it_ ~s~ {stand_in}code{stand_in} :fire: &lt;!channel&gt; &amp; more`)" in shown
    assert "`fmt-2` (plain name &amp; co)" in shown  # a name with nothing to neutralise reads as it is
    outside_code = shown_outside_code(shown)
    for formatting in ("*bold*", "_it_", "~s~", ":fire:", "<!channel>"):
        assert formatting not in outside_code


@pytest.mark.parametrize(
    ("typed", "sent_by_slack", "shown"),
    [
        ("a&b", "a&amp;b", "`a&amp;b`"),
        ("x<y>", "x&lt;y&gt;", "`x&lt;y&gt;`"),
        ("&amp", "&amp;amp", "`&amp;amp`"),  # decoded once: what was typed is what is shown
    ],
)
def test_typed_ampersands_and_brackets_are_echoed_as_typed(
    slack: SlackDriver, typed: str, sent_by_slack: str, shown: str
) -> None:
    response, _ = slack.command(f"start web-1 {sent_by_slack}")

    reply = slack.ack_text(response)
    assert f"Not valid instance ids: {shown}." in reply, reply
    assert "&amp;amp;" not in reply and "&amp;lt;" not in reply.replace(shown, "")


def final_reply(fake_slack: FakeSlackWebApi, contains: str) -> Message:
    """Return the thread reply containing some text."""
    return next(m for m in fake_slack.messages.values() if m.thread_ts and contains in m.text)


def test_success_mentions_the_requester_in_the_thread_only(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    grant("U0REQUEST", "web-*")
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "All 1 instance RUNNING")

    reply = final_reply(fake_slack, "All 1 instance RUNNING")
    assert reply.text.startswith("<@U0REQUEST> ")
    assert not reply.broadcast


def test_success_is_broadcast_when_configured(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]], grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    _, slack = start_bot(BROADCAST_SUCCESS="true")
    grant("U0REQUEST", "web-*")
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "All 1 instance RUNNING")

    assert final_reply(fake_slack, "All 1 instance RUNNING").broadcast


def test_a_failure_is_broadcast_and_mentions_the_requester(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator, fake_slack: FakeSlackWebApi
) -> None:
    grant("U0REQUEST", "web-*")
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    simulator.fail_next("StartInstances", status=403, code="OPERATION_DENIED_INSTANCE_RECYCLED", message="recycled")
    simulator.set_status("web-1", "RECYCLE")
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "Not every instance started")

    reply = final_reply(fake_slack, "Not every instance started")
    assert reply.text.startswith("<@U0REQUEST> ") and reply.broadcast


def test_a_timeout_is_broadcast_and_mentions_the_requester(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]],
    grant: Callable[..., None],
    simulator: ZenlayerSimulator,
    fake_slack: FakeSlackWebApi,
) -> None:
    simulator.boot_seconds = 30
    _, slack = start_bot(START_TIMEOUT_SECONDS="1")
    grant("U0REQUEST", "web-*")
    slack.command("start web-1")
    confirmation = slack.wait_confirmation()
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "Stopped watching")

    reply = final_reply(fake_slack, "Stopped watching")
    assert reply.text.startswith("<@U0REQUEST> ") and reply.broadcast
