"""`vm-bot audit --format json|csv`: the audit trail written out row by row, for compliance exports of any size."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from bot.db.audit import EXPORTED_NAMES

FORMATS = ("json", "csv")
# What makes Excel, LibreOffice or Google Sheets read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _when(moment: datetime) -> str:
    """Return an ISO 8601 UTC time with microseconds, the form every reader parses."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _detail(raw: str | None) -> Any:
    """Return an event's detail as the JSON object it was written as (text kept as is if it never was one)."""
    try:
        return json.loads(raw or "{}")
    except ValueError:
        return {"raw": raw}


def write_json_lines(rows: Iterable[Any], out: TextIO) -> int:
    """Write one JSON object per event and line (JSON Lines: readable while it streams); return how many."""
    count = 0
    for row in rows:
        record = dict(zip(EXPORTED_NAMES, row, strict=True))
        record["created_at"] = _when(record["created_at"])
        record["detail"] = _detail(record["detail"])
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        count += 1
    return count


def _inert(value: Any) -> Any:
    """Return a text cell a spreadsheet would run as a formula with a leading apostrophe; anything else as it is."""
    # Every text column holds an id, an event name or a JSON object today, none of which starts like a formula; this
    # keeps it so if one ever carries what somebody typed (OWASP's advice for CSV injection).
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def write_csv(rows: Iterable[Any], out: TextIO) -> int:
    """Write a header and one CSV row per event (detail as its JSON text); return how many events."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORTED_NAMES)
    count = 0
    for row in rows:
        values = [_inert(value) for value in row]
        values[1] = _when(values[1])
        writer.writerow(values)
        count += 1
    return count


def write(rows: Iterable[Any], out: TextIO, fmt: str) -> int:
    """Write rows in fmt ("json" or "csv") and return how many events went out."""
    if fmt == "json":
        return write_json_lines(rows, out)
    if fmt == "csv":
        return write_csv(rows, out)
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
