"""The driver's App Home, modal, type-ahead, shortcut and Workflow Builder payloads are Slack's: bolt itself routes
each one to the listener made for it (`app.event("app_home_opened")`, `app.action`, `app.shortcut`, `app.command`,
`app.options`, `app.view`, `app.function`), over signed HTTP and over Socket Mode, and what those listeners do
through the Web API lands in the stand-in as it would in Slack.

The app under test is a tiny bolt App written here, not vm-bot: these tests hold the test doubles to Slack's wire
format, so the bot's own tests can trust them.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from slack_bolt import Ack, App, Complete
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from bot.devtools.slack_driver import SlackDriver
from bot.devtools.slack_views import SlackView, view_text
from bot.devtools.slack_web_api import MALFORMED, MISUSED, FakeSlackWebApi
from tests.fake_socket_mode import FakeSocketMode
from tests.slack_support import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET
from tests.transports import HttpSlack, SocketSlack

STEP = {
    "title": "Start Zenlayer instances",
    "description": "Starts instances the requester may start",
    "input_parameters": {
        "instances": {"type": "string", "title": "Instances", "is_required": True},
        "requester": {"type": "slack#/types/user_id", "title": "Requester", "is_required": True},
    },
    "output_parameters": {
        "status": {"type": "string", "title": "Status", "is_required": True},
        "instance_ids": {"type": "string", "title": "Instance ids", "is_required": True},
    },
}


def start_modal(title: str = "Start instances") -> dict[str, Any]:
    """The kind of modal the bot will open: external multi-select, channel picker, static select, a button."""
    return {
        "type": "modal",
        "callback_id": "start_modal",
        "title": {"type": "plain_text", "text": title},
        "submit": {"type": "plain_text", "text": "Start"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": "opened",
        "blocks": [
            {
                "type": "input",
                "block_id": "instances",
                "label": {"type": "plain_text", "text": "Instances"},
                "element": {"type": "multi_external_select", "action_id": "instances", "min_query_length": 0},
            },
            {
                "type": "input",
                "block_id": "channel",
                "label": {"type": "plain_text", "text": "Channel"},
                "element": {
                    "type": "conversations_select",
                    "action_id": "channel",
                    "default_to_current_conversation": True,
                    "response_url_enabled": True,
                },
            },
            {
                "type": "input",
                "block_id": "duration",
                "optional": True,
                "label": {"type": "plain_text", "text": "For how long"},
                "element": {
                    "type": "static_select",
                    "action_id": "duration",
                    "options": [
                        {"text": {"type": "plain_text", "text": t}, "value": t} for t in ("1h", "4h", "forever")
                    ],
                },
            },
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "action_id": "refresh", "text": {"type": "plain_text", "text": "Refresh"}}
                ],
            },
        ],
    }


HOME = {
    "type": "home",
    "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Running for you*: nothing"}},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "open_start",
                    "value": "home",
                    "text": {"type": "plain_text", "text": "Start instances"},
                }
            ],
        },
    ],
}


def surface_app(fake: FakeSlackWebApi, seen: list[tuple[str, dict[str, Any]]]) -> App:
    """A bolt App with one listener per surface; each records the payload bolt handed it."""
    app = App(client=WebClient(token=BOT_TOKEN, base_url=fake.url), signing_secret=SIGNING_SECRET)

    @app.event("app_home_opened")
    def home_opened(event: dict[str, Any], client: WebClient) -> None:
        seen.append(("app_home_opened", event))
        client.views_publish(user_id=event["user"], view=HOME)

    def open_modal(kind: str, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        seen.append((kind, body))
        client.views_open(trigger_id=body["trigger_id"], view=start_modal())

    app.action("open_start")(lambda ack, body, client: open_modal("home_button", ack, body, client))
    app.shortcut("start_instances")(lambda ack, body, client: open_modal("shortcut", ack, body, client))
    app.command("/vm")(lambda ack, body, client: open_modal("command", ack, body, client))

    @app.options("instances")
    def instances(ack: Ack, body: dict[str, Any]) -> None:
        seen.append(("block_suggestion", body))
        ack(
            options=[
                {"text": {"type": "plain_text", "text": f"{body['value']}-{i}"}, "value": f"i-{i}"} for i in (1, 2)
            ]
        )

    @app.view("start_modal")
    def submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        seen.append(("view_submission", body))
        duration = view["state"]["values"]["duration"]["duration"]["selected_option"]
        if duration and duration["value"] == "forever":
            ack(response_action="errors", errors={"duration": "Pick a duration your grant allows."})
        else:
            ack()

    @app.action("refresh")
    def refresh(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        seen.append(("view_button", body))
        client.views_update(view_id=body["view"]["id"], hash=body["view"]["hash"], view=start_modal("Refreshed"))

    @app.view_closed("start_modal")
    def closed(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        seen.append(("view_closed", body))

    @app.function("start_step")
    def step(inputs: dict[str, Any], complete: Complete) -> None:
        seen.append(("function_executed", inputs))
        complete(outputs={"status": "RUNNING", "instance_ids": inputs["instances"]})

    return app


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stand_in() -> Iterator[FakeSlackWebApi]:
    """One stand-in for the module; each test acts as its own user, so their Homes and modals do not mix."""
    with FakeSlackWebApi() as fake:
        yield fake
        refused = [c for c in fake.rejections() if c.response.get("error") in MALFORMED | MISUSED]
        assert not refused, [(c.method, c.response) for c in refused]


@pytest.fixture(scope="module")
def seen() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture(scope="module")
def bolt_app(stand_in: FakeSlackWebApi, seen: list[tuple[str, dict[str, Any]]]) -> App:
    return surface_app(stand_in, seen)


@pytest.fixture(scope="module")
def http_slack(bolt_app: App, stand_in: FakeSlackWebApi) -> Iterator[HttpSlack]:
    """The app served over HTTP on loopback, and Slack's side of it: signed posts to /slack/events."""
    server = make_server(
        "127.0.0.1", 0, SlackRequestHandler(bolt_app), server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    driver = SlackDriver(f"http://127.0.0.1:{server.server_port}", stand_in, SIGNING_SECRET)
    try:
        yield HttpSlack(driver)
    finally:
        driver.close()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def socket_slack(bolt_app: App, stand_in: FakeSlackWebApi) -> Iterator[SocketSlack]:
    """The same app connected over Socket Mode (bolt's own handler) to the fake endpoint."""
    with FakeSocketMode() as socket:
        stand_in.socket_mode_url = socket.url
        handler = SocketModeHandler(bolt_app, app_token=APP_TOKEN)
        handler.connect()
        socket.wait_connected()
        try:
            yield SocketSlack(socket, stand_in)
        finally:
            handler.close()


@pytest.fixture(params=["http", "socket_mode"])
def chat(request: pytest.FixtureRequest) -> HttpSlack | SocketSlack:
    """Slack's side, once over each transport."""
    return request.getfixturevalue("http_slack" if request.param == "http" else "socket_slack")


@pytest.fixture
def user(request: pytest.FixtureRequest) -> str:
    """A user of the test's own, so tests sharing the module's stand-in never see each other's views."""
    return f"U{zlib.crc32(request.node.nodeid.encode()):010d}"


def last(seen: list[tuple[str, dict[str, Any]]], kind: str) -> dict[str, Any]:
    """Return the newest payload bolt handed the listener of `kind`."""
    return next(body for k, body in reversed(seen) if k == kind)


def test_opening_the_home_tab_reaches_app_home_opened_and_publishes_a_home(
    chat: HttpSlack | SocketSlack, seen: list[tuple[str, dict[str, Any]]], user: str
) -> None:
    first = chat.open_home(user)
    home = chat.wait_home(user, contains="Running for you")
    second = chat.open_home(user)
    chat.fake.wait_for(lambda: home.versions == 2, what="the Home to be published again")

    assert (first.status, second.status) == (200, 200)
    event = last(seen, "app_home_opened")
    assert (event["user"], event["tab"]) == (user, "home")
    assert event["view"]["id"] == home.id  # once published, Slack sends the Home back with the event
    assert chat.fake.home(user) is home


def test_the_home_button_opens_the_modal_with_its_trigger(
    chat: HttpSlack | SocketSlack, seen: list[tuple[str, dict[str, Any]]], user: str
) -> None:
    chat.open_home(user)
    chat.wait_home(user)

    assert chat.click_home_button("open_start", user=user).status == 200
    modal = chat.wait_modal(user, "start_modal")

    body = last(seen, "home_button")
    assert body["container"] == {"type": "view", "view_id": chat.fake.home(user).id}  # type: ignore[union-attr]
    assert body["actions"][0]["value"] == "home"
    assert modal.opened_from is None  # the Home has no channel to default to


def test_a_global_shortcut_opens_the_modal(
    chat: HttpSlack | SocketSlack, seen: list[tuple[str, dict[str, Any]]], user: str
) -> None:
    assert chat.shortcut("start_instances", user=user).status == 200

    modal = chat.wait_modal(user, "start_modal")
    assert last(seen, "shortcut")["callback_id"] == "start_instances"
    assert modal.title == "Start instances" and modal.private_metadata == "opened"


def test_a_command_opens_the_modal_and_its_channel_is_the_default(
    chat: HttpSlack | SocketSlack, seen: list[tuple[str, dict[str, Any]]], user: str
) -> None:
    chat.command("start", user=user, channel="C0OPS")
    modal = chat.wait_modal(user, "start_modal")

    assert chat.submit_view(modal, {"instances": ["i-1"]}) == {}  # a bare ack closes it

    values = last(seen, "view_submission")["view"]["state"]["values"]
    assert values["channel"]["channel"] == {"type": "conversations_select", "selected_conversation": "C0OPS"}
    assert last(seen, "view_submission")["response_urls"][0]["channel_id"] == "C0OPS"
    assert chat.fake.modals(user) == [] and chat.fake.view(modal.id).closed


def test_type_ahead_reaches_options_and_returns_its_answer(
    chat: HttpSlack | SocketSlack, seen: list[tuple[str, dict[str, Any]]], user: str
) -> None:
    chat.shortcut("start_instances", user=user)
    modal = chat.wait_modal(user, "start_modal")

    options = chat.suggest(modal, "instances", "web", values={"channel": "C0OPS"})

    assert [o["text"]["text"] for o in options] == ["web-1", "web-2"]
    body = last(seen, "block_suggestion")
    assert (body["action_id"], body["block_id"], body["value"]) == ("instances", "instances", "web")
    assert body["view"]["state"]["values"]["channel"]["channel"]["selected_conversation"] == "C0OPS"
    # What the user then picks is reported with the text the bot offered.
    chat.submit_view(modal, {"instances": ["i-2"], "channel": "C0OPS"})
    picked = last(seen, "view_submission")["view"]["state"]["values"]["instances"]["instances"]["selected_options"]
    assert picked == [{"text": {"type": "plain_text", "text": "web-2"}, "value": "i-2"}]


def test_field_errors_keep_the_modal_open(
    chat: HttpSlack | SocketSlack, seen: list[tuple[str, dict[str, Any]]], user: str
) -> None:
    chat.shortcut("start_instances", user=user)
    modal = chat.wait_modal(user, "start_modal")

    answer = chat.submit_view(modal, {"instances": ["i-1"], "channel": "C0OPS", "duration": "forever"})

    assert answer == {"response_action": "errors", "errors": {"duration": "Pick a duration your grant allows."}}
    assert chat.fake.modals(user) == [modal]
    with pytest.raises(ValueError, match="Instances must be filled in"):
        chat.submit_view(modal, {"channel": "C0OPS"})  # Slack does not send a submission missing a required input


def test_a_button_in_a_modal_reaches_its_action_and_can_update_the_view(
    chat: HttpSlack | SocketSlack, seen: list[tuple[str, dict[str, Any]]], user: str
) -> None:
    chat.shortcut("start_instances", user=user)
    modal = chat.wait_modal(user, "start_modal")
    old_hash = modal.hash

    assert chat.click_in_view(modal, "refresh", values={"duration": "4h"}).status == 200

    chat.fake.wait_for(lambda: modal.title == "Refreshed", what="the modal to be updated")
    body = last(seen, "view_button")
    assert body["container"] == {"type": "view", "view_id": modal.id}
    assert body["view"]["state"]["values"]["duration"]["duration"]["selected_option"]["value"] == "4h"
    assert modal.hash != old_hash and chat.fake.modals(user) == [modal]


def test_cancelling_a_modal_that_asked_to_be_told_reaches_view_closed(
    chat: HttpSlack | SocketSlack, seen: list[tuple[str, dict[str, Any]]], user: str
) -> None:
    trigger_id = chat.fake.issue_trigger(user)
    bot = WebClient(token=BOT_TOKEN, base_url=chat.fake.url)
    quiet = bot.views_open(trigger_id=trigger_id, view=start_modal())["view"]
    assert chat.close_modal(chat.fake.view(quiet["id"])) is None  # nobody asked to hear about it

    told = bot.views_open(trigger_id=chat.fake.issue_trigger(user), view={**start_modal(), "notify_on_close": True})
    closing = chat.close_modal(chat.fake.view(told["view"]["id"]))

    assert closing is not None and closing.status == 200
    body = last(seen, "view_closed")
    assert (body["view"]["id"], body["is_cleared"]) == (told["view"]["id"], False)
    assert chat.fake.modals(user) == []


def test_a_custom_step_reaches_the_function_and_completes_with_its_own_token(
    chat: HttpSlack | SocketSlack, seen: list[tuple[str, dict[str, Any]]], stand_in: FakeSlackWebApi
) -> None:
    run = chat.execute_function("start_step", {"instances": "web-1", "requester": "U0REQUEST"}, definition=STEP)

    execution = chat.wait_completion(run.execution_id)

    assert run.delivery.status == 200
    assert last(seen, "function_executed") == {"instances": "web-1", "requester": "U0REQUEST"}
    assert (execution.outcome, execution.outputs) == ("success", {"status": "RUNNING", "instance_ids": "web-1"})
    completion = [c for c in stand_in.calls_to("functions.completeSuccess") if c.token == run.bot_access_token]
    assert len(completion) == 1 and run.bot_access_token.startswith("xwfp-")


def test_signed_requests_are_what_bolt_verifies(http_slack: HttpSlack, user: str) -> None:
    driver = http_slack.driver
    forged = driver.post('{"type": "event_callback"}', content_type="application/json", signature="v0=forged")

    assert forged.status_code == 401
    assert http_slack.open_home(user).status == 200


def test_views_are_found_by_action_id(chat: HttpSlack | SocketSlack, user: str) -> None:
    chat.shortcut("start_instances", user=user)
    modal: SlackView = chat.wait_modal(user)

    block, element = modal.element("refresh")

    assert block["type"] == "actions" and block["block_id"]  # Slack gave the block an id
    assert element["text"]["text"] == "Refresh"
    assert "For how long" in view_text(modal)
    with pytest.raises(KeyError):
        modal.element("nothing")
