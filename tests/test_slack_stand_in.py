"""The Slack stand-in rejects what Slack rejects — messages, views, trigger ids, step completions — and fails on
demand as Slack does; driven by slack_sdk's client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.devtools.slack_driver import Confirmation, SlackConversation, SlackDriver
from bot.devtools.slack_messages import message_text
from bot.devtools.slack_web_api import MALFORMED, MISUSED, FakeSlackWebApi
from tests.fake_socket_mode import Ack
from tests.slack_support import wait_until


@pytest.fixture
def fake_slack() -> Iterator[FakeSlackWebApi]:
    """The stand-in, without the shared fixture's check: these tests send malformed messages on purpose."""
    with FakeSlackWebApi() as fake:
        yield fake


@pytest.fixture
def client(fake_slack: FakeSlackWebApi) -> Iterator[WebClient]:
    """A plain slack_sdk client (no retries) pointed at the stand-in."""
    yield WebClient(token="xoxb-test", base_url=fake_slack.url, retry_handlers=[])


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(text: str = "Start", value: str = "1") -> dict[str, Any]:
    return {
        "type": "actions",
        "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": "start", "value": value}
        ],
    }


def error_of(client: WebClient, **kwargs: Any) -> str | None:
    """Post a message and return Slack's error code, or None when it was accepted."""
    try:
        client.chat_postMessage(channel="C0CHANNEL", **kwargs)
    except SlackApiError as exc:
        return str(exc.response["error"])
    return None


ACCEPTED: list[dict[str, Any]] = [
    {"text": "x" * 40_000},
    {"text": "t", "blocks": [section("x" * 3000)]},
    {"text": "t", "blocks": [section("x")] * 50},
    {"text": "t", "blocks": [button("x" * 75, "1" * 2000)]},
    {"text": "t", "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 10}]},
    {"text": "t", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 150}}]},
]
REJECTED: list[tuple[dict[str, Any], str]] = [
    ({"text": "x" * 40_001}, "msg_too_long"),
    ({}, "no_text"),
    ({"text": "t", "blocks": [section("x" * 3001)]}, "invalid_blocks"),
    ({"text": "t", "blocks": [section("")]}, "invalid_blocks"),
    ({"text": "t", "blocks": [section("x")] * 51}, "invalid_blocks"),
    ({"text": "t", "blocks": [button("x" * 76)]}, "invalid_blocks"),
    ({"text": "t", "blocks": [button(value="1" * 2001)]}, "invalid_blocks"),
    (
        {"text": "t", "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}]},
        "invalid_blocks",
    ),
    (
        {"text": "t", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]},
        "invalid_blocks",
    ),
    ({"text": "t", "blocks": [{"type": "no_such_block"}]}, "invalid_blocks"),
    (
        {"text": "t", "blocks": [{"type": "section", "block_id": "b" * 256, "text": {"type": "mrkdwn", "text": "x"}}]},
        "invalid_blocks",
    ),
]


@pytest.mark.parametrize("message", ACCEPTED, ids=range(len(ACCEPTED)))
def test_messages_at_slacks_limits_are_accepted(client: WebClient, message: dict[str, Any]) -> None:
    assert error_of(client, **message) is None


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize(("message", "error"), REJECTED, ids=range(len(REJECTED)))
def test_messages_over_slacks_limits_are_rejected(
    client: WebClient, fake_slack: FakeSlackWebApi, message: dict[str, Any], error: str
) -> None:
    assert error_of(client, **message) == error
    assert fake_slack.channel_messages("C0CHANNEL") == []  # nothing was posted
    assert [c.response["error"] for c in fake_slack.rejections()] == [error]


def test_updates_are_checked_too(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    ts = client.chat_postMessage(channel="C0CHANNEL", text="short")["ts"]
    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel="C0CHANNEL", ts=ts, text="t", blocks=[section("x" * 3001)])
    assert caught.value.response["error"] == "invalid_blocks"
    assert fake_slack.messages[("C0CHANNEL", ts)].text == "short"


