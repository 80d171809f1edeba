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

# The bot scope each Web API method needs (None: no scope); a method missing here fails the test until it is added.
METHOD_SCOPES: dict[str, str | None] = {
    "auth.test": None,
    "chat.getPermalink": None,
    "chat.postMessage": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.update": "chat:write",
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
    stripped["settings"].pop("socket_mode_enabled", None)
    return stripped


@pytest.mark.parametrize("path", [HTTP_MANIFEST, SOCKET_MANIFEST], ids=["http", "socket-mode"])
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


def test_http_manifest_points_slack_at_the_events_path() -> None:
    manifest = load(HTTP_MANIFEST)

    urls = [only_command(manifest)["url"], manifest["settings"]["interactivity"]["request_url"]]

    for url in urls:
        parsed = urlparse(url)
        assert parsed.scheme == "https" and parsed.netloc, url
        assert parsed.path == EVENTS_PATH, url
    assert manifest["settings"].get("socket_mode_enabled", False) is False


def test_socket_mode_manifest_has_no_urls() -> None:
    manifest = load(SOCKET_MANIFEST)

    assert manifest["settings"]["socket_mode_enabled"] is True
    assert "url" not in only_command(manifest)
    assert "request_url" not in manifest["settings"]["interactivity"]


def test_both_manifests_ask_for_the_same_app() -> None:
    assert without_transport(load(HTTP_MANIFEST)) == without_transport(load(SOCKET_MANIFEST))


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


def test_bot_scopes_are_exactly_what_the_bot_uses(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    confirmation = ask_to_start(slack, grant)
    slack.click(confirmation, action_ids.START)
    slack.wait_thread(confirmation, "RUNNING")

    used = {call.method for call in fake_slack.calls if call.method != "response_url"}

    assert used <= METHOD_SCOPES.keys(), f"add the scopes of {used - METHOD_SCOPES.keys()} to METHOD_SCOPES"
    needed = {"commands"} | {METHOD_SCOPES[m] for m in used if METHOD_SCOPES[m]}
    for path in (HTTP_MANIFEST, SOCKET_MANIFEST):
        assert set(load(path)["oauth_config"]["scopes"]["bot"]) == needed, path.name
