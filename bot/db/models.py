"""SQLAlchemy 2.0 models: grants, operations and their instances, claims, Zenlayer calls, clicks, the outbox, audit."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bot.domain.vocabulary import ANY_CHANNEL

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite drops the zone, so it is restored on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (needed for SQLite batch migrations)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Grant(Base):
    """Permission for one Slack user to do one action on the instances a selector picks, from a channel."""

    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("user_id", "action", "kind", "pattern", "channel_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    action: Mapped[str] = mapped_column(String(16))  # start | approve | admin
    # The selector: kind id | name | group | tag (bot.domain.selectors) and its value (a glob, group or KEY=VALUE).
    kind: Mapped[str] = mapped_column(String(16), default="id", server_default="id")
    pattern: Mapped[str] = mapped_column(String(255))
    channel_id: Mapped[str] = mapped_column(String(32), default=ANY_CHANNEL)  # "*" = any channel
    needs_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    max_run_seconds: Mapped[float | None] = mapped_column(Float, default=None)  # starts under it are time-boxed
    granted_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Operation(Base):
    """One requested power action (start, stop, reboot) on some instances: pending → approved → starting →
    watching → done | failed | timed_out, or cancelled, rejected, withdrawn, expired (bot.operations.states)."""

    __tablename__ = "operations"
    __table_args__ = (
        Index("ix_operations_state_expires_at", "state", "expires_at"),
        # A confirmation message belongs to one operation: a click can never repoint another one at it.
        UniqueConstraint("channel_id", "message_ts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(16), default="start", server_default="start")  # bot.operations.actions
    requester_id: Mapped[str] = mapped_column(String(32), index=True)
    channel_id: Mapped[str] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32), default=None)  # the confirmation; thread parent
    state: Mapped[str] = mapped_column(String(16))
    needs_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    approvers: Mapped[str | None] = mapped_column(Text, default=None)  # JSON list of who may approve it
    run_seconds: Mapped[float | None] = mapped_column(Float, default=None)  # a start's time box, once RUNNING
    run_cap_seconds: Mapped[float | None] = mapped_column(Float, default=None)  # its grants' cap, as opened
    # The operation whose thread this one reports in (an auto-stop reports in its run's start thread).
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("operations.id", ondelete="SET NULL"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(32), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    watch_deadline: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    outcome_posted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)  # told in Slack
    error: Mapped[str | None] = mapped_column(Text, default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    instances: Mapped[list[OperationInstance]] = relationship(
        back_populates="operation", cascade="all, delete-orphan", order_by="OperationInstance.id"
    )


class OperationInstance(Base):
    """One instance named in an operation, with its last seen status and outcome."""

    __tablename__ = "operation_instances"
    __table_args__ = (UniqueConstraint("request_id", "instance_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    instance_id: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str | None] = mapped_column(String(255), default=None)
    zone: Mapped[str | None] = mapped_column(String(64), default=None)
    ip_address: Mapped[str | None] = mapped_column(String(64), default=None)  # learnt once RUNNING
    included: Mapped[bool] = mapped_column(Boolean, default=True)  # false: skipped at confirmation
    skip_reason: Mapped[str | None] = mapped_column(String(255), default=None)
    initial_status: Mapped[str | None] = mapped_column(String(32), default=None)
    last_status: Mapped[str | None] = mapped_column(String(32), default=None)
    status_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    reported_status: Mapped[str | None] = mapped_column(String(32), default=None)  # last status told in thread
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)  # bot.operations.states.Outcome
    zenlayer_request_id: Mapped[str | None] = mapped_column(String(128), default=None)
    # accepted | unknown (the call may or may not have been applied) | None (not called yet, or refused)
    call_result: Mapped[str | None] = mapped_column(String(16), default=None)
    # Zenlayer calls naming it (at most 2); polls that saw it unchanged since a call of unknown outcome;
    # consecutive polls that did not return it.
    calls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unchanged_polls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    missing_polls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    operation: Mapped[Operation] = relationship(back_populates="instances")


class AuditEvent(Base):
    """An append-only record of one decision or external call."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)  # Slack user id, or "system"
    event: Mapped[str] = mapped_column(String(64), index=True)
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("operations.id", ondelete="SET NULL"), default=None, index=True
    )
    subject: Mapped[str | None] = mapped_column(String(64), default=None, index=True)  # user acted upon
    zenlayer_request_id: Mapped[str | None] = mapped_column(String(128), default=None)
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON object


class InstanceClaim(Base):
    """An instance held by the one active operation that may act on it: the primary key is the exclusivity rule."""

    __tablename__ = "active_instance_claims"

    instance_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ZenlayerCall(Base):
    """One Zenlayer call that acts on instances: written before the call (fenced by the operation's lease), completed
    after it; a row still open is a call whose outcome is unknown."""

    __tablename__ = "zenlayer_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(32), default="StartInstances", server_default="StartInstances")
    instance_ids: Mapped[str] = mapped_column(Text)  # JSON list
    replica: Mapped[str] = mapped_column(String(128))  # the lease owner that made the call
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None, index=True)
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)  # accepted|refused|failed|unknown
    zenlayer_request_id: Mapped[str | None] = mapped_column(String(128), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class Click(Base):
    """A button click, recorded before it is acknowledged and decided right after (or by recovery after a crash)."""

    __tablename__ = "clicks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(Integer)  # as the button said: it may name no request
    user_id: Mapped[str] = mapped_column(String(32))
    decision: Mapped[str] = mapped_column(String(16))  # bot.operations.clicks.Decision
    channel_id: Mapped[str | None] = mapped_column(String(32), default=None)  # where the clicked message is
    message_ts: Mapped[str | None] = mapped_column(String(32), default=None)
    replica: Mapped[str] = mapped_column(String(128))  # the lease owner of the process that acknowledged it
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None, index=True)
    outcome: Mapped[str | None] = mapped_column(String(32), default=None)


