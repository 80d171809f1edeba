"""The Slack app manifests: what Slack requires of them, and that they match what the code registers."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import pytest
import yaml

from bot.devtools.slack_driver import Confirmation, SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.server import EVENTS_PATH
from bot.slack import action_ids
from tests.slack_support import ask_to_start

ROOT = Path(__file__).resolve().parent.parent
HTTP_MANIFEST = ROOT / "manifest.yml"
SOCKET_MANIFEST = ROOT / "manifest.socket-mode.yml"
STEPS_MANIFEST = ROOT / "manifest.workflow-steps.yml"
ALL_MANIFESTS = [HTTP_MANIFEST, SOCKET_MANIFEST, STEPS_MANIFEST]

# The bot scope each Web API method needs (None: no scope); a method missing here fails the test until it is added.
METHOD_SCOPES: dict[str, str | None] = {
    "auth.test": None,
    "chat.getPermalink": None,
    "chat.postMessage": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.update": "chat:write",
    # The App Home, modals and Workflow Builder steps need no scope of their own.
    "views.publish": None,
    "views.open": None,
    "views.update": None,
    "functions.completeSuccess": None,
    "functions.completeError": None,
}


def load(path: Path) -> dict[str, Any]:
    """Parse a manifest file."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def only_command(manifest: dict[str, Any]) -> dict[str, Any]:
    """Return the manifest's single slash command."""
    commands = manifest["features"]["slash_commands"]
    assert len(commands) == 1, commands
    return commands[0]


def without_transport(manifest: dict[str, Any]) -> dict[str, Any]:
    """Return the manifest minus what legitimately differs between HTTP and Socket Mode."""
    stripped = yaml.safe_load(yaml.safe_dump(manifest))
    for command in stripped["features"]["slash_commands"]:
        command.pop("url", None)
    stripped["settings"]["interactivity"].pop("request_url", None)
    stripped["settings"]["interactivity"].pop("message_menu_options_url", None)
    stripped["settings"]["event_subscriptions"].pop("request_url", None)
    stripped["settings"].pop("socket_mode_enabled", None)
    return stripped


def without_steps(manifest: dict[str, Any]) -> dict[str, Any]:
    """Return the manifest minus what only the Workflow Builder step needs."""
    stripped = yaml.safe_load(yaml.safe_dump(manifest))
    stripped.pop("functions", None)
    stripped["settings"]["event_subscriptions"]["bot_events"].remove("function_executed")
    stripped["settings"].pop("function_runtime", None)
    stripped["settings"]["org_deploy_enabled"] = False
    return stripped


def urls(manifest: dict[str, Any]) -> list[str]:
    """Return every request URL a manifest points Slack at."""
    settings = manifest["settings"]
    found = [c["url"] for c in manifest["features"]["slash_commands"] if "url" in c]
    found += [settings["interactivity"][k] for k in ("request_url", "message_menu_options_url")]
    return [*found, settings["event_subscriptions"]["request_url"]]


@pytest.mark.parametrize("path", ALL_MANIFESTS, ids=["http", "socket-mode", "workflow-steps"])
def test_manifest_has_what_slack_requires(path: Path) -> None:
    manifest = load(path)

    info = manifest["display_information"]
    assert 0 < len(info["name"]) <= 35
    assert len(info.get("description", "")) <= 140
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", info.get("background_color", "#000000"))
    assert 0 < len(manifest["features"]["bot_user"]["display_name"]) <= 80
    command = only_command(manifest)
    assert re.fullmatch(r"/[a-z0-9_-]{1,31}", command["command"])
    assert 0 < len(command["description"]) <= 2000
    assert 0 < len(command["usage_hint"]) <= 1000
    assert command["should_escape"] is True  # mentions and channels arrive as ids, not display names
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["oauth_config"]["scopes"]["bot"]


@pytest.mark.parametrize("path", [HTTP_MANIFEST, STEPS_MANIFEST], ids=["http", "workflow-steps"])
def test_http_manifests_point_slack_at_the_events_path(path: Path) -> None:
    manifest = load(path)

    for url in urls(manifest):  # the command, buttons and submissions, type-ahead (options load URL), events
        parsed = urlparse(url)
        assert parsed.scheme == "https" and parsed.netloc, url
        assert parsed.path == EVENTS_PATH, url
    assert len(urls(manifest)) == 4
    assert manifest["settings"].get("socket_mode_enabled", False) is False


def test_socket_mode_manifest_has_no_urls() -> None:
    manifest = load(SOCKET_MANIFEST)

    assert manifest["settings"]["socket_mode_enabled"] is True
    assert "url" not in only_command(manifest)
    assert not {"request_url", "message_menu_options_url"} & set(manifest["settings"]["interactivity"])
    assert "request_url" not in manifest["settings"]["event_subscriptions"]


def test_both_manifests_ask_for_the_same_app() -> None:
    assert without_transport(load(HTTP_MANIFEST)) == without_transport(load(SOCKET_MANIFEST))


def test_only_the_workflow_steps_manifest_needs_a_paid_plan() -> None:
    steps = load(STEPS_MANIFEST)

    assert without_steps(steps) == load(HTTP_MANIFEST)  # everything else is the plain app, URLs and all
    assert steps["settings"]["org_deploy_enabled"] is True and steps["settings"]["function_runtime"] == "remote"
    assert list(steps["functions"]) == [action_ids.START_STEP]
    for path in (HTTP_MANIFEST, SOCKET_MANIFEST):
        plain = load(path)
        assert "functions" not in plain and plain["settings"]["org_deploy_enabled"] is False
        assert plain["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened"]


