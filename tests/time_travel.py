"""Moving the database's clock forward for tests and benchmarks, without pytest: `travel(db, seconds)`."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from bot.db.models import Base, UtcDateTime
from bot.db.session import Database


def travel(db: Database, seconds: float, *, attempts: int = 5) -> None:
    """Move the world `seconds` into the future as the database sees it: every time it recorded moves that far into
    the past (its clock cannot be moved, so what is compared with it is). Deadlines, leases, claims, slots, ages.

    It updates every table in one transaction beside a live bot, whose transactions take their rows in another
    order: PostgreSQL may pick it as a deadlock's victim (rolled back whole), and then it simply runs again."""
    for attempt in range(attempts):
        try:
            _shift(db, seconds)
            return
        except OperationalError as exc:
            if "deadlock" not in str(exc).lower() or attempt == attempts - 1:
                raise


def _shift(db: Database, seconds: float) -> None:
    """One attempt of travel, in one transaction."""
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
