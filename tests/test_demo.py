"""`vm-bot demo` end to end as a real process, its failure path, and the terminal rendering of Slack messages."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from bot.devtools.demo import (
    Transcript,
    edited_lines,
    format_entry,
    private_lines,
    render_buttons,
    render_message,
    render_mrkdwn,
    run_demo,
)
from bot.devtools.slack_calls import Call

USERS = {"U0ALICE": "alice"}
CHANNELS = {"C0DEMO": "ops"}


# --- the demo as a user runs it ----------------------------------------------------------------------------------


def test_demo_plays_the_whole_conversation_and_cleans_up(tmp_path: Path) -> None:
    # A .env in the working directory and exported settings must not switch the demo to Socket Mode or a token.
    (tmp_path / ".env").write_text("SLACK_APP_TOKEN=xapp-1-from-dotenv\nZENLAYER_TOKEN=from-dotenv\n")
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(temp_root),
        "PYTHONIOENCODING": "utf-8",
        "SLACK_APP_TOKEN": "xapp-1-from-environment",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'must-not-be-used.db'}",
    }
    started = time.monotonic()

    result = subprocess.run(
        [sys.executable, "-m", "bot", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )

    elapsed = time.monotonic() - started
    out, err = result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
    assert result.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    expected_in_order = [
        "alice may start what is in the resource group `web-team`",
        "@alice  /vm list",
        "vm-bot  (only @alice sees this) Instances you may start in #ops — 2 instances",
        "        ☐ web-1 — ",
        " · SEL-A · web-team · STOPPED",
        "        [ Start selected ]",
        "@alice  /vm start web-1 web-2 --for 20s",
        "vm-bot  (only @alice sees this) 🔍 Checking `web-1`, `web-2`",
        "vm-bot  🚀 @alice wants to start 2 instances",
        "` (web-1) · SEL-A — ⚪ STOPPED",
        "        ⏱️ Time-boxed: stopped 20 s after it is RUNNING.",
        "        Only @alice can confirm. Expires ",
        "        [ Start ]  [ Cancel ]",
        "@bob    /vm start web-2",
        "vm-bot  (only @bob sees this) ⛔ You may not start `web-2`.",
        "@alice  clicks [ Start ]",
        "vm-bot  (edited) ✅ Confirmed by @alice ",
        "  └ vm-bot  Start requested (Zenlayer requestId `",
        "` (web-1): 🟡 BOOTING",
        "  └ vm-bot  @alice ✅ All 2 instances RUNNING in ",  # the outcome mentions the requester
        "` (web-1) · 198.51.100.",
        "  └ vm-bot  @alice ⏰ Your time-boxed run of `",  # the reminder, at half-time of a 20 s run
        "            [ Extend 10 s ]  [ Stop now ]",
        "@alice  clicks [ Extend ]",
        "vm-bot  (only @alice sees this) ⏱️ Extended by 10 s: it stops at ",
        "  └ vm-bot  Stop requested (Zenlayer requestId `",
        "  └ vm-bot  @alice ⏹️ Stopped after 30 s (time-boxed run): all 2 instances STOPPED.",
        "Demo finished in ",
    ]
    assert "db-1" not in out  # alice's list shows only what she may start
    positions = [out.find(line) for line in expected_in_order]
    assert -1 not in positions, [line for line, at in zip(expected_in_order, positions, strict=True) if at == -1]
    assert positions == sorted(positions), out
    assert "🟢 All 2 RUNNING in " in out  # the confirmation's last edit, which may come before or after the reply
    assert "Time-boxed: stops at " in out  # the RUNNING reply says when the run ends
    assert "(edited) ⏹️ Stopped after 30 s (time-boxed run)" in out  # and the parent shows it
    surfaces_in_order = [  # then the App Home and the start modal (bot/devtools/demo/surfaces.py)
        "@alice  opens vm-bot's Home tab",
        "vm-bot  (alice's Home)",
        "        [ Start instances ]",
        "• 🚀 start `",
        "(web-1) and 1 more in #ops — 🟢 done",
        "@alice  clicks [ Start instances ] on her Home",
        "vm-bot  (a form only @alice sees) Start instances",
        "        Confirm in channel: (pick a channel)",
        "        • web-3 · ",
        "        (no options)",  # `db`: nothing alice may start
        "        ✅ Asked to start 1 instance.",
        "vm-bot  🚀 @alice wants to start 1 instance",
        "  └ vm-bot  @alice ✅ All 1 instance RUNNING in ",
        "vm-bot  (alice's Home, published again by vm-bot)",
        "(web-3) in #ops — 🟢 done",
        "Demo finished in ",
    ]
    assert re.search(r"• web-3 · \d+ · SEL-A · STOPPED", out)  # the type-ahead shows each instance's status
    at = [out.find(line, positions[-2]) for line in surfaces_in_order]
    assert -1 not in at and at == sorted(at), [line for line, p in zip(surfaces_in_order, at, strict=True) if p == -1]
    for raw in ("<@", "<!date", "&lt;", ":white_check_mark:", ":rocket:"):
        assert raw not in out, f"unrendered {raw!r} in:\n{out}"
    assert elapsed < 75, f"the demo took {elapsed:.1f} s"  # half a minute of it is the time-boxed run
    assert not (tmp_path / "must-not-be-used.db").exists()
    assert list(temp_root.iterdir()) == [], "the demo left temporary files behind"
    urls = re.findall(r"(?:simulator|vm-bot) (http://127\.0\.0\.1:\d+)", err)
    assert len(urls) == 2, err
    for url in urls:
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=2)  # nobody listens any more: the children were stopped


def test_demo_fails_clearly_when_the_bot_cannot_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out, err = io.StringIO(), io.StringIO()

    code = run_demo(out, err, overrides={"SLACK_SIGNING_SECRET": ""})

    assert code == 1
    assert "vm-bot demo FAILED: vm-bot exited early with code 2" in err.getvalue()
    assert "SLACK_SIGNING_SECRET is required" in err.getvalue()  # the tail of the bot's own log
    assert list(tmp_path.iterdir()) == []


# --- rendering mrkdwn for a terminal -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mrkdwn", "shown"),
    [
        ("<@U0ALICE> wants to start", "@alice wants to start"),
        ("<@U0NOBODY> and <@U0NOBODY|nobody>", "@U0NOBODY and @nobody"),
        ("in <#C0DEMO> and <#C0OTHER|general> and <#C0OTHER>", "in #ops and #general and #C0OTHER"),
        (
            "Expires <!date^1764333600^{date_short_pretty} at {time}|2025-11-28 12:40 UTC>.",
            "Expires 2025-11-28 12:40 UTC.",
        ),
        ("use <https://example.slack.com/archives/C1/p1|your confirmation>", "use your confirmation"),
        ("see <https://example.com>", "see https://example.com"),
        ("ask <!subteam^S0OPS|@ops> or <!subteam^S0OPS> or <!here>", "ask @ops or @S0OPS or @here"),
        (":rocket: :white_check_mark: :large_green_circle: :no_such_emoji:", "🚀 ✅ 🟢 :no_such_emoji:"),
        ("at 12:40 UTC", "at 12:40 UTC"),
        ("*vm-bot* starts `web-*` and *needs approval*", "vm-bot starts `web-*` and needs approval"),
        ("2 * 3 * 4", "2 * 3 * 4"),
        ("`&lt;!channel&gt;` &amp; &amp;lt;", "`<!channel>` & &lt;"),
    ],
)
def test_render_mrkdwn(mrkdwn: str, shown: str) -> None:
    assert render_mrkdwn(mrkdwn, USERS, CHANNELS) == shown


def test_escaped_user_text_is_shown_literally_not_as_a_mention() -> None:
    assert render_mrkdwn("Not valid: `&lt;@U0ALICE&gt;`", USERS, CHANNELS) == "Not valid: `<@U0ALICE>`"


def test_render_message_uses_blocks_when_present_and_text_otherwise() -> None:
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": ":rocket: <@U0ALICE> wants\n• `web-1`"}},
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "Only"}, {"type": "plain_text", "text": "you"}]},
        {
            "type": "actions",
            "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Start"}, "action_id": "a"},
                {"type": "button", "text": {"type": "plain_text", "text": "Cancel"}, "action_id": "b"},
            ],
        },
    ]

    assert render_message("fallback", blocks) == [
        "🚀 @alice wants",
        "• `web-1`",
        "────",
        "Only  you",
        "[ Start ]  [ Cancel ]",
    ]
    assert render_message("line one\n:x: line two") == ["line one", "❌ line two"]
    assert render_message("") == [""]


def test_render_buttons_ignores_other_elements() -> None:
    elements = [{"type": "button", "text": {"text": "Start"}}, {"type": "static_select"}]
    assert render_buttons(elements) == "[ Start ]"


def test_format_entry_aligns_speakers_and_indents_threads() -> None:
    assert format_entry("@bob", ["/vm start web-2"]) == "@bob    /vm start web-2\n"
    assert format_entry("vm-bot", ["one", "two"]) == "vm-bot  one\n        two\n"
    assert format_entry("vm-bot", ["one", "two"], thread=True) == "  └ vm-bot  one\n            two\n"


def test_private_lines_say_who_sees_them() -> None:
    assert private_lines("U0BOB", ["⛔ no", "more"]) == ["(only @bob sees this) ⛔ no", "more"]


def test_edited_lines_show_what_changed() -> None:
    before = ["🚀 ask", "• `web-1` — ⚪ STOPPED", "Only @alice can confirm.", "[ Start ]  [ Cancel ]"]
    after = ["🚀 ask", "• `web-1` — 🟡 BOOTING", "✅ Confirmed", "⏳ 0/1 RUNNING"]

    assert edited_lines(before, after) == ["• `web-1` — 🟡 BOOTING", "✅ Confirmed", "⏳ 0/1 RUNNING"]
    assert edited_lines(["a", "b"], ["a"]) == ["a"]  # only a removal: show the message as it now stands
    assert edited_lines([], ["a"]) == ["a"]


def test_transcript_shows_posts_edits_threads_and_private_replies_but_not_failures() -> None:
    def call(
        method: str, args: dict[str, object], response: dict[str, object] | None = None, status: int = 200
    ) -> Call:
        return Call(method, args, status=status, response=response if response is not None else {"ok": True})

    fake = SimpleNamespace(
        calls=[
            call("auth.test", {}),
            call("chat.postMessage", {"channel": "C0DEMO", "text": "x"}, {"ok": False, "error": "ratelimited"}, 429),
            call(
                "chat.postMessage",
                {"channel": "C0DEMO", "text": "hello\n:white_circle: STOPPED"},
                {"ok": True, "ts": "1.1"},
            ),
            call("chat.update", {"channel": "C0DEMO", "ts": "1.1", "text": "hello\n:white_circle: STOPPED"}),
            call("chat.update", {"channel": "C0DEMO", "ts": "1.1", "text": "hello\n:large_green_circle: RUNNING"}),
            call(
                "chat.postMessage", {"channel": "C0DEMO", "thread_ts": "1.1", "text": "done"}, {"ok": True, "ts": "1.2"}
            ),
            call("response_url", {"_key": "k1", "text": ":no_entry: You may not start `web-2`."}),
        ]
    )
    out = io.StringIO()
    transcript = Transcript(fake, out)  # type: ignore[arg-type]
    transcript.private_to["k1"] = "U0BOB"

    transcript.catch_up()
    transcript.catch_up()  # nothing new: nothing printed twice

    assert out.getvalue() == (
        "vm-bot  hello\n"
        "        ⚪ STOPPED\n"
        "vm-bot  (edited) 🟢 RUNNING\n"
        "  └ vm-bot  done\n"
        "vm-bot  (only @bob sees this) ⛔ You may not start `web-2`.\n"
    )


def test_checkboxes_render_one_line_per_option_ticked_or_not() -> None:
    blocks = [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "checkboxes",
                    "options": [
                        {
                            "text": {"type": "plain_text", "text": "web-1"},
                            "value": "1",
                            "description": {"text": "1 · SEL-A"},
                        },
                        {"text": {"type": "plain_text", "text": "web-2"}, "value": "2"},
                    ],
                    "initial_options": [{"text": {"type": "plain_text", "text": "web-2"}, "value": "2"}],
                },
                {"type": "button", "text": {"type": "plain_text", "text": "Start selected"}},
            ],
        }
    ]

    assert render_message("fallback", blocks) == ["☐ web-1 — 1 · SEL-A", "☑ web-2", "[ Start selected ]"]
