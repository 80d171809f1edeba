"""Signed Slack requests already accepted, so that a replay of the same bytes is refused by every replica.

Rows live for minutes (see bot/db/seen_requests.py): nothing to carry over, and dropping them loses nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the seen_requests table."""
    op.create_table(
        "seen_requests",
        sa.Column("signature", sa.String(length=80), nullable=False),
        sa.Column("trigger_id", sa.String(length=255), nullable=True),
        sa.Column("slack_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("signature", name=op.f("pk_seen_requests")),
        sa.UniqueConstraint("trigger_id", name=op.f("uq_seen_requests_trigger_id")),
    )
    op.create_index(op.f("ix_seen_requests_slack_ts"), "seen_requests", ["slack_ts"], unique=False)


def downgrade() -> None:
    """Drop it (a request replayed within minutes of the downgrade would then be accepted again)."""
    op.drop_index(op.f("ix_seen_requests_slack_ts"), table_name="seen_requests")
    op.drop_table("seen_requests")
