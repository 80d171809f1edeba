"""Time-boxed runs: one row per instance a start brings up, grant caps, the thread an auto-stop reports in.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the runs table, grants.max_run_seconds, operations.run_seconds, run_cap_seconds and parent_id."""
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("requester_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("cap_seconds", sa.Float(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stop_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remind_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("extensions", sa.Integer(), server_default="0", nullable=False),
        sa.Column("stop_request_id", sa.Integer(), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"], ["operations.id"], name=op.f("fk_runs_request_id_operations"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["stop_request_id"], ["operations.id"], name=op.f("fk_runs_stop_request_id_operations"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("request_id", "instance_id", name=op.f("uq_runs_request_id_instance_id")),
    )
    op.create_index(op.f("ix_runs_request_id"), "runs", ["request_id"], unique=False)
    op.create_index(op.f("ix_runs_requester_id"), "runs", ["requester_id"], unique=False)
    op.create_index(op.f("ix_runs_stop_request_id"), "runs", ["stop_request_id"], unique=False)
    op.create_index("ix_runs_state_stop_at", "runs", ["state", "stop_at"], unique=False)
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("max_run_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("run_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("run_cap_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_operations_parent_id"), ["parent_id"], unique=False)
        batch.create_foreign_key(
            batch.f("fk_operations_parent_id_operations"), "operations", ["parent_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    """Drop what upgrade added (runs under way are forgotten: their instances stay as they are)."""
    with op.batch_alter_table("operations") as batch:
        batch.drop_constraint(batch.f("fk_operations_parent_id_operations"), type_="foreignkey")
        batch.drop_index(batch.f("ix_operations_parent_id"))
        batch.drop_column("parent_id")
        batch.drop_column("run_cap_seconds")
        batch.drop_column("run_seconds")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("max_run_seconds")
    op.drop_index("ix_runs_state_stop_at", table_name="runs")
    op.drop_index(op.f("ix_runs_stop_request_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_requester_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_request_id"), table_name="runs")
    op.drop_table("runs")
