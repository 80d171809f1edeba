"""Durations as people type them: `45s`, `30m`, `4h`, `90d`, or combined (`1h30m`)."""

from __future__ import annotations

import re

UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([dhms])")
_WHOLE = re.compile(r"(?:\d+[dhms])+")


def parse_duration(text: str) -> float:
    """Return the seconds in a duration like `90d` or `1h30m`; ValueError naming the expected form otherwise."""
    cleaned = text.strip().lower()
    if not _WHOLE.fullmatch(cleaned):
        raise ValueError(f"must be a duration like 90d, 12h, 30m or 1d12h, got {text!r}")
    units = [unit for _, unit in _PART.findall(cleaned)]
    if len(set(units)) != len(units):
        raise ValueError(f"names a unit twice: {text!r}")
    return float(sum(int(amount) * UNIT_SECONDS[unit] for amount, unit in _PART.findall(cleaned)))


def format_duration(seconds: float) -> str:
    """Return seconds as the shortest duration text (`90d`, `1d12h`; `0s` for nothing)."""
    left = round(seconds)
    parts = []
    for unit, size in UNIT_SECONDS.items():
        amount, left = divmod(left, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"
