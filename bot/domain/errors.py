"""Errors meant for the person who typed the command: shown to them privately, never logged as failures."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; its message is plain text, safe to show them once escaped for the medium."""


class InvalidInput(UserError):
    """The command, an id, a pattern or an option is malformed."""


class NotAllowed(UserError):
    """The user lacks a grant for what they asked."""
