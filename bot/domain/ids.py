"""Instance and Slack id validation: the strict charsets every other layer relies on."""

from __future__ import annotations

import re

# Zenlayer ids are digits or short slugs; nothing else (no glob, mrkdwn or whitespace characters) is accepted.
INSTANCE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SLACK_USER_ID_RE = re.compile(r"^[UW][A-Z0-9]{2,20}$")
SLACK_CHANNEL_ID_RE = re.compile(r"^[CDG][A-Z0-9]{2,20}$")
# Grant patterns: the instance-id charset plus the glob characters * ? [ ] !
PATTERN_RE = re.compile(r"^[A-Za-z0-9._*?\[\]!-]{1,255}$")


def is_instance_id(value: str) -> bool:
    """Return True when value is a well-formed instance id."""
    return bool(INSTANCE_ID_RE.match(value))


def is_slack_user_id(value: str) -> bool:
    """Return True when value looks like a Slack member id (U… or W…)."""
    return bool(SLACK_USER_ID_RE.match(value))


def is_slack_channel_id(value: str) -> bool:
    """Return True when value looks like a Slack channel id (C…, D… or G…)."""
    return bool(SLACK_CHANNEL_ID_RE.match(value))


def is_pattern(value: str) -> bool:
    """Return True when value is a usable grant pattern (a glob over instance ids)."""
    return bool(PATTERN_RE.match(value)) and bracket_problem(value) is None


def bracket_problem(pattern: str) -> str | None:
    """Say why pattern's [ ] classes are unbalanced (fnmatch would match them literally, i.e. never), or None."""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1  # a leading ] belongs to the class
            end = pattern.find("]", j)
            if end == -1:
                return "has a [ without a closing ]"
            i = end + 1
            continue
        if char == "]":
            return "has a ] without an opening ["
        if char == "!":
            return "has a ! outside [ ] (only [!...] negates)"
        i += 1
    return None
