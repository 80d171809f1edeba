"""Moving the database's clock forward for tests and benchmarks, without pytest: `travel(db, seconds)`."""

from __future__ import annotations

from sqlalchemy import text

from bot.db.models import Base, UtcDateTime
from bot.db.session import Database


def travel(db: Database, seconds: float) -> None:
    """Move the world `seconds` into the future as the database sees it: every time it recorded moves that far into
    the past (its clock cannot be moved, so what is compared with it is). Deadlines, leases, claims, slots, ages."""
    with db.session() as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        for table in Base.metadata.sorted_tables:
            shifts = []
            for column in table.columns:
                name = column.name
                if isinstance(column.type, UtcDateTime):
                    shifts.append(
                        f"{name} = {name} - make_interval(secs => {seconds})"
                        if postgres
                        else f"{name} = strftime('%Y-%m-%d %H:%M:%f000', {name}, '-{seconds} seconds')"
                    )
                elif table.name == "slack_channels" and name in ("tat", "claim_until"):
                    shifts.append(f"{name} = {name} - {seconds}")
            if shifts:
                session.execute(text(f"UPDATE {table.name} SET {', '.join(shifts)}"))  # noqa: S608 — our own names
