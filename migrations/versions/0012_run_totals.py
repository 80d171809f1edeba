"""The runs' metrics keep what pruned runs added: vmbot_run_* are counters, and a counter must never go down.

They were sums over the runs table, so `vm-bot db prune --audit` deleting old runs (with their operations) made
them drop, which Prometheus reads as a reset and increase() as a spike. Pruning now adds a run's share to
run_totals, by how it ended, in the transaction that deletes it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create run_totals (empty: nothing was pruned with its share kept before)."""
    op.create_table(
        "run_totals",
        sa.Column("ended_reason", sa.String(length=32), nullable=False),
        sa.Column("stopped", sa.Integer(), server_default="0", nullable=False),
        sa.Column("run_seconds", sa.Float(), server_default="0", nullable=False),
        sa.Column("unused_seconds", sa.Float(), server_default="0", nullable=False),
        sa.Column("extensions", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("ended_reason", name=op.f("pk_run_totals")),
    )


def downgrade() -> None:
    """Drop it (the metrics fall back to the runs still there)."""
    op.drop_table("run_totals")
