"""Initial schema: grants, start requests, their instances and the audit trail.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the four tables and their indexes."""
    op.create_table(
        "grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("pattern", sa.String(length=255), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("needs_approval", sa.Boolean(), nullable=False),
        sa.Column("granted_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
        sa.UniqueConstraint(
            "user_id", "action", "pattern", "channel_id", name=op.f("uq_grants_user_id_action_pattern_channel_id")
        ),
    )
    op.create_index(op.f("ix_grants_user_id"), "grants", ["user_id"], unique=False)

    op.create_table(
        "start_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("requester_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("message_ts", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("needs_approval", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=32), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("watch_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome_posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_start_requests")),
    )
    op.create_index(op.f("ix_start_requests_requester_id"), "start_requests", ["requester_id"], unique=False)
    op.create_index("ix_start_requests_state_expires_at", "start_requests", ["state", "expires_at"], unique=False)

    op.create_table(
        "request_instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("zone", sa.String(length=64), nullable=True),
        sa.Column("to_start", sa.Boolean(), nullable=False),
        sa.Column("skip_reason", sa.String(length=255), nullable=True),
        sa.Column("initial_status", sa.String(length=32), nullable=True),
        sa.Column("last_status", sa.String(length=32), nullable=True),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reported_status", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("zenlayer_request_id", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["start_requests.id"],
            name=op.f("fk_request_instances_request_id_start_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_instances")),
        sa.UniqueConstraint("request_id", "instance_id", name=op.f("uq_request_instances_request_id_instance_id")),
    )
    op.create_index(op.f("ix_request_instances_instance_id"), "request_instances", ["instance_id"], unique=False)
    op.create_index(op.f("ix_request_instances_request_id"), "request_instances", ["request_id"], unique=False)

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("zenlayer_request_id", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["start_requests.id"],
            name=op.f("fk_audit_events_request_id_start_requests"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    for column in ("actor", "created_at", "event", "request_id", "subject"):
        op.create_index(op.f(f"ix_audit_events_{column}"), "audit_events", [column], unique=False)


def downgrade() -> None:
    """Drop everything the upgrade created, children first."""
    for column in ("actor", "created_at", "event", "request_id", "subject"):
        op.drop_index(op.f(f"ix_audit_events_{column}"), table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index(op.f("ix_request_instances_request_id"), table_name="request_instances")
    op.drop_index(op.f("ix_request_instances_instance_id"), table_name="request_instances")
    op.drop_table("request_instances")
    op.drop_index("ix_start_requests_state_expires_at", table_name="start_requests")
    op.drop_index(op.f("ix_start_requests_requester_id"), table_name="start_requests")
    op.drop_table("start_requests")
    op.drop_index(op.f("ix_grants_user_id"), table_name="grants")
    op.drop_table("grants")