class Run(Base):
    """A time-boxed run of one instance a start brought up: stopped when its time is up (a timer is a row).

    waiting (the start is under way) → running (stop_at set when the instance reached RUNNING) → stopping (its stop
    operation is made) → stopped; or ended (never RUNNING, or stopped elsewhere). An auto-stop that failed puts its
    run back to running, stop_at a while later (bot.operations.runs.retry_delay); someone's stop that failed puts it
    back to running, stop_at as it was.
    """

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("request_id", "instance_id"),
        Index("ix_runs_state_stop_at", "state", "stop_at"),
        # The next reminder and the reminders due: running, not yet reminded, by time (every engine step asks).
        Index("ix_runs_state_reminded_at_remind_at", "state", "reminded_at", "remind_at"),
        # The runs of the instances a stop names (not every running run).
        Index("ix_runs_instance_id", "instance_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    instance_id: Mapped[str] = mapped_column(String(128))
    requester_id: Mapped[str] = mapped_column(String(32), index=True)
    channel_id: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # bot.operations.records.RunState
    duration_seconds: Mapped[float] = mapped_column(Float)  # as asked (or the cap), plus every extension
    cap_seconds: Mapped[float | None] = mapped_column(Float, default=None)  # no extension goes past now + this
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    stop_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    remind_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    reminded_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    extensions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    stop_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # auto-stops that failed
    stop_request_id: Mapped[int | None] = mapped_column(
        ForeignKey("operations.id", ondelete="SET NULL"), default=None, index=True
    )
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    ended_reason: Mapped[str | None] = mapped_column(String(32), default=None)  # auto | early | elsewhere | …


class RunTotal(Base):
    """What the runs pruned away had added to the runs' metrics, by how they ended: those are counters, which must
    never go down when `vm-bot db prune --audit` deletes old runs (bot.operations.run_numbers)."""

    __tablename__ = "run_totals"

    ended_reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    stopped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # runs stopped after RUNNING
    run_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")  # RUNNING until stopped
    unused_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")  # left by early stops
    extensions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class OutboxMessage(Base):
    """A message owed to Slack, written with the change it reports and sent by the sender (bot/delivery/sender.py).

    Its content is rendered from the database when it is sent, so one pending row per kind and request says it all:
    `pending_key` ("{kind}:{request_id}", or "home:{user_id}") is unique while the row is pending and NULL once it is
    sent or failed.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_channel_id_due_at", "channel_id", "due_at"),
        # What the sender looks through after every send: the pending rows only, never the week of delivered ones.
        Index(
            "ix_outbox_pending_channel_id_due_at",
            "channel_id",
            "due_at",
            sqlite_where=text("pending_key IS NOT NULL"),
            postgresql_where=text("pending_key IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The operation it reports; None for what belongs to a person rather than an operation (their App Home).
    request_id: Mapped[int | None] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str | None] = mapped_column(String(32), default=None)  # whose App Home (kind home)
    # The gate it goes through: a channel, or a Web API method Slack limits per workspace (bot/delivery/gate.py).
    channel_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # bot.delivery.outbox.Kind
    pending_key: Mapped[str | None] = mapped_column(String(48), unique=True, default=None)
    # Bumped when the row is enqueued again while pending: a send of an older version leaves the row pending.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    notify_user: Mapped[str | None] = mapped_column(String(32), default=None)  # told privately if it fails
    response_url: Mapped[str | None] = mapped_column(Text, default=None)  # the clicker's, cleared once done
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    claim_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class SlackChannel(Base):
    """A channel's send slot, shared by every replica: a GCRA "theoretical arrival time" and who is sending now."""

    __tablename__ = "slack_channels"

    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Unix seconds (a float, so one UPDATE can do the arithmetic on SQLite and PostgreSQL alike).
    tat: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    claim_until: Mapped[float | None] = mapped_column(Float, default=None)  # Unix seconds


class SeenRequest(Base):
    """A signed Slack request already accepted: its signature (or trigger_id) arriving again is a replay."""

    __tablename__ = "seen_requests"

    signature: Mapped[str] = mapped_column(String(80), primary_key=True)  # X-Slack-Signature, "v0=" + 64 hex
    trigger_id: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    slack_ts: Mapped[int] = mapped_column(BigInteger, index=True)  # X-Slack-Request-Timestamp (Unix seconds)


class AppHomeUser(Base):
    """Someone who opened vm-bot's App Home: their Home is published again whenever something on it changes.

    `notice` is one sentence shown at the top of their Home for a while (why a button they pressed there did nothing).
    """

    __tablename__ = "app_home_users"

    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)  # last views.publish
    notice: Mapped[str | None] = mapped_column(Text, default=None)
    notice_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class FunctionRun(Base):
    """A Workflow Builder step that opened an operation: completed (through the outbox, with the bot token) when the
    operation ends. Written in the transaction that records the operation (intent before effect)."""

    __tablename__ = "function_runs"

    request_id: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), primary_key=True)
    function_execution_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)  # success | error
    error: Mapped[str | None] = mapped_column(Text, default=None)  # the sentence the step failed with
