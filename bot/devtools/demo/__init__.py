"""`vm-bot demo`: play a whole Slack conversation against the real bot on this machine and print what people see.

The Zenlayer simulator and the bot (`vm-bot run`, HTTP mode) run as separate processes on loopback; the Slack Web
API stand-in shared with the tests runs in this process; `SlackDriver` sends signed requests exactly as Slack does.
Nothing needs a Slack workspace, a Zenlayer account or the network.
"""

from __future__ import annotations

from bot.devtools.demo.main import main, run_demo
from bot.devtools.demo.processes import child_environment
from bot.devtools.demo.render import (
    Transcript,
    edited_lines,
    format_entry,
    private_lines,
    render_buttons,
    render_message,
    render_mrkdwn,
)

__all__ = [
    "Transcript",
    "child_environment",
    "edited_lines",
    "format_entry",
    "main",
    "private_lines",
    "render_buttons",
    "render_message",
    "render_mrkdwn",
    "run_demo",
]
