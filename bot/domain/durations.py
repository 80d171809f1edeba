"""Durations as people type and read them: `45s`, `30m`, `4h`, `90d`, or combined (`1h30m`)."""

from __future__ import annotations

import re

from bot.domain.errors import InvalidInput

# A run's `--for` and a grant's `--max-run`: long enough to boot, short enough that a forgotten VM is found in a week.
MIN_SECONDS = 10
MAX_SECONDS = 7 * 24 * 3600
_DURATION_RE = re.compile(r"^(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?$")
_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def parse_duration(
    text: str,
    *,
    what: str = "A duration",
    minimum: float = MIN_SECONDS,
    maximum: float | None = MAX_SECONDS,
) -> float:
    """Return the seconds `text` says (minimum to maximum), or raise InvalidInput saying how to write one."""
    match = _DURATION_RE.match(text.strip().lower()) if text.isascii() else None
    if not text.strip() or match is None or not any(match.groups()):
        raise InvalidInput(f"{what} is written like `45s`, `30m`, `4h`, `1d` or `1h30m`")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    if total < minimum or (maximum is not None and total > maximum):
        most = f" and at most {say_duration(maximum)}" if maximum is not None else ""
        raise InvalidInput(f"{what} must be at least {say_duration(minimum)}{most}")
    return float(total)


def say_duration(seconds: float) -> str:
    """Say a duration the short way people read it: "4 h", "1 h 30 min", "45 s", "1 d 2 h"."""
    left = max(0, round(seconds))
    parts = []
    for unit, size in _UNITS:
        amount, left = divmod(left, size)
        if amount:
            parts.append(f"{amount} {unit}")
    return " ".join(parts[:2]) or "0 s"


def typed_duration(seconds: float) -> str:
    """Write a duration the way it is typed: "4h", "1h30m", "90d", "45s"."""
    left = max(0, round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, left = divmod(left, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"
