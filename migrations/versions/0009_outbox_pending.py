"""The sender's look for messages to send reads the pending rows only: a partial index beside the full one.

Delivered rows stay a week (bot.delivery.outbox.KEEP_DONE_SECONDS); without it SQLite read all of them after every
send and every idle second (20,000 delivered rows: 400x the work of a lookup with none).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("pending_key IS NOT NULL")


def upgrade() -> None:
    """Index the pending rows by channel and due time."""
    op.create_index(
        "ix_outbox_pending_channel_id_due_at",
        "outbox",
        ["channel_id", "due_at"],
        unique=False,
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    """Drop it (the lookup reads every row again)."""
    op.drop_index("ix_outbox_pending_channel_id_due_at", table_name="outbox")
