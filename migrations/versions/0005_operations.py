"""Operations: start requests become operations of any action (start today; stop and reboot next).

Tables are renamed by copying (so constraint and index names follow the convention on SQLite and PostgreSQL
alike): start_requests → operations (with an `action` column, every existing row a start), request_instances →
operation_instances (to_start → included, start_result → call_result, start_calls → calls, stopped_polls →
unchanged_polls), start_attempts → zenlayer_calls (with the Zenlayer `action` called). The references from
audit_events, active_instance_claims and outbox follow. Every row is kept with its id, so audit rows keep meaning
the same request.

An instance's outcome "running" becomes "reached" (the action's goal: RUNNING for a start, STOPPED for a stop).
Two decisions that were re-derived from `decided_by` become states of their own: a cancelled request nobody
decided was withdrawn (its confirmation was not known to be posted), and one an approver turned down was rejected.

A confirmation message belongs to one operation (unique channel and ts), clicks note the channel of the message
they were made on.

Requests that ended before the outbox existed and were never told get their final reply queued here, once (the
watcher used to look for them on every tick).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REQUEST_COLUMNS = (
    "id, requester_id, channel_id, message_ts, state, needs_approval, created_at, updated_at, expires_at, "
    "decided_by, decided_at, started_at, watch_deadline, finished_at, outcome_posted_at, error, lease_owner, "
    "lease_until"
)
_INSTANCE_COMMON = (
    "id, request_id, instance_id, name, zone, ip_address, skip_reason, initial_status, last_status, "
    "status_changed_at, reported_status, outcome, zenlayer_request_id, missing_polls"
)
_INSTANCE_RENAMED = (("to_start", "included"), ("start_result", "call_result"), ("start_calls", "calls"))
_INSTANCE_RENAMED += (("stopped_polls", "unchanged_polls"),)
_CALL_COLUMNS = "id, request_id, instance_ids, replica, created_at, completed_at, outcome, zenlayer_request_id, error"
# (table, old referenced table, new referenced table, ON DELETE)
_REFERENCES = (
    ("audit_events", "SET NULL"),
    ("active_instance_claims", "CASCADE"),
    ("outbox", "CASCADE"),
)


def _request_table(name: str, *, with_action: bool) -> None:
    """Create the requests table under name (operations has an action column; start_requests did not)."""
    action = [sa.Column("action", sa.String(length=16), server_default="start", nullable=False)] if with_action else []
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        *action,
        sa.Column("requester_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("message_ts", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("needs_approval", sa.Boolean(), nullable=False),
        *([sa.Column("approvers", sa.Text(), nullable=True)] if with_action else []),
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
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        *(
            [sa.UniqueConstraint("channel_id", "message_ts", name=op.f(f"uq_{name}_channel_id_message_ts"))]
            * with_action
        ),
    )
    op.create_index(op.f(f"ix_{name}_requester_id"), name, ["requester_id"], unique=False)
    op.create_index(f"ix_{name}_state_expires_at", name, ["state", "expires_at"], unique=False)


def _instance_table(name: str, parent: str, names: dict[str, str]) -> None:
    """Create the per-instance table under name, referencing parent, with the renamed columns named as in names."""
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("zone", sa.String(length=64), nullable=True),
        sa.Column("ip_address", sa.String(length=64), nullable=True),
        sa.Column(names["to_start"], sa.Boolean(), nullable=False),
        sa.Column("skip_reason", sa.String(length=255), nullable=True),
        sa.Column("initial_status", sa.String(length=32), nullable=True),
        sa.Column("last_status", sa.String(length=32), nullable=True),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reported_status", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("zenlayer_request_id", sa.String(length=128), nullable=True),
        sa.Column(names["start_result"], sa.String(length=16), nullable=True),
        sa.Column(names["start_calls"], sa.Integer(), server_default="0", nullable=False),
        sa.Column(names["stopped_polls"], sa.Integer(), server_default="0", nullable=False),
        sa.Column("missing_polls", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], [f"{parent}.id"], name=op.f(f"fk_{name}_request_id_{parent}"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint("request_id", "instance_id", name=op.f(f"uq_{name}_request_id_instance_id")),
    )
    op.create_index(op.f(f"ix_{name}_instance_id"), name, ["instance_id"], unique=False)
    op.create_index(op.f(f"ix_{name}_request_id"), name, ["request_id"], unique=False)


def _call_table(name: str, parent: str, *, with_action: bool) -> None:
    """Create the Zenlayer-calls table under name (zenlayer_calls names the action; start_attempts did not)."""
    action = (
        [sa.Column("action", sa.String(length=32), server_default="StartInstances", nullable=False)]
        if with_action
        else []
    )
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        *action,
        sa.Column("instance_ids", sa.Text(), nullable=False),
        sa.Column("replica", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("zenlayer_request_id", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"], [f"{parent}.id"], name=op.f(f"fk_{name}_request_id_{parent}"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
    )
    op.create_index(op.f(f"ix_{name}_completed_at"), name, ["completed_at"], unique=False)
    op.create_index(op.f(f"ix_{name}_request_id"), name, ["request_id"], unique=False)


def _repoint(old_parent: str, new_parent: str) -> None:
    """Point the tables that reference the requests table at its new name."""
    for table, on_delete in _REFERENCES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_request_id_{old_parent}", type_="foreignkey")
            batch.create_foreign_key(
                f"fk_{table}_request_id_{new_parent}", new_parent, ["request_id"], ["id"], ondelete=on_delete
            )


def _restart_sequences(*tables: str) -> None:
    """On PostgreSQL, continue each table's id sequence after the ids copied into it."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in tables:
        op.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, "
            "false)"
        )


