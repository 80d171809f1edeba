"""Slack surfaces beyond messages: App Home refreshes go through the outbox, and Workflow Builder steps are recorded.

The outbox keeps one mechanism for everything Slack is owed: a row may now belong to a person instead of an operation
(`request_id` NULL, `user_id` set: publish their App Home), and its `channel_id` names the gate it goes through (a
channel, or a Web API method Slack limits per workspace). `app_home_users` are the people whose Home is kept up to
date; `function_runs` link an operation to the Workflow Builder step that opened it, to be completed when it ends.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Let outbox rows belong to a user; create app_home_users and function_runs."""
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("request_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("user_id", sa.String(length=32), nullable=True))
    op.create_table(
        "app_home_users",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notice", sa.Text(), nullable=True),
        sa.Column("notice_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_app_home_users")),
    )
    op.create_table(
        "function_runs",
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("function_execution_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"], ["operations.id"], name=op.f("fk_function_runs_request_id_operations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_function_runs")),
        sa.UniqueConstraint("function_execution_id", name=op.f("uq_function_runs_function_execution_id")),
    )


def downgrade() -> None:
    """Drop what upgrade() added; outbox rows that belong to no operation go with their column."""
    op.drop_table("function_runs")
    op.drop_table("app_home_users")
    op.execute("DELETE FROM outbox WHERE request_id IS NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("user_id")
        batch.alter_column("request_id", existing_type=sa.Integer(), nullable=False)