def test_the_step_declares_what_the_bot_reads_and_answers() -> None:
    step = load(STEPS_MANIFEST)["functions"][action_ids.START_STEP]
    inputs, outputs = step["input_parameters"], step["output_parameters"]

    assert 0 < len(step["title"]) <= 255 and step["description"]
    assert {name: p["is_required"] for name, p in inputs.items()} == {
        "instances": True,
        "duration": False,
        "requester": True,
        "channel": True,
    }
    assert (inputs["requester"]["type"], inputs["channel"]["type"]) == (
        "slack#/types/user_id",
        "slack#/types/channel_id",
    )
    assert {name: p["is_required"] for name, p in outputs.items()} == {
        "status": True,
        "instance_ids": True,
        "thread_link": False,
    }
    assert all(p["name"] == name for params in (inputs, outputs) for name, p in params.items())


def test_the_bot_answers_the_manifest_command_and_nothing_else(slack: SlackDriver, fake_slack: FakeSlackWebApi) -> None:
    name = only_command(load(HTTP_MANIFEST))["command"]

    def send(command: str) -> int:
        body = urlencode(
            {
                "team_id": "T0001",
                "channel_id": "C0CHANNEL",
                "user_id": "U0REQUEST",
                "command": command,
                "text": "help",
                "response_url": fake_slack.response_url(command),
                "trigger_id": fake_slack.issue_trigger("U0REQUEST", "C0CHANNEL"),
                "api_app_id": "A0001",
            }
        )
        return slack.post(body).status_code

    assert send(name) == 200
    assert "vm-bot" in slack.wait_private(name, "vm-bot")
    assert send(name + "x") == 404  # bolt's answer to a command nobody registered: the check above means something


def test_interactivity_is_needed_for_every_button_the_bot_handles(slack: SlackDriver) -> None:
    assert load(HTTP_MANIFEST)["settings"]["interactivity"]["is_enabled"] is True
    unknown = Confirmation("C0CHANNEL", "1700000000.000001", 424242)

    for action_id in action_ids.DECISION_ACTIONS:
        response, key = slack.click(unknown, action_id)
        assert response.status_code == 200, action_id
        assert "no longer exists" in slack.wait_private(key, "no longer exists")
    assert slack.click(unknown, "vm_not_an_action")[0].status_code == 404
    for action_id in action_ids.PICKER_ACTIONS:  # a tick, and Start selected with nothing ticked
        response, key = slack.pick([], [], action_id=action_id)
        assert response.status_code == 200, action_id
    assert "Tick at least one instance" in slack.wait_private(key, "Tick at least one")


def test_the_bot_answers_the_manifests_shortcut_events_and_step_and_nothing_else(
    slack: SlackDriver, grant: Callable[..., None]
) -> None:
    steps = load(STEPS_MANIFEST)
    grant("U0REQUEST", "web-*")
    for shortcut in steps["features"]["shortcuts"]:
        assert shortcut["type"] == "global" and len(shortcut["name"]) <= 24
        assert slack.shortcut(shortcut["callback_id"]).status == 200
        slack.wait_modal("U0REQUEST", action_ids.START_MODAL)
    assert slack.shortcut("vm_not_a_shortcut").status == 404  # bolt's answer to a shortcut nobody registered
    assert steps["features"]["app_home"]["home_tab_enabled"] is True
    assert "app_home_opened" in steps["settings"]["event_subscriptions"]["bot_events"]
    assert slack.open_home("U0REQUEST").status == 200 and slack.wait_home("U0REQUEST", contains="Start instances")
    definition = steps["functions"][action_ids.START_STEP]
    inputs = {"instances": "nope-1", "requester": "U0REQUEST", "channel": "C0CHANNEL"}
    run = slack.execute_function(action_ids.START_STEP, inputs, definition=definition)
    assert run.delivery.status == 200 and slack.wait_completion(run.execution_id).outcome == "error"
    assert slack.execute_function("not_our_step", inputs).delivery.status == 404


def test_bot_scopes_are_exactly_what_the_bot_uses(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    confirmation = ask_to_start(slack, grant)
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "RUNNING")
    # The App Home, the start modal with its type-ahead, and the Workflow Builder step use no other scope.
    slack.open_home("U0REQUEST")
    slack.wait_home("U0REQUEST", contains="done")
    slack.command("start")
    modal = slack.wait_modal("U0REQUEST", action_ids.START_MODAL)
    slack.suggest(modal, action_ids.MODAL_INSTANCES, "web-2")
    slack.submit_view(modal, {action_ids.MODAL_INSTANCES: ["web-2"]})
    step = load(STEPS_MANIFEST)["functions"][action_ids.START_STEP]
    inputs = {"instances": "web-2", "requester": "U0REQUEST", "channel": "C0CHANNEL"}
    slack.wait_completion(slack.execute_function(action_ids.START_STEP, inputs, definition=step).execution_id)

    # Web API methods only (the stand-in also records what the bot answered Slack: submissions, type-ahead, replies).
    used = {call.method for call in fake_slack.calls if "." in call.method}

    assert {"views.publish", "views.open", "chat.postEphemeral", "functions.completeError"} <= used
    assert used <= METHOD_SCOPES.keys(), f"add the scopes of {used - METHOD_SCOPES.keys()} to METHOD_SCOPES"
    needed = {"commands"} | {METHOD_SCOPES[m] for m in used if METHOD_SCOPES[m]}
    for path in ALL_MANIFESTS:
        assert set(load(path)["oauth_config"]["scopes"]["bot"]) == needed, path.name
