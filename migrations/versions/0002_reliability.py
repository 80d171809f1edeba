"""Reliability: instance claims (exclusivity), clicks and start attempts (intent before effect), poll counters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTERS = ("start_calls", "stopped_polls", "missing_polls")


def upgrade() -> None:
    """Add the claims and attempts tables and the per-instance start and poll bookkeeping."""
    op.create_table(
        "active_instance_claims",
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["start_requests.id"],
            name=op.f("fk_active_instance_claims_request_id_start_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_active_instance_claims")),
    )
    op.create_index(
        op.f("ix_active_instance_claims_request_id"), "active_instance_claims", ["request_id"], unique=False
    )
    op.create_table(
        "start_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("instance_ids", sa.Text(), nullable=False),
        sa.Column("replica", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("zenlayer_request_id", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["start_requests.id"],
            name=op.f("fk_start_attempts_request_id_start_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_start_attempts")),
    )
    op.create_index(op.f("ix_start_attempts_request_id"), "start_attempts", ["request_id"], unique=False)
    op.create_index(op.f("ix_start_attempts_completed_at"), "start_attempts", ["completed_at"], unique=False)
    op.create_table(
        "clicks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("message_ts", sa.String(length=32), nullable=True),
        sa.Column("replica", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clicks")),
    )
    op.create_index(op.f("ix_clicks_decided_at"), "clicks", ["decided_at"], unique=False)
    with op.batch_alter_table("request_instances") as batch:
        batch.add_column(sa.Column("start_result", sa.String(length=16), nullable=True))
        for column in _COUNTERS:
            batch.add_column(sa.Column(column, sa.Integer(), nullable=False, server_default="0"))
    # Starts made before this version were accepted when they have a requestId.
    op.execute(
        "UPDATE request_instances SET start_result = 'accepted', start_calls = 1 WHERE zenlayer_request_id IS NOT NULL"
    )
    # Requests already active when upgrading keep holding their instances, so the rule holds from the first moment.
    op.execute(
        "INSERT INTO active_instance_claims (instance_id, request_id, claimed_at) "
        "SELECT ri.instance_id, MIN(ri.request_id), CURRENT_TIMESTAMP FROM request_instances ri "
        "JOIN start_requests sr ON sr.id = ri.request_id "
        "WHERE sr.state IN ('approved', 'starting', 'watching') AND ri.to_start AND ri.outcome IS NULL "
        "GROUP BY ri.instance_id"
    )


def downgrade() -> None:
    """Drop what the upgrade added."""
    with op.batch_alter_table("request_instances") as batch:
        for column in ("start_result", *_COUNTERS):
            batch.drop_column(column)
    op.drop_index(op.f("ix_clicks_decided_at"), table_name="clicks")
    op.drop_table("clicks")
    op.drop_index(op.f("ix_start_attempts_completed_at"), table_name="start_attempts")
    op.drop_index(op.f("ix_start_attempts_request_id"), table_name="start_attempts")
    op.drop_table("start_attempts")
    op.drop_index(op.f("ix_active_instance_claims_request_id"), table_name="active_instance_claims")
    op.drop_table("active_instance_claims")