def test_response_url_posts_are_checked(fake_slack: FakeSlackWebApi) -> None:
    url = fake_slack.response_url("k")
    too_long = httpx.post(url, json={"text": "x" * 40_001})
    bad_blocks = httpx.post(url, json={"text": "t", "blocks": [section("x" * 3001)]})
    fine = httpx.post(url, json={"text": "fine"})

    assert (too_long.status_code, too_long.text) == (400, "msg_too_long")
    assert (bad_blocks.status_code, bad_blocks.text) == (400, "invalid_blocks")
    assert fine.status_code == 200
    assert [r["text"] for r in fake_slack.responses("k")] == ["fine"]  # only what the user could see


def test_a_rate_limit_holds_one_channel_for_its_retry_after(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    fake_slack.rate_limit(20, channel="C0BUSY")

    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0BUSY", text="held")
    client.chat_postMessage(channel="C0QUIET", text="goes through")

    assert caught.value.response.status_code == 429
    assert int(caught.value.response.headers["Retry-After"]) in (19, 20)
    assert [m.text for m in fake_slack.channel_messages("C0QUIET")] == ["goes through"]


def test_a_rate_limit_can_hold_one_method_and_lapses(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    ts = client.chat_postMessage(channel="C0CHANNEL", text="v1")["ts"]
    fake_slack.rate_limit(0.3, method="chat.update")

    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel="C0CHANNEL", ts=ts, text="v2")
    client.chat_postMessage(channel="C0CHANNEL", text="posts still work")
    assert caught.value.response.headers["Retry-After"] == "1"  # whole seconds, rounded up, as Slack sends
    wait_until(lambda: _update_passes(client, ts), timeout=5, what="the limit to lapse")


def _update_passes(client: WebClient, ts: str) -> bool:
    try:
        client.chat_update(channel="C0CHANNEL", ts=ts, text="v2")
    except SlackApiError:
        return False
    return True


@pytest.mark.parametrize("error", ["invalid_auth", "token_revoked", "account_inactive"])
def test_an_uninstalled_app_gets_permanent_auth_errors(
    client: WebClient, fake_slack: FakeSlackWebApi, error: str
) -> None:
    fake_slack.uninstall(error)
    for call in (lambda: client.auth_test(), lambda: client.chat_postMessage(channel="C0CHANNEL", text="t")):
        with pytest.raises(SlackApiError) as caught:
            call()
        assert caught.value.response["error"] == error
    fake_slack.reinstall()
    assert client.chat_postMessage(channel="C0CHANNEL", text="t")["ok"]


def test_a_fault_can_target_one_channel(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    fake_slack.fail_next("chat.postMessage", error="is_archived", channel="C0OLD")
    assert error_of(client, text="elsewhere") is None
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0OLD", text="t")
    assert caught.value.response["error"] == "is_archived"


def test_a_delayed_call_takes_effect_before_its_late_answer(fake_slack: FakeSlackWebApi) -> None:
    impatient = WebClient(token="xoxb-test", base_url=fake_slack.url, retry_handlers=[], timeout=1)
    fake_slack.delay_next("chat.postMessage", 2, channel="C0SLOW")

    with pytest.raises(TimeoutError):
        impatient.chat_postMessage(channel="C0SLOW", text="posted all the same")

    assert [m.text for m in fake_slack.channel_messages("C0SLOW")] == ["posted all the same"]
    assert impatient.chat_postMessage(channel="C0SLOW", text="next one")["ok"]  # only the next call was late


def test_acknowledgements_are_checked_in_both_modes() -> None:
    too_long = {"text": "x" * 40_001}
    assert SlackDriver.refusal(httpx.Response(200, json=too_long)) == "msg_too_long"
    assert SlackDriver.refusal(httpx.Response(200, json={"text": "fine"})) is None
    assert SlackDriver.refusal(httpx.Response(200)) is None  # a bare ack
    assert Ack("e1", too_long).refused == "msg_too_long"
    assert Ack("e2", None).refused is None


# --- views, trigger ids and Workflow Builder steps -----------------------------------------------------------


def modal(blocks: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """A modal view with one input block (so it needs a submit button), overridable field by field."""
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": "start_modal",
        "title": {"type": "plain_text", "text": "Start instances"},
        "submit": {"type": "plain_text", "text": "Start"},
        "blocks": blocks if blocks is not None else [text_input()],
    }
    view.update(fields)
    return view


def text_input(block_id: str = "names") -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": block_id,
        "label": {"type": "plain_text", "text": "Names"},
        "element": {"type": "plain_text_input", "action_id": block_id},
    }


def select(options: int, text: str = "web-1") -> dict[str, Any]:
    """An input block with a static select of `options` options, each showing `text`."""
    return {
        "type": "input",
        "block_id": "pick",
        "label": {"type": "plain_text", "text": "Pick"},
        "element": {
            "type": "static_select",
            "action_id": "pick",
            "options": [{"text": {"type": "plain_text", "text": text}, "value": str(i)} for i in range(options)],
        },
    }


def checkboxes(options: int) -> dict[str, Any]:
    choices = [{"text": {"type": "mrkdwn", "text": f"`i-{i}`"}, "value": str(i)} for i in range(options)]
    return {"type": "actions", "elements": [{"type": "checkboxes", "action_id": "tick", "options": choices}]}


def refusal(call: Callable[[], object]) -> str:
    """Make a Web API call Slack must refuse, and return its error."""
    with pytest.raises(SlackApiError) as caught:
        call()
    return str(caught.value.response["error"])


def open_error(client: WebClient, fake: FakeSlackWebApi, view: dict[str, Any]) -> tuple[str | None, list[str]]:
    """Open a modal with a fresh trigger; return Slack's error (None when it opened) and its messages."""
    try:
        client.views_open(trigger_id=fake.issue_trigger("U0REQUEST", "C0CHANNEL"), view=view)
    except SlackApiError as exc:
        return str(exc.response["error"]), list(exc.response.get("response_metadata", {}).get("messages", []))
    return None, []


ACCEPTED_VIEWS: list[dict[str, Any]] = [
    modal([section("x")] * 100, submit=None),
    modal(title={"type": "plain_text", "text": "t" * 24}),
    modal(private_metadata="m" * 3000, callback_id="c" * 255),
    modal(submit={"type": "plain_text", "text": "s" * 24}, close={"type": "plain_text", "text": "c" * 24}),
    modal([select(100, "o" * 75)]),
    modal([checkboxes(10)], submit=None),
]
REJECTED_VIEWS: list[tuple[dict[str, Any], str]] = [
    (modal([section("x")] * 101, submit=None), "/view/blocks"),
    (modal(title={"type": "plain_text", "text": "t" * 25}), "/view/title/text"),
    (modal(title=None), "/view/title/text"),
    (modal(private_metadata="m" * 3001), "/view/private_metadata"),
    (modal(callback_id="c" * 256), "/view/callback_id"),
    (modal(submit={"type": "plain_text", "text": "s" * 25}), "/view/submit/text"),
    (modal(close={"type": "plain_text", "text": "c" * 25}), "/view/close/text"),
    (modal(submit=None), "/view/submit"),  # input blocks need a submit button
    (modal([select(1, "o" * 76)]), "/view/blocks/0"),
    (modal([select(101)]), "/view/blocks/0"),
    (modal([checkboxes(11)], submit=None), "/view/blocks/0"),
    (modal([text_input("a"), text_input("a")]), "/view/blocks/1/block_id"),
    (modal([]), "/view/blocks"),
    (modal([{"type": "no_such_block"}]), "/view/blocks/0"),
    ({**modal(), "type": "home"}, "/view/type"),
]


@pytest.mark.parametrize("view", ACCEPTED_VIEWS, ids=range(len(ACCEPTED_VIEWS)))
def test_modals_at_slacks_limits_open(client: WebClient, fake_slack: FakeSlackWebApi, view: dict[str, Any]) -> None:
    assert open_error(client, fake_slack, view) == (None, [])
    assert fake_slack.modals("U0REQUEST")[-1].callback_id == view["callback_id"]


@pytest.mark.parametrize(("view", "pointer"), REJECTED_VIEWS, ids=range(len(REJECTED_VIEWS)))
def test_modals_over_slacks_limits_are_refused_with_slacks_messages(
    client: WebClient, fake_slack: FakeSlackWebApi, view: dict[str, Any], pointer: str
) -> None:
    error, messages = open_error(client, fake_slack, view)

    assert error == "invalid_arguments"
    assert any(m.startswith("[ERROR] ") and m.endswith(f"[json-pointer:{pointer}]") for m in messages), messages
    assert fake_slack.modals("U0REQUEST") == []
    assert [c.response["error"] for c in fake_slack.rejections()] == ["invalid_arguments"]
    assert "invalid_arguments" in MALFORMED  # so the shared fixture fails any test whose bot sent such a view


def test_a_view_over_250_kb_is_too_large(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    big = modal([section("x" * 3000)] * 90, submit=None)

    assert open_error(client, fake_slack, big) == ("view_too_large", [])
    assert "view_too_large" in MALFORMED


def test_a_trigger_opens_one_modal_within_three_seconds(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    used = fake_slack.issue_trigger("U0REQUEST")
    late = fake_slack.issue_trigger("U0REQUEST")
    just_in_time = fake_slack.issue_trigger("U0REQUEST")
    client.views_open(trigger_id=used, view=modal())

    fake_slack.advance_clock(2.9)
    client.views_open(trigger_id=just_in_time, view=modal())
    fake_slack.advance_clock(0.2)

    for trigger_id, error in (
        (used, "exchanged_trigger_id"),
        (late, "expired_trigger_id"),
        ("1.2.3", "invalid_trigger_id"),
    ):
        with pytest.raises(SlackApiError) as caught:
            client.views_open(trigger_id=trigger_id, view=modal())
        assert caught.value.response["error"] == error
    assert {"exchanged_trigger_id", "invalid_trigger_id"} <= MISUSED and "expired_trigger_id" not in MISUSED


def test_a_refused_view_leaves_its_trigger_usable(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    trigger_id = fake_slack.issue_trigger("U0REQUEST", "C0OPS")
    with pytest.raises(SlackApiError):
        client.views_open(trigger_id=trigger_id, view=modal(title={"type": "plain_text", "text": "t" * 25}))

    opened = client.views_open(trigger_id=trigger_id, view=modal())["view"]

    held = fake_slack.modals("U0REQUEST")
    assert [v.id for v in held] == [opened["id"]] and held[0].opened_from == "C0OPS"
    assert opened["state"] == {"values": {}} and opened["hash"] and opened["root_view_id"] == opened["id"]


def test_a_modal_is_updated_by_id_unless_its_hash_is_stale(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    opened = client.views_open(trigger_id=fake_slack.issue_trigger("U0REQUEST"), view=modal())["view"]
    updated = client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal(private_metadata="v2"))["view"]

    with pytest.raises(SlackApiError) as stale:
        client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal())
    with pytest.raises(SlackApiError) as unknown:
        client.views_update(view_id="V404", view=modal())

    assert updated["id"] == opened["id"] and updated["hash"] != opened["hash"]
    assert fake_slack.view(opened["id"]).private_metadata == "v2"
    assert (stale.value.response["error"], unknown.value.response["error"]) == ("hash_conflict", "not_found")


def test_a_modal_holds_three_views_at_most(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    client.views_open(trigger_id=fake_slack.issue_trigger("U0REQUEST"), view=modal())
    for _ in range(2):
        client.views_push(trigger_id=fake_slack.issue_trigger("U0REQUEST"), view=modal(callback_id="more"))

    with pytest.raises(SlackApiError) as caught:
        client.views_push(trigger_id=fake_slack.issue_trigger("U0REQUEST"), view=modal())

    assert caught.value.response["error"] == "push_limit_reached"
    stack = fake_slack.modals("U0REQUEST")
    assert [v.callback_id for v in stack] == ["start_modal", "more", "more"]
    assert stack[2].body["previous_view_id"] == stack[1].id and stack[2].body["root_view_id"] == stack[0].id


def test_each_user_has_one_home_republished_in_place(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    home = {"type": "home", "blocks": [section("*Running for you*: nothing")]}
    first = client.views_publish(user_id="U0ALICE", view=home)["view"]
    client.views_publish(user_id="U0BOB", view={"type": "home", "blocks": [section("bob's")]})
    second = client.views_publish(
        user_id="U0ALICE", view={**home, "blocks": [section("web-1 for 1h")]}, hash=first["hash"]
    )

    with pytest.raises(SlackApiError) as stale:
        client.views_publish(user_id="U0ALICE", view=home, hash=first["hash"])

    alice = fake_slack.home("U0ALICE")
    assert alice is not None and alice.id == first["id"] == second["view"]["id"] and alice.versions == 2
    assert message_text({"blocks": alice.blocks}).strip() == "web-1 for 1h"
    assert fake_slack.home("U0CAROL") is None
    assert stale.value.response["error"] == "hash_conflict"


@pytest.mark.parametrize(
    "home",
    [
        {"type": "home", "blocks": [section("x")] * 101},
        {"type": "home", "blocks": [section("x")], "submit": {"type": "plain_text", "text": "Go"}},
        modal(),
    ],
    ids=["101 blocks", "submit", "a modal"],
)
def test_a_home_over_slacks_limits_is_refused(
    client: WebClient, fake_slack: FakeSlackWebApi, home: dict[str, Any]
) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.views_publish(user_id="U0ALICE", view=home)

    assert caught.value.response["error"] == "invalid_arguments"
    assert fake_slack.home("U0ALICE") is None


def test_a_submission_answer_changes_the_modal_as_slack_does(client: WebClient, fake_slack: FakeSlackWebApi) -> None:
    root = fake_slack.view(
        client.views_open(trigger_id=fake_slack.issue_trigger("U0REQUEST"), view=modal())["view"]["id"]
    )

    errors = fake_slack.view_submission_answered(
        root.id, 200, {"response_action": "errors", "errors": {"names": "No."}}
    )
    stray = fake_slack.view_submission_answered(root.id, 200, {"response_action": "errors", "errors": {"nope": "No."}})
    fake_slack.view_submission_answered(
        root.id, 200, {"response_action": "update", "view": modal(private_metadata="2")}
    )
    fake_slack.view_submission_answered(root.id, 200, {"response_action": "push", "view": modal(callback_id="next")})
    pushed = fake_slack.modals("U0REQUEST")[-1]
    fake_slack.view_submission_answered(pushed.id, 200, {})  # a bare ack closes the view submitted
    assert fake_slack.modals("U0REQUEST") == [root] and root.private_metadata == "2"
    fake_slack.view_submission_answered(root.id, 200, {"response_action": "clear"})

    assert errors.response == {"ok": True}
    assert stray.response["error"] == "invalid_arguments"  # errors go under input blocks only
    assert fake_slack.modals("U0REQUEST") == [] and root.closed and pushed.closed
    assert [c.method for c in fake_slack.rejections()] == ["view_submission"]


def test_options_answers_are_checked_like_slack_shows_them(fake_slack: FakeSlackWebApi) -> None:
    def option(text: str = "web-1", value: str = "1") -> dict[str, Any]:
        return {"text": {"type": "plain_text", "text": text}, "value": value}

    fine = [
        {"options": [option()] * 100},
        {"options": [option("o" * 75, "v" * 150)]},
        {"options": []},
        {"option_groups": [{"label": {"type": "plain_text", "text": "SEL-A"}, "options": [option()]}]},
    ]
    refused = [
        {"options": [option()] * 101},
        {"options": [option("o" * 76)]},
        {"options": [option(value="v" * 151)]},
        {"options": [{"text": {"type": "mrkdwn", "text": "*web-1*"}, "value": "1"}]},
        {},
    ]

    assert [fake_slack.options_answered("instances", 200, a).response["ok"] for a in fine] == [True] * 4
    assert [fake_slack.options_answered("instances", 200, a).response["ok"] for a in refused] == [False] * 5
    assert {c.response["error"] for c in fake_slack.rejections()} == {"invalid_arguments"}


def test_a_step_completes_once_with_its_just_in_time_token(fake_slack: FakeSlackWebApi) -> None:
    execution = fake_slack.start_function("start_step", required_outputs=["status"])
    step = WebClient(token=execution.token, base_url=fake_slack.url, retry_handlers=[])
    bot = WebClient(token="xoxb-test", base_url=fake_slack.url, retry_handlers=[])

    with pytest.raises(SlackApiError) as incomplete:
        step.functions_completeSuccess(function_execution_id=execution.id, outputs={"thread_link": "x"})
    step.functions_completeSuccess(function_execution_id=execution.id, outputs={"status": "RUNNING"})
    errors = [
        refusal(lambda: bot.functions_completeSuccess(function_execution_id=execution.id, outputs={"status": "x"})),
        refusal(lambda: bot.functions_completeError(function_execution_id=execution.id, error="late")),
        refusal(lambda: step.auth_test()),
    ]

    assert incomplete.value.response["error"] == "parameter_validation_failed"
    assert fake_slack.function_execution(execution.id).outputs == {"status": "RUNNING"}
    # Completed: the execution is gone for everyone, and its token stopped working.
    assert errors == ["function_execution_not_found", "function_execution_not_found", "token_expired"]
    assert set(errors) <= MISUSED


def test_a_steps_token_expires_after_15_minutes_but_the_bot_token_still_completes_it(
    fake_slack: FakeSlackWebApi,
) -> None:
    execution = fake_slack.start_function("start_step")
    step = WebClient(token=execution.token, base_url=fake_slack.url, retry_handlers=[])
    stranger = WebClient(token="xwfp-never-issued", base_url=fake_slack.url, retry_handlers=[])
    bot = WebClient(token="xoxb-test", base_url=fake_slack.url, retry_handlers=[])

    fake_slack.advance_clock(15 * 60 + 1)
    with pytest.raises(SlackApiError) as expired:
        step.functions_completeError(function_execution_id=execution.id, error="Zenlayer refused")
    with pytest.raises(SlackApiError) as unknown:
        stranger.chat_postMessage(channel="C0CHANNEL", text="hi")
    bot.functions_completeError(function_execution_id=execution.id, error="Zenlayer refused")

    assert (expired.value.response["error"], unknown.value.response["error"]) == ("token_expired", "invalid_auth")
    done = fake_slack.function_execution(execution.id)
    assert (done.outcome, done.error) == ("error", "Zenlayer refused")
    assert [c.token for c in fake_slack.calls_to("functions.completeError")] == [execution.token, "xoxb-test"]


def test_commands_and_clicks_carry_triggers_the_bot_can_open_a_modal_with(
    client: WebClient, fake_slack: FakeSlackWebApi
) -> None:
    slack = SlackConversation(fake_slack)
    command, _ = slack.command_payload("start", user="U0REQUEST", channel="C0OPS")
    click, _ = slack.click_payload(Confirmation("C0CHANNEL", "1.0", 7), "vm_start_confirm", user="U0REQUEST")

    for payload, channel in ((command, "C0OPS"), (click, "C0CHANNEL")):
        opened = client.views_open(trigger_id=payload["trigger_id"], view=modal())["view"]
        assert fake_slack.view(opened["id"]).opened_from == channel
