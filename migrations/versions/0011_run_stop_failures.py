"""Runs count their failed auto-stops: a run whose auto-stop failed is stopped again later, each time later.

A time-boxed run exists so a VM does not run on after its time; an auto-stop failing on a transient Zenlayer fault
(two calls answered 500, say) used to end the run "stop failed" and leave the VM running for good.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add runs.stop_failures (0 for every run there is)."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("stop_failures", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    """Drop it (a failed auto-stop ends its run again)."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("stop_failures")
