"""Small SQL helpers every repository shares: rows touched, column lengths, and INSERT … ON CONFLICT per dialect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Executable, String, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session


def rowcount(result: object) -> int:
    """Return how many rows an UPDATE or DELETE touched (SQLAlchemy types `execute()` without it)."""
    count = getattr(result, "rowcount", None)
    return int(count or 0)


def length_of(model: type[DeclarativeBase], column: str) -> int:
    """Return the declared length of a String column, so values from outside can be cut to fit it."""
    table = model.__table__
    assert isinstance(table, Table)
    kind = table.c[column].type
    assert isinstance(kind, String) and kind.length is not None
    return kind.length


def table_of(model: type[DeclarativeBase]) -> Table:
    """Return a model's Table, for Core statements: executemany, multi-row INSERT … RETURNING, prebuilt DML (the
    ORM's bulk paths build more per call, and insert one row at a time on SQLite where RETURNING is involved)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def fit(value: str | None, length: int) -> str | None:
    """Shorten text to length (ending in an ellipsis), so nothing from outside can refuse a row."""
    if value is None or len(value) <= length:
        return value
    return value[: length - 1] + "…"


def insert_for(session: Session, model: type[DeclarativeBase]) -> Any:
    """Return the dialect's INSERT construct for model (it has on_conflict_do_nothing/do_update)."""
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(model)


def insert_ignoring_conflicts(
    session: Session, model: type[DeclarativeBase], rows: Sequence[dict[str, Any]], index_elements: Sequence[str]
) -> None:
    """INSERT rows, skipping those whose key already exists (the existing row wins)."""
    if rows:
        statement: Executable = (
            insert_for(session, model).values(list(rows)).on_conflict_do_nothing(index_elements=list(index_elements))
        )
        session.execute(statement)
