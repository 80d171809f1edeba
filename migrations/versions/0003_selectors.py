"""Grant selectors (id glob, name glob, resource group, tag) and the address of a started instance.

Existing grants become id globs, which is what they were.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_UNIQUE = "uq_grants_user_id_action_pattern_channel_id"
_NEW_UNIQUE = "uq_grants_user_id_action_kind_pattern_channel_id"


def upgrade() -> None:
    """Add grants.kind (default "id") into the unique key, and request_instances.ip_address."""
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="id"))
        batch.drop_constraint(_OLD_UNIQUE, type_="unique")
        batch.create_unique_constraint(_NEW_UNIQUE, ["user_id", "action", "kind", "pattern", "channel_id"])
    with op.batch_alter_table("request_instances") as batch:
        batch.add_column(sa.Column("ip_address", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Drop what the upgrade added; grants other than id globs go, as the old schema cannot hold them."""
    with op.batch_alter_table("request_instances") as batch:
        batch.drop_column("ip_address")
    op.execute("DELETE FROM grants WHERE kind <> 'id'")
    with op.batch_alter_table("grants") as batch:
        batch.drop_constraint(_NEW_UNIQUE, type_="unique")
        batch.create_unique_constraint(_OLD_UNIQUE, ["user_id", "action", "pattern", "channel_id"])
        batch.drop_column("kind")
