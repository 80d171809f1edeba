"""The Workflow Builder step "Start Zenlayer instances", end to end over both transports: the requester's grants and
approval rules decide exactly as for `/vm start`, the usual confirmation is posted, and the step completes — with
the bot token, from the outbox — once every instance is RUNNING, however long after its own token expired."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bot.devtools.slack_web_api import WORKSPACE_URL, FakeSlackWebApi
from bot.slack import action_ids
from tests.test_app_home import audit_events
from tests.transports import CHANNEL, HttpSlack, SocketSlack

Chat = HttpSlack | SocketSlack
REQUESTER, APPROVER = "U0REQUEST", "U0APPROVE"
MANIFEST = Path(__file__).resolve().parent.parent / "manifest.workflow-steps.yml"
STEP = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))["functions"][action_ids.START_STEP]


def run_step(chat: Chat, **inputs: Any) -> str:
    """Run the step as a workflow does; return its execution id (bolt acknowledges the event)."""
    given = {"requester": REQUESTER, "channel": CHANNEL, **inputs}
    run = chat.execute_function(action_ids.START_STEP, given, definition=STEP)
    assert run.delivery.status == 200
    return run.execution_id


def test_the_step_completes_with_its_outputs_once_running_long_after_its_token_expired(
    chat: Chat, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    grant(REQUESTER, "web-*")
    execution_id = run_step(chat, instances="web-1, web-2")
    confirmation = chat.wait_confirmation()
    assert f"<@{REQUESTER}> wants to start 2 instances" in str(chat.message(confirmation).blocks)
    fake_slack.advance_clock(16 * 60)  # the requester confirms after the step's own token expired

    chat.press(confirmation, action_ids.START)

    execution = chat.wait_completion(execution_id, timeout=15)
    link = f"{WORKSPACE_URL}archives/{CHANNEL}/p{confirmation.ts.replace('.', '')}"
    assert (execution.outcome, execution.outputs) == (
        "success",
        {"status": "RUNNING", "instance_ids": "web-1,web-2", "thread_link": link},
    )
    chat.wait_thread(confirmation, "All 2 instances RUNNING")
    (completion,) = fake_slack.calls_to("functions.completeSuccess")
    assert completion.token is not None and not completion.token.startswith("xwfp-")  # the bot's own token


def test_a_step_is_never_a_way_around_a_grant(
    chat: Chat, grant: Callable[..., None], fake_slack: FakeSlackWebApi, database_url: str
) -> None:
    grant(REQUESTER, "web-*")
    execution_id = run_step(chat, instances="db-1")

    execution = chat.wait_completion(execution_id)

    assert execution.outcome == "error"
    assert execution.error == "The requester may not start db-1 in that channel; nothing was started."
    assert fake_slack.calls_to("chat.postMessage") == []
    assert [(d["actor"], d["uncovered"]) for d in audit_events(database_url, "denied")] == [(REQUESTER, ["db-1"])]


def test_approval_rules_apply_and_a_rejection_fails_the_step(chat: Chat, grant: Callable[..., None]) -> None:
    grant(REQUESTER, "web-*", needs_approval=True)
    grant(APPROVER, "*", action="approve")
    execution_id = run_step(chat, instances="web-1")
    confirmation = chat.wait_confirmation()
    assert "needs approval" in str(chat.message(confirmation).blocks)

    chat.press(confirmation, action_ids.REJECT, user=APPROVER)

    execution = chat.wait_completion(execution_id)
    request = confirmation.request_id
    assert (execution.outcome, execution.error) == (
        "error",
        f"Request {request} was rejected by {APPROVER}; nothing was started.",
    )


def test_bad_inputs_and_a_duration_over_the_cap_fail_in_one_sentence(chat: Chat, grant: Callable[..., None]) -> None:
    grant(REQUESTER, "web-*", max_run_seconds=2 * 3600.0)
    no_requester = run_step(chat, instances="web-1", requester="not-a-user")
    too_long = run_step(chat, instances="web-1", duration="4h")
    unreadable = run_step(chat, instances="web-1", duration="soon")

    assert chat.wait_completion(no_requester).error == "This step cannot run: the requester is not a Slack user."
    assert chat.wait_completion(too_long).error == "Your grants cap runs of these instances at 2 h."
    assert chat.wait_completion(unreadable).error == (
        "The duration is written like `45s`, `30m`, `4h`, `1d` or `1h30m`."
    )
    assert chat.fake.channel_messages(CHANNEL) == []  # none of them opened anything


def test_the_same_execution_delivered_twice_opens_one_request(chat: Chat, grant: Callable[..., None]) -> None:
    from bot.devtools.slack_payloads import function_executed_event

    grant(REQUESTER, "web-*")
    execution = chat.fake.start_function(action_ids.START_STEP, ["status", "instance_ids"])
    event = function_executed_event(execution, {"instances": "web-1", "requester": REQUESTER, "channel": CHANNEL}, STEP)
    for _ in range(2):  # Slack delivers an event again when it is not sure the first arrived
        assert chat.deliver_event(event).status == 200
    confirmation = chat.wait_confirmation()

    chat.press(confirmation, action_ids.START)

    assert chat.wait_completion(execution.id, timeout=15).outcome == "success"
    assert len([m for m in chat.fake.channel_messages(CHANNEL) if m.text.endswith("wants to start 1 instance")]) == 1
