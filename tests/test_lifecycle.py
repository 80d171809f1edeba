"""The operation lifecycle: transitions, expiry, races between sessions, and leases — every time the database's."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.db.lease import Lease, Owner
from bot.db.models import AuditEvent, Operation
from bot.db.session import Database
from bot.domain.actions import START
from bot.domain.errors import InvalidInput
from bot.operations import leases, repository
from bot.operations.creation import NewInstance, create
from bot.operations.records import OperationRecord
from bot.operations.repository import approve, expire_due, record, transition
from bot.operations.states import ACTIVE_STATES, FINAL_STATES, OPEN_STATES, State
from tests.db_support import run_together, travel

TTL = 600


def new_request(db: Database, *, ttl: float = TTL, ids: tuple[str, ...] = ("web-1",)) -> int:
    with db.session() as s:
        return create(
            s,
            action=START,
            requester_id="U0REQ",
            channel_id="C0CHAN",
            instances=[NewInstance(i, name=f"name {i}", zone="zone-a", status="STOPPED") for i in ids],
            needs_approval=False,
            ttl_seconds=ttl,
        )


def read(db: Database, request_id: int) -> OperationRecord:
    with db.session(readonly=True) as s:
        found = record(s, request_id)
        assert found is not None
        return found


def state_of(db: Database, request_id: int) -> str:
    return read(db, request_id).state


def lease_of(db: Database, request_id: int) -> tuple[str | None, object]:
    with db.session(readonly=True) as s:
        return s.execute(select(Operation.lease_owner, Operation.lease_until).where(Operation.id == request_id)).one()


def events(db: Database, request_id: int) -> list[str]:
    with db.session(readonly=True) as s:
        return list(
            s.scalars(select(AuditEvent.event).where(AuditEvent.request_id == request_id).order_by(AuditEvent.id))
        )


def cancel(s: object, rid: int, *, by: str) -> bool:
    return repository.decide(s, rid, State.CANCELLED, by=by, event="request_cancelled")  # type: ignore[arg-type]


def reject(s: object, rid: int, *, by: str, reason: str | None = None) -> bool:
    detail = {"reason": reason} if reason else {}
    return repository.decide(s, rid, State.REJECTED, by=by, event="request_rejected", **detail)  # type: ignore[arg-type]


def test_state_groups_partition_the_states() -> None:
    assert set(OPEN_STATES) | set(ACTIVE_STATES) | set(FINAL_STATES) == set(State)
    assert len(OPEN_STATES) + len(ACTIVE_STATES) + len(FINAL_STATES) == len(State)
    assert State.TIMED_OUT == "timed_out"


def test_create_request_records_instances_and_an_audit_event(db: Database) -> None:
    with db.session() as s:
        request_id = create(
            s,
            action=START,
            requester_id="U0REQ",
            channel_id="C0CHAN",
            instances=[
                NewInstance("web-1", name="web one", zone="z1", status="STOPPED"),
                NewInstance("web-2", status="RUNNING", included=False, skip_reason="already RUNNING"),
                NewInstance("web-1", name="duplicate"),
            ],
            needs_approval=True,
            ttl_seconds=60,
        )
    loaded = read(db, request_id)
    assert (loaded.state, loaded.requester_id, loaded.channel_id, loaded.needs_approval, loaded.action) == (
        "pending",
        "U0REQ",
        "C0CHAN",
        True,
        START,
    )
    assert loaded.expires_at - loaded.created_at == timedelta(seconds=60)
    assert loaded.expires_at.tzinfo is not None
    rows = [(i.instance_id, i.name, i.zone, i.initial_status, i.included, i.skip_reason) for i in loaded.instances]
    assert rows == [
        ("web-1", "web one", "z1", "STOPPED", True, None),
        ("web-2", None, None, "RUNNING", False, "already RUNNING"),
    ]
    with db.session(readonly=True) as s:
        created = s.scalars(select(AuditEvent).where(AuditEvent.request_id == request_id)).one()
    assert (created.event, created.actor) == ("request_created", "U0REQ")
    detail = json.loads(created.detail)
    assert detail["to_start"] == ["web-1"] and detail["skipped"] == {"web-2": "already RUNNING"}


def test_whatever_zenlayer_returns_fits_the_columns(db: Database) -> None:
    with db.session() as s:
        request_id = create(
            s,
            action=START,
            requester_id="U0REQ",
            channel_id="C0CHAN",
            instances=[NewInstance("web-1", name="n" * 3100, zone="z" * 100, status="S" * 50)],
            needs_approval=False,
            ttl_seconds=60,
        )
    instance = read(db, request_id).instances[0]
    assert instance.name == "n" * 254 + "…"  # PostgreSQL would refuse the row; SQLite would keep it all
    assert (len(instance.zone or ""), len(instance.initial_status or "")) == (64, 32)


def test_create_request_refuses_bad_input(db: Database) -> None:
    with db.session() as s:
        with pytest.raises(InvalidInput):
            create(
                s, action=START, requester_id="U1", channel_id="C1", instances=[], needs_approval=False, ttl_seconds=1
            )
        with pytest.raises(InvalidInput):
            create(
                s,
                action=START,
                requester_id="U1",
                channel_id="C1",
                instances=[NewInstance("web-*")],
                needs_approval=False,
                ttl_seconds=1,
            )


def test_the_happy_path(db: Database) -> None:
    rid = new_request(db)
    with db.session() as s:
        assert approve(s, rid, by="U0REQ")
    with db.session() as s:
        assert transition(s, rid, from_states=State.APPROVED, to=State.STARTING)
        assert transition(s, rid, from_states=[State.STARTING], to=State.WATCHING)
        assert transition(s, rid, from_states=ACTIVE_STATES, to=State.DONE)
    request = read(db, rid)
    assert (request.state, request.decided_by) == ("done", "U0REQ")
    assert request.decided_at is not None and request.finished_at is not None  # the move to final sets it, always
    assert request.decided_at <= request.finished_at <= request.as_of
    assert events(db, rid) == ["request_created", "request_approved"]


@pytest.mark.parametrize("end", [State.FAILED, State.TIMED_OUT, State.DONE])
def test_watching_ends_in_any_final_outcome(db: Database, end: State) -> None:
    rid = new_request(db)
    with db.session() as s:
        for source, target in [(State.PENDING, State.APPROVED), (State.APPROVED, State.STARTING)]:
            assert transition(s, rid, from_states=source, to=target)
        assert transition(s, rid, from_states=State.STARTING, to=State.WATCHING)
        assert transition(s, rid, from_states=State.WATCHING, to=end, error="boom")
    assert state_of(db, rid) == end
    assert read(db, rid).finished_at is not None


def test_wrong_source_state_is_refused(db: Database) -> None:
    rid = new_request(db)
    with db.session() as s:
        assert not transition(s, rid, from_states=State.APPROVED, to=State.STARTING)
        assert not transition(s, rid, from_states=ACTIVE_STATES, to=State.DONE)
    assert state_of(db, rid) == "pending"


def test_missing_request_is_refused(db: Database) -> None:
    with db.session() as s:
        assert not approve(s, 424242, by="U1")
        assert not transition(s, 424242, from_states=OPEN_STATES, to=State.CANCELLED)
        assert record(s, 424242) is None


def test_programming_errors_raise(db: Database) -> None:
    rid = new_request(db)
    with db.session() as s:
        with pytest.raises(ValueError, match="no transition"):
            transition(s, rid, from_states=State.DONE, to=State.APPROVED)
        with pytest.raises(ValueError, match="no transition"):
            transition(s, rid, from_states=State.APPROVED, to=State.PENDING)
        with pytest.raises(ValueError):
            transition(s, rid, from_states=[], to=State.APPROVED)
        with pytest.raises(ValueError):
            transition(s, rid, from_states="bogus", to=State.APPROVED)
        with pytest.raises(TypeError, match="id"):
            transition(s, rid, from_states=State.PENDING, to=State.APPROVED, id=5)
    assert state_of(db, rid) == "pending"


def test_a_state_can_be_kept_while_setting_values(db: Database) -> None:
    rid = new_request(db)
    with db.session() as s:
        assert transition(s, rid, from_states=State.PENDING, to=State.PENDING, message_ts="1700000000.000100")
    assert read(db, rid).message_ts == "1700000000.000100"


def test_approve_cancel_reject_are_single_use(db: Database) -> None:
    approved, cancelled, rejected = new_request(db), new_request(db), new_request(db)
    with db.session() as s:
        assert approve(s, approved, by="U0A")
        assert cancel(s, cancelled, by="U0REQ")
        assert reject(s, rejected, by="U0B", reason="not today")
    with db.session() as s:
        for rid in (approved, cancelled, rejected):
            assert not approve(s, rid, by="U0A")
            assert not cancel(s, rid, by="U0A")
            assert not reject(s, rid, by="U0A")
    assert [state_of(db, r) for r in (approved, cancelled, rejected)] == ["approved", "cancelled", "rejected"]
    assert events(db, cancelled) == ["request_created", "request_cancelled"]
    assert events(db, rejected) == ["request_created", "request_rejected"]
    request = read(db, rejected)
    assert request.decided_by == "U0B" and request.finished_at is not None


def test_approval_after_expiry_is_refused_even_before_expire_due_runs(db: Database) -> None:
    rid = new_request(db, ttl=60)
    travel(db, 59)
    with db.session() as s:
        assert approve(s, rid, by="U0REQ")
    late = new_request(db, ttl=60)
    travel(db, 60)
    with db.session() as s:
        assert not approve(s, late, by="U0REQ")  # its last instant is past: the database's clock decides
    travel(db, 1)
    with db.session() as s:
        assert not approve(s, late, by="U0REQ")
    assert state_of(db, late) == "pending"


def test_expire_due_expires_only_due_pending_requests(db: Database) -> None:
    soon = new_request(db, ttl=10)
    later = new_request(db, ttl=100)
    done_early = new_request(db, ttl=10)
    with db.session() as s:
        assert approve(s, done_early, by="U0REQ")
    travel(db, 9)
    with db.session() as s:
        assert expire_due(s) == []
    travel(db, 1)
    with db.session() as s:
        assert expire_due(s) == [soon]  # expires_at <= now
    with db.session() as s:
        assert expire_due(s) == []  # already expired: not again
    travel(db, 990)
    with db.session() as s:
        assert expire_due(s) == [later]
    assert [state_of(db, r) for r in (soon, later, done_early)] == ["expired", "expired", "approved"]
    assert events(db, soon) == ["request_created", "request_expired"]
    with db.session() as s:
        assert not approve(s, soon, by="U0REQ")
        assert not cancel(s, soon, by="U0REQ")


def test_concurrent_expire_due_calls_split_the_work(db: Database) -> None:
    ids = [new_request(db, ttl=1) for _ in range(6)]
    travel(db, 5)

    def sweep(_: int) -> list[int]:
        with db.session() as s:
            return expire_due(s)

    results = run_together(4, sweep)
    assert sorted(i for r in results for i in r) == ids


def test_a_read_inside_the_transaction_sees_the_new_state(db: Database) -> None:
    rid = new_request(db)
    with db.session() as s:
        before = record(s, rid)
        assert before is not None and before.state == "pending"
        assert approve(s, rid, by="U0REQ")
        after = record(s, rid)
        assert after is not None and after.state == "approved" and after.decided_by == "U0REQ"
        assert before.state == "pending"  # a read model is a copy: it never changes under its reader


def test_a_read_sees_changes_from_other_sessions(db: Database) -> None:
    rid = new_request(db)
    with db.session(readonly=True) as reader:
        first = record(reader, rid)
        assert first is not None and first.state == "pending"
        reader.commit()  # end the snapshot, as a fresh unit of work would
        with db.session() as writer:
            assert cancel(writer, rid, by="U0REQ")
        again = record(reader, rid)
        assert again is not None and again.state == "cancelled"


def test_sixteen_sessions_approving_at_once_exactly_one_wins(db: Database) -> None:
    rid = new_request(db)

    def click(index: int) -> bool:
        with db.session() as s:
            return approve(s, rid, by=f"U{index:04d}")

    results = run_together(16, click)
    assert results.count(True) == 1
    assert state_of(db, rid) == "approved"
    assert events(db, rid).count("request_approved") == 1
    assert read(db, rid).decided_by == f"U{results.index(True):04d}"


def test_approve_racing_cancel_exactly_one_wins(db: Database) -> None:
    for round_ in range(3):
        rid = new_request(db, ids=(f"web-{round_}",))  # an approval in one round holds its instance

        def click(index: int, rid: int = rid) -> bool:
            with db.session() as s:
                if index % 2:
                    return cancel(s, rid, by="U0REQ")
                return approve(s, rid, by="U0REQ")

        results = run_together(16, click)
        assert results.count(True) == 1
        winner = results.index(True)
        assert state_of(db, rid) == ("cancelled" if winner % 2 else "approved")
        assert len([e for e in events(db, rid) if e != "request_created"]) == 1


def _activate(db: Database, count: int) -> list[int]:
    ids = [new_request(db, ids=(f"web-{n}",)) for n in range(count)]
    with db.session() as s:
        for rid in ids:
            assert approve(s, rid, by="U0REQ")
    return ids


def claim(db: Database, owner: str, lease: float = 30, limit: int = 500) -> list[int]:
    with db.session() as s:
        return leases.claim_work(s, owner=Owner(*owner.split("/")), lease=Lease(lease), limit=limit)


def test_leases_are_taken_renewed_and_expire(db: Database) -> None:
    ids = _activate(db, 3)
    pending = new_request(db)
    assert claim(db, "replica/a") == ids  # never leased: lease_until IS NULL
    travel(db, 10)
    assert claim(db, "replica/b") == []  # a live lease held by another
    travel(db, 10)
    assert claim(db, "replica/a") == ids  # renewal by the holder: now + 30 s
    travel(db, 25)
    assert claim(db, "replica/b") == []  # a's lease still has 5 s to run
    travel(db, 6)
    assert claim(db, "replica/b") == ids  # a stopped renewing: b takes over (its lease has passed)
    owner, until = lease_of(db, ids[0])
    assert owner == "replica/b" and until is not None
    assert pending not in ids


def test_only_active_work_is_claimed(db: Database) -> None:
    active, told, untold, cancelled = _activate(db, 4)
    pending = new_request(db)
    with db.session() as s:
        assert transition(s, told, from_states=ACTIVE_STATES, to=State.DONE)
        assert transition(s, untold, from_states=ACTIVE_STATES, to=State.FAILED)
        assert transition(s, cancelled, from_states=ACTIVE_STATES, to=State.CANCELLED)
    # An operation's final reply is owed through the outbox, written with its end: no replica claims it for that.
    assert claim(db, "r/a") == [active]
    travel(db, 1000)
    assert pending not in claim(db, "r/b")


def test_claims_are_limited_and_leases_released(db: Database) -> None:
    ids = _activate(db, 3)
    assert claim(db, "r/a", limit=1) == [ids[0]]
    assert claim(db, "r/a") == ids
    with db.session() as s:
        assert leases.release(s, owner=Owner("r", "a"), operation_ids=[ids[1]]) == 1
    assert claim(db, "r/b") == [ids[1]]
    with db.session() as s:
        assert leases.release(s, owner=Owner("r", "a")) == 2
        assert leases.release(s, owner=Owner("r", "a")) == 0


def test_the_heartbeat_renews_only_the_owners_leases(db: Database) -> None:
    mine, theirs = _activate(db, 2)
    assert claim(db, "r/a", lease=15, limit=1) == [mine]
    assert claim(db, "r/b") == [theirs]
    travel(db, 10)
    with db.session() as s:
        assert leases.renew_all(s, owner=Owner("r", "a"), lease=Lease(15)) == 1
    travel(db, 10)
    assert claim(db, "r/b") == [theirs]  # a's renewed lease runs 5 s more
    travel(db, 6)
    assert claim(db, "r/b") == [mine, theirs]


def test_a_restarted_replica_takes_over_its_predecessors_leases_at_once(db: Database) -> None:
    ids = _activate(db, 3)
    assert claim(db, "r1/old", lease=15, limit=2) == ids[:2]
    assert claim(db, "r10/other") == [ids[2]]  # a replica whose name merely starts the same is another replica
    with db.session() as s:
        assert leases.take_over_predecessor(s, owner=Owner("r1", "new"), lease=Lease(15)) == 2
    with db.session() as s:
        assert leases.take_over_predecessor(s, owner=Owner("r2", "x"), lease=Lease(15)) == 0
    assert [lease_of(db, rid)[0] for rid in ids] == ["r1/new", "r1/new", "r10/other"]
    assert claim(db, "r1/old") == []  # the old nonce is no longer the owner


def test_a_row_another_claimer_has_locked_is_skipped_not_waited_for(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises claimers with BEGIN IMMEDIATE; row locks are PostgreSQL's")
    ids = _activate(db, 2)
    with db.session() as holder:
        holder.execute(select(Operation.id).where(Operation.id == ids[0]).with_for_update())
        # The other claimer runs while the row lock is held; without SKIP LOCKED it would block until timeout.
        result = run_together(1, lambda _: claim(db, "r/b"), timeout=10)
    assert result == [[ids[1]]]


def test_two_owners_claiming_at_once_never_share_a_request(db: Database) -> None:
    ids = _activate(db, 20)

    def claim_as(index: int) -> list[int]:
        return claim(db, f"replica/{index}")

    results = run_together(8, claim_as)
    claimed = [rid for result in results for rid in result]
    assert sorted(claimed) == ids  # every request claimed, none twice
    with db.session(readonly=True) as s:
        owners = {rid: owner for rid, owner in s.execute(select(Operation.id, Operation.lease_owner))}
    for index, result in enumerate(results):
        assert all(owners[rid] == f"replica/{index}" for rid in result)
