"""Parsing `/vm` text as people really type it."""

from __future__ import annotations

import pytest

from bot.slack.listeners.commands.parse import MAX_IDS, parse


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("start web-1 web-2", ["web-1", "web-2"]),
        ("start web-1,web-2", ["web-1", "web-2"]),
        ("start web-1, web-2 ,web-1", ["web-1", "web-2"]),
        ("start web-1\nweb-2\n", ["web-1", "web-2"]),
        ("START   web-1", ["web-1"]),
        ("start web\u20141", ["web-1"]),  # em-dash from a phone keyboard
        ("start \u201cweb-1\u201d \u2018web-2\u2019", ["web-1", "web-2"]),  # smart quotes
        ("start <http://web-1.example|web-1.example>", ["web-1.example"]),  # Slack linkified it
        ("start <http://web-1.example>", ["web-1.example"]),
        ("start web-1;web-2", ["web-1", "web-2"]),
    ],
)
def test_ids_are_normalised_split_and_deduplicated(text: str, ids: list[str]) -> None:
    command = parse(text)
    assert command.verb == "start"
    assert command.ids == ids
    assert command.invalid == []


@pytest.mark.parametrize("word", ["web-*", "web-?", "[ab]", "<!channel>", "-rf", "a" * 65, "web/1", "`x`"])
def test_anything_outside_the_id_charset_is_invalid(word: str) -> None:
    command = parse(f"start ok-1 {word}")
    assert command.ids == ["ok-1"]
    assert command.invalid


def test_unknown_and_empty_commands_become_help() -> None:
    assert parse("").verb == "help"
    assert parse("   ").verb == "help"
    assert parse("destroy web-1").verb == "help"
    assert parse("destroy web-1").args == ["destroy", "web-1"]


def test_too_many_ids_or_too_much_text_is_flagged() -> None:
    assert parse("start " + " ".join(f"i-{n}" for n in range(MAX_IDS + 1))).too_long
    assert parse("start " + "x" * 5000).too_long
    assert not parse("start " + " ".join(f"i-{n}" for n in range(MAX_IDS))).too_long


def test_status_parses_like_start() -> None:
    command = parse("status web-1 web-1")
    assert (command.verb, command.ids) == ("status", ["web-1"])


@pytest.mark.parametrize(
    ("sent_by_slack", "typed"),
    [
        ("a&amp;b", "a&b"),
        ("x&lt;y&gt;", "x<y>"),
        ("&amp;amp", "&amp"),  # decoded once: someone who typed "&amp" gets "&amp", not "&"
    ],
)
def test_slacks_entities_are_decoded_once_before_splitting(sent_by_slack: str, typed: str) -> None:
    command = parse(f"start web-1 {sent_by_slack}")
    assert command.ids == ["web-1"]
    assert command.invalid == [typed]


@pytest.mark.parametrize(
    ("typed", "page", "ids", "args"),
    [
        ("status web-1 web-2 --page 2", 2, ["web-1", "web-2"], ["web-1", "web-2"]),
        ("status --page=3 web-1", 3, ["web-1"], ["web-1"]),
        ("status web-1 \u2014page 2", 2, ["web-1"], ["web-1"]),  # a phone's dash for "--"
        ("list web-* --page 4", 4, [], ["web-*"]),
        ("status web-1", 1, ["web-1"], ["web-1"]),
    ],
)
def test_page_option_is_taken_out_of_status_and_list(typed: str, page: int, ids: list[str], args: list[str]) -> None:
    command = parse(typed)
    assert (command.page, command.ids, command.args, command.option_problem) == (page, ids, args, None)


@pytest.mark.parametrize("typed", ["status web-1 --page", "status web-1 --page 0", "list --page x", "status --page=-1"])
def test_a_bad_page_number_is_a_problem_to_show(typed: str) -> None:
    assert parse(typed).option_problem == "`--page` takes a page number from 1 to 1000, like `--page 2`."


def test_status_of_a_request_by_number() -> None:
    command = parse("status --request 42 --page 2")
    assert (command.request_id, command.page, command.ids, command.option_problem) == (42, 2, [], None)
    assert parse("status --request web-1").option_problem == "`--request` takes a request number, like `--request 42`."
    assert parse("start web-1 --page 2").invalid == ["--page"]  # start takes no options
