"""The delivery outbox: messages owed to Slack, written with the change they report, and each channel's send slot.

Requests that ended before this revision without their outcome told are picked up by the watcher, which enqueues
their final reply (it does so for any such request it claims).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the outbox and slack_channels tables."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("pending_key", sa.String(length=48), nullable=True),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("notify_user", sa.String(length=32), nullable=True),
        sa.Column("response_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claim_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["start_requests.id"],
            name=op.f("fk_outbox_request_id_start_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("pending_key", name=op.f("uq_outbox_pending_key")),
    )
    op.create_index(op.f("ix_outbox_request_id"), "outbox", ["request_id"], unique=False)
    op.create_index("ix_outbox_channel_id_due_at", "outbox", ["channel_id", "due_at"], unique=False)
    op.create_table(
        "slack_channels",
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("tat", sa.Float(), server_default="0", nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claim_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("pk_slack_channels")),
    )


def downgrade() -> None:
    """Drop both tables (messages still pending are lost with them)."""
    op.drop_table("slack_channels")
    op.drop_index("ix_outbox_channel_id_due_at", table_name="outbox")
    op.drop_index(op.f("ix_outbox_request_id"), table_name="outbox")
    op.drop_table("outbox")