def upgrade() -> None:
    """Copy the start tables into the operation tables, repoint references, drop the old ones, queue untold finals."""
    # A message belongs to one request from now on; a click could repoint a second one at it before (finding 6 of
    # the security issue): the later request forgets the message it never owned.
    op.execute(
        "UPDATE start_requests SET message_ts = NULL WHERE message_ts IS NOT NULL AND id NOT IN "
        "(SELECT MIN(id) FROM start_requests WHERE message_ts IS NOT NULL GROUP BY channel_id, message_ts)"
    )
    _request_table("operations", with_action=True)
    op.execute(
        f"INSERT INTO operations (action, {_REQUEST_COLUMNS}) SELECT 'start', {_REQUEST_COLUMNS} FROM start_requests"
    )
    op.execute("UPDATE operations SET state = 'withdrawn' WHERE state = 'cancelled' AND decided_by IS NULL")
    op.execute(
        "UPDATE operations SET state = 'rejected' WHERE state = 'cancelled' AND needs_approval "
        "AND decided_by <> requester_id"
    )
    _instance_table("operation_instances", "operations", {old: new for old, new in _INSTANCE_RENAMED})
    old_columns = ", ".join(old for old, _ in _INSTANCE_RENAMED)
    new_columns = ", ".join(new for _, new in _INSTANCE_RENAMED)
    op.execute(
        f"INSERT INTO operation_instances ({_INSTANCE_COMMON}, {new_columns}) "
        f"SELECT {_INSTANCE_COMMON}, {old_columns} FROM request_instances"
    )
    op.execute("UPDATE operation_instances SET outcome = 'reached' WHERE outcome = 'running'")
    _call_table("zenlayer_calls", "operations", with_action=True)
    op.execute(f"INSERT INTO zenlayer_calls ({_CALL_COLUMNS}) SELECT {_CALL_COLUMNS} FROM start_attempts")
    _repoint("start_requests", "operations")
    op.drop_table("request_instances")
    op.drop_table("start_attempts")
    op.drop_table("start_requests")
    _restart_sequences("operations", "operation_instances", "zenlayer_calls")
    with op.batch_alter_table("clicks") as batch:
        batch.add_column(sa.Column("channel_id", sa.String(length=32), nullable=True))
    op.execute(
        "INSERT INTO outbox (request_id, channel_id, kind, pending_key, version, created_at, due_at, attempts) "
        "SELECT o.id, o.channel_id, 'final', 'final:' || CAST(o.id AS VARCHAR), 0, CURRENT_TIMESTAMP, "
        "CURRENT_TIMESTAMP, 0 FROM operations o "
        "WHERE o.state IN ('done', 'failed', 'timed_out', 'expired') AND o.outcome_posted_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.request_id = o.id AND x.kind = 'final' "
        "AND x.pending_key IS NOT NULL)"
    )


def downgrade() -> None:
    """Copy the operations back into the start tables (withdrawn and rejected become cancelled again)."""
    _request_table("start_requests", with_action=False)
    op.execute(f"INSERT INTO start_requests ({_REQUEST_COLUMNS}) SELECT {_REQUEST_COLUMNS} FROM operations")
    op.execute("UPDATE start_requests SET state = 'cancelled' WHERE state IN ('withdrawn', 'rejected')")
    _instance_table("request_instances", "start_requests", {old: old for old, _ in _INSTANCE_RENAMED})
    old_columns = ", ".join(old for old, _ in _INSTANCE_RENAMED)
    new_columns = ", ".join(new for _, new in _INSTANCE_RENAMED)
    op.execute(
        f"INSERT INTO request_instances ({_INSTANCE_COMMON}, {old_columns}) "
        f"SELECT {_INSTANCE_COMMON}, {new_columns} FROM operation_instances"
    )
    op.execute("UPDATE request_instances SET outcome = 'running' WHERE outcome = 'reached'")
    _call_table("start_attempts", "start_requests", with_action=False)
    op.execute(f"INSERT INTO start_attempts ({_CALL_COLUMNS}) SELECT {_CALL_COLUMNS} FROM zenlayer_calls")
    _repoint("operations", "start_requests")
    op.drop_table("operation_instances")
    op.drop_table("zenlayer_calls")
    op.drop_table("operations")
    _restart_sequences("start_requests", "request_instances", "start_attempts")
    with op.batch_alter_table("clicks") as batch:
        batch.drop_column("channel_id")
