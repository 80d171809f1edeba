"""A name is looked up in every page Zenlayer has for it: a namesake beyond the first hundred is never missed, and an
answer cut short is never taken for a unique name. End to end, through signed requests and the simulator."""

from __future__ import annotations

import json
from collections.abc import Callable

from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_messages import message_text
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.grants.selectors import Selector, SelectorKind
from tests.slack_support import start_calls

USER = "U0REQUEST"


def test_a_namesake_past_the_first_hundred_is_found(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    for _ in range(100):
        simulator.add_instance(None, name="twin", group="ops")
    mine = simulator.add_instance(None, name="twin", group="dev")  # listed after the hundred others
    grant(USER, Selector(SelectorKind.GROUP, "dev"))

    _, key = slack.command("start twin")
    slack.picker(key)

    text = "\n".join(slack.private_replies(key))
    assert "You may not start" not in text
    assert "*twin* is the name of 1 instance" in text and mine in text


def test_status_of_a_shared_name_counts_every_namesake(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    twins = [simulator.add_instance(None, name="twin", group="dev") for _ in range(120)]
    grant(USER, Selector(SelectorKind.GROUP, "dev"))

    _, key = slack.command("status twin --page 3")
    reply = slack.wait_private(key, "Page 3 of 3")

    assert twins[-1] in reply  # the last of 120, 50 a page


def test_an_answer_cut_short_is_not_taken_for_a_unique_name(
    slack: SlackDriver, grant: Callable[..., None], simulator: ZenlayerSimulator
) -> None:
    first = simulator.add_instance(None, name="twin", group="dev")
    second = simulator.add_instance(None, name="twin", group="dev")
    grant(USER, Selector(SelectorKind.GROUP, "dev"))
    rows, _ = simulator.page([first], 1, 1)
    # Zenlayer answers with one row and says there are two (a page cut short), for the lookup by id and by name.
    short = {"requestId": "cut-short", "response": {"totalCount": 2, "dataSet": [rows[0].describe()]}}
    simulator.fail_next("DescribeInstances", times=2, status=200, body=json.dumps(short))

    _, key = slack.command("start twin")
    slack.picker(key)

    text = "\n".join(slack.private_replies(key))
    assert "*twin* is the name of 1 instance" in text and first in text
    assert not [m for m in slack.fake.channel_messages("C0CHANNEL") if "wants to start" in message_text(m)]
    assert start_calls(simulator) == [] and second not in text
