"""The start-request lifecycle: transitions, expiry, races between sessions, and leases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db.models import AuditEvent, StartRequest
from bot.db.session import Database
from bot.domain.errors import InvalidInput
from bot.domain.lifecycle import (
    ACTIVE_STATES,
    FINAL_STATES,
    OPEN_STATES,
    NewInstance,
    State,
    approve,
    cancel,
    claim_work,
    create_request,
    expire_due,
    get_request,
    reject,
    release_leases,
    renew_leases,
    take_over_predecessor,
    transition,
)
from tests.db_support import run_together

T0 = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
TTL = 600


def new_request(db: Database, *, now: datetime = T0, ttl: float = TTL, ids: tuple[str, ...] = ("web-1",)) -> int:
    with db.session() as s:
        request = create_request(
            s,
            requester_id="U0REQ",
            channel_id="C0CHAN",
            instances=[NewInstance(i, name=f"name {i}", zone="zone-a", status="STOPPED") for i in ids],
            needs_approval=False,
            ttl_seconds=ttl,
            now=now,
        )
        return request.id


def state_of(db: Database, request_id: int) -> str:
    with db.session(readonly=True) as s:
        request = get_request(s, request_id)
        assert request is not None
        return request.state


def events(db: Database, request_id: int) -> list[str]:
    with db.session(readonly=True) as s:
        return list(
            s.scalars(select(AuditEvent.event).where(AuditEvent.request_id == request_id).order_by(AuditEvent.id))
        )


def test_state_groups_partition_the_states() -> None:
    assert set(OPEN_STATES) | set(ACTIVE_STATES) | set(FINAL_STATES) == set(State)
    assert len(OPEN_STATES) + len(ACTIVE_STATES) + len(FINAL_STATES) == len(State)
    assert State.TIMED_OUT == "timed_out"


def test_create_request_records_instances_and_an_audit_event(db: Database) -> None:
    with db.session() as s:
        request = create_request(
            s,
            requester_id="U0REQ",
            channel_id="C0CHAN",
            instances=[
                NewInstance("web-1", name="web one", zone="z1", status="STOPPED"),
                NewInstance("web-2", status="RUNNING", to_start=False, skip_reason="already RUNNING"),
                NewInstance("web-1", name="duplicate"),
            ],
            needs_approval=True,
            ttl_seconds=60,
            now=T0,
        )
        request_id = request.id
    with db.session(readonly=True) as s:
        loaded = get_request(s, request_id)
        assert loaded is not None
        assert (loaded.state, loaded.requester_id, loaded.channel_id, loaded.needs_approval) == (
            "pending",
            "U0REQ",
            "C0CHAN",
            True,
        )
        assert loaded.created_at == T0 and loaded.updated_at == T0
        assert loaded.expires_at == T0 + timedelta(seconds=60)
        assert loaded.expires_at.tzinfo is not None
        rows = [(i.instance_id, i.name, i.zone, i.initial_status, i.to_start, i.skip_reason) for i in loaded.instances]
        assert rows == [
            ("web-1", "web one", "z1", "STOPPED", True, None),
            ("web-2", None, None, "RUNNING", False, "already RUNNING"),
        ]
        created = s.scalars(select(AuditEvent).where(AuditEvent.request_id == request_id)).one()
    assert (created.event, created.actor) == ("request_created", "U0REQ")
    detail = json.loads(created.detail)
    assert detail["to_start"] == ["web-1"] and detail["skipped"] == {"web-2": "already RUNNING"}


def test_whatever_zenlayer_returns_fits_the_columns(db: Database) -> None:
    with db.session() as s:
        request_id = create_request(
            s,
            requester_id="U0REQ",
            channel_id="C0CHAN",
            instances=[NewInstance("web-1", name="n" * 3100, zone="z" * 100, status="S" * 50)],
            needs_approval=False,
            ttl_seconds=60,
            now=T0,
        ).id
    with db.session(readonly=True) as s:
        loaded = get_request(s, request_id)
        assert loaded is not None
        instance = loaded.instances[0]
    assert instance.name == "n" * 254 + "…"  # PostgreSQL would refuse the row; SQLite would keep it all
    assert (len(instance.zone or ""), len(instance.initial_status or "")) == (64, 32)


def test_create_request_refuses_bad_input(db: Database) -> None:
    with db.session() as s:
        with pytest.raises(InvalidInput):
            create_request(
                s, requester_id="U1", channel_id="C1", instances=[], needs_approval=False, ttl_seconds=1, now=T0
            )
        with pytest.raises(InvalidInput):
            create_request(
                s,
                requester_id="U1",
                channel_id="C1",
                instances=[NewInstance("web-*")],
                needs_approval=False,
                ttl_seconds=1,
                now=T0,
            )


def test_the_happy_path(db: Database) -> None:
    rid = new_request(db)
    t = T0 + timedelta(seconds=5)
    with db.session() as s:
        assert approve(s, rid, by="U0REQ", now=t)
    with db.session() as s:
        assert transition(s, rid, from_states=State.APPROVED, to=State.STARTING, now=t, started_at=t)
        assert transition(s, rid, from_states=[State.STARTING], to=State.WATCHING, now=t, watch_deadline=t)
        assert transition(s, rid, from_states=ACTIVE_STATES, to=State.DONE, now=t, finished_at=t)
    with db.session(readonly=True) as s:
        request = get_request(s, rid)
        assert request is not None
        assert (request.state, request.decided_by, request.decided_at, request.started_at) == ("done", "U0REQ", t, t)
        assert request.finished_at == t and request.updated_at == t
    assert events(db, rid) == ["request_created", "request_approved"]


@pytest.mark.parametrize("end", [State.FAILED, State.TIMED_OUT, State.DONE])
def test_watching_ends_in_any_final_outcome(db: Database, end: State) -> None:
    rid = new_request(db)
    with db.session() as s:
        for source, target in [(State.PENDING, State.APPROVED), (State.APPROVED, State.STARTING)]:
            assert transition(s, rid, from_states=source, to=target, now=T0)
        assert transition(s, rid, from_states=State.STARTING, to=State.WATCHING, now=T0)
        assert transition(s, rid, from_states=State.WATCHING, to=end, now=T0, error="boom")
    assert state_of(db, rid) == end


def test_wrong_source_state_is_refused(db: Database) -> None:
    rid = new_request(db)
    with db.session() as s:
        assert not transition(s, rid, from_states=State.APPROVED, to=State.STARTING, now=T0)
        assert not transition(s, rid, from_states=ACTIVE_STATES, to=State.DONE, now=T0)
    assert state_of(db, rid) == "pending"


def test_missing_request_is_refused(db: Database) -> None:
    with db.session() as s:
        assert not approve(s, 424242, by="U1", now=T0)
        assert not transition(s, 424242, from_states=OPEN_STATES, to=State.CANCELLED, now=T0)
        assert get_request(s, 424242) is None


def test_programming_errors_raise(db: Database) -> None:
    rid = new_request(db)
    with db.session() as s:
        with pytest.raises(ValueError, match="no transition"):
            transition(s, rid, from_states=State.DONE, to=State.APPROVED, now=T0)
        with pytest.raises(ValueError, match="no transition"):
            transition(s, rid, from_states=State.APPROVED, to=State.PENDING, now=T0)
        with pytest.raises(ValueError):
            transition(s, rid, from_states=[], to=State.APPROVED, now=T0)
        with pytest.raises(ValueError):
            transition(s, rid, from_states="bogus", to=State.APPROVED, now=T0)
        with pytest.raises(TypeError, match="id"):
            transition(s, rid, from_states=State.PENDING, to=State.APPROVED, now=T0, id=5)
    assert state_of(db, rid) == "pending"


def test_a_state_can_be_kept_while_setting_values(db: Database) -> None:
    rid = new_request(db)
    with db.session() as s:
        assert transition(s, rid, from_states=State.PENDING, to=State.PENDING, now=T0, message_ts="1700000000.000100")
    with db.session(readonly=True) as s:
        request = get_request(s, rid)
        assert request is not None and request.message_ts == "1700000000.000100"


def test_approve_cancel_reject_are_single_use(db: Database) -> None:
    approved, cancelled, rejected = new_request(db), new_request(db), new_request(db)
    t = T0 + timedelta(seconds=1)
    with db.session() as s:
        assert approve(s, approved, by="U0A", now=t)
        assert cancel(s, cancelled, by="U0REQ", now=t)
        assert reject(s, rejected, by="U0B", now=t, reason="not today")
    with db.session() as s:
        for rid in (approved, cancelled, rejected):
            assert not approve(s, rid, by="U0A", now=t)
            assert not cancel(s, rid, by="U0A", now=t)
            assert not reject(s, rid, by="U0A", now=t)
    assert [state_of(db, r) for r in (approved, cancelled, rejected)] == ["approved", "cancelled", "cancelled"]
    assert events(db, cancelled) == ["request_created", "request_cancelled"]
    assert events(db, rejected) == ["request_created", "request_rejected"]
    with db.session(readonly=True) as s:
        request = get_request(s, rejected)
        assert request is not None and (request.decided_by, request.finished_at) == ("U0B", t)


def test_approval_after_expiry_is_refused_even_before_expire_due_runs(db: Database) -> None:
    rid = new_request(db, ttl=60)
    with db.session() as s:
        assert not approve(s, rid, by="U0REQ", now=T0 + timedelta(seconds=60))
        assert not approve(s, rid, by="U0REQ", now=T0 + timedelta(seconds=61))
    assert state_of(db, rid) == "pending"
    with db.session() as s:
        assert approve(s, rid, by="U0REQ", now=T0 + timedelta(seconds=59))


def test_expire_due_expires_only_due_pending_requests(db: Database) -> None:
    soon = new_request(db, ttl=10)
    later = new_request(db, ttl=100)
    done_early = new_request(db, ttl=10)
    with db.session() as s:
        assert approve(s, done_early, by="U0REQ", now=T0)
    with db.session() as s:
        assert expire_due(s, now=T0 + timedelta(seconds=9)) == []
    with db.session() as s:
        assert expire_due(s, now=T0 + timedelta(seconds=10)) == [soon]  # expires_at <= now
    with db.session() as s:
        assert expire_due(s, now=T0 + timedelta(seconds=10)) == []  # already expired: not again
    with db.session() as s:
        assert expire_due(s, now=T0 + timedelta(seconds=1000)) == [later]
    assert [state_of(db, r) for r in (soon, later, done_early)] == ["expired", "expired", "approved"]
    assert events(db, soon) == ["request_created", "request_expired"]
    with db.session() as s:
        assert not approve(s, soon, by="U0REQ", now=T0)
        assert not cancel(s, soon, by="U0REQ", now=T0)


def test_concurrent_expire_due_calls_split_the_work(db: Database) -> None:
    ids = [new_request(db, ttl=1) for _ in range(6)]

    def sweep(_: int) -> list[int]:
        with db.session() as s:
            return expire_due(s, now=T0 + timedelta(seconds=5))

    results = run_together(4, sweep)
    assert sorted(i for r in results for i in r) == ids


def test_objects_in_the_session_see_the_new_state(db: Database) -> None:
    rid = new_request(db)
    with db.session() as s:
        request = get_request(s, rid)
        assert request is not None and request.state == "pending"
        assert approve(s, rid, by="U0REQ", now=T0)
        assert request.state == "approved"  # the cached object was expired, not left stale
        assert s.get(StartRequest, rid).state == "approved"  # type: ignore[union-attr]
        assert request.decided_by == "U0REQ"


def test_get_request_sees_changes_from_other_sessions(db: Database) -> None:
    rid = new_request(db)
    with db.session(readonly=True) as reader:
        first = get_request(reader, rid)
        assert first is not None and first.state == "pending"
        reader.commit()  # end the snapshot, as a fresh unit of work would
        with db.session() as writer:
            assert cancel(writer, rid, by="U0REQ", now=T0)
        again = get_request(reader, rid)
        assert again is first and again.state == "cancelled"


def test_sixteen_sessions_approving_at_once_exactly_one_wins(db: Database) -> None:
    rid = new_request(db)

    def click(index: int) -> bool:
        with db.session() as s:
            return approve(s, rid, by=f"U{index:04d}", now=T0 + timedelta(seconds=1))

    results = run_together(16, click)
    assert results.count(True) == 1
    assert state_of(db, rid) == "approved"
    assert events(db, rid).count("request_approved") == 1
    with db.session(readonly=True) as s:
        request = get_request(s, rid)
        assert request is not None and request.decided_by == f"U{results.index(True):04d}"


def test_approve_racing_cancel_exactly_one_wins(db: Database) -> None:
    for round_ in range(3):
        rid = new_request(db, ids=(f"web-{round_}",))  # an approval in one round holds its instance

        def click(index: int, rid: int = rid) -> bool:
            with db.session() as s:
                if index % 2:
                    return cancel(s, rid, by="U0REQ", now=T0)
                return approve(s, rid, by="U0REQ", now=T0)

        results = run_together(16, click)
        assert results.count(True) == 1
        winner = results.index(True)
        assert state_of(db, rid) == ("cancelled" if winner % 2 else "approved")
        assert len([e for e in events(db, rid) if e != "request_created"]) == 1


def _activate(db: Database, count: int) -> list[int]:
    ids = [new_request(db, ids=(f"web-{n}",)) for n in range(count)]
    with db.session() as s:
        for rid in ids:
            assert approve(s, rid, by="U0REQ", now=T0)
    return ids


def claim(db: Database, owner: str, at: float = 0, lease: float = 30) -> list[int]:
    with db.session() as s:
        return claim_work(s, owner=owner, now=T0 + timedelta(seconds=at), lease_seconds=lease)


def test_leases_are_taken_renewed_and_expire(db: Database) -> None:
    ids = _activate(db, 3)
    pending = new_request(db)
    assert claim(db, "replica-a") == ids  # never leased: lease_until IS NULL
    assert claim(db, "replica-b", at=10) == []  # a live lease held by another
    assert claim(db, "replica-a", at=20) == ids  # renewal by the holder (lease_owner == owner)
    assert claim(db, "replica-b", at=45) == []  # a's lease (until T0+50s) is still live at T0+45s
    assert claim(db, "replica-b", at=50) == []  # ... and at its last instant
    assert claim(db, "replica-b", at=51) == ids  # a stopped renewing: b takes over (lease_until < now)
    with db.session(readonly=True) as s:
        request = get_request(s, ids[0])
        assert request is not None and request.lease_owner == "replica-b"
        assert request.lease_until == T0 + timedelta(seconds=81)
    assert pending not in ids


def test_only_work_is_claimed_and_final_outcomes_until_told(db: Database) -> None:
    active, told, untold, cancelled = _activate(db, 4)
    pending = new_request(db)
    with db.session() as s:
        assert transition(s, told, from_states=ACTIVE_STATES, to=State.DONE, now=T0, outcome_posted_at=T0)
        assert transition(s, untold, from_states=ACTIVE_STATES, to=State.FAILED, now=T0)
        assert transition(s, cancelled, from_states=ACTIVE_STATES, to=State.CANCELLED, now=T0)
    assert claim(db, "a") == [active, untold]
    assert pending not in claim(db, "b", at=1000)


def test_claims_are_limited_and_leases_released(db: Database) -> None:
    ids = _activate(db, 3)
    with db.session() as s:
        assert claim_work(s, owner="a", now=T0, lease_seconds=30, limit=1) == [ids[0]]
    assert claim(db, "a") == ids
    with db.session() as s:
        assert release_leases(s, owner="a", request_ids=[ids[1]]) == 1
    assert claim(db, "b") == [ids[1]]
    with db.session() as s:
        assert release_leases(s, owner="a") == 2
        assert release_leases(s, owner="a") == 0


def test_the_heartbeat_renews_only_the_owners_leases(db: Database) -> None:
    mine, theirs = _activate(db, 2)
    with db.session() as s:
        assert claim_work(s, owner="a", now=T0, lease_seconds=15, limit=1) == [mine]
    assert claim(db, "b") == [theirs]
    with db.session() as s:
        assert renew_leases(s, owner="a", now=T0 + timedelta(seconds=10), lease_seconds=15) == 1
    assert claim(db, "b", at=20) == [theirs]  # a's renewed lease runs to T0+25s
    assert claim(db, "b", at=26) == [mine, theirs]


def test_a_restarted_replica_takes_over_its_predecessors_leases_at_once(db: Database) -> None:
    ids = _activate(db, 3)
    with db.session() as s:
        assert claim_work(s, owner="r1/old", now=T0, lease_seconds=15, limit=2) == ids[:2]
    assert claim(db, "r10/other") == [ids[2]]  # a replica whose name merely starts the same is another replica
    with db.session() as s:
        assert (
            take_over_predecessor(s, replica="r1", owner="r1/new", now=T0 + timedelta(seconds=1), lease_seconds=15) == 2
        )
    with db.session() as s:
        assert (
            take_over_predecessor(s, replica="r2", owner="r2/x", now=T0 + timedelta(seconds=1), lease_seconds=15) == 0
        )
    with db.session(readonly=True) as s:
        owners = [get_request(s, rid).lease_owner for rid in ids]  # type: ignore[union-attr]
    assert owners == ["r1/new", "r1/new", "r10/other"]
    assert claim(db, "r1/old", at=2) == []  # the old nonce is no longer the owner


def test_a_row_another_claimer_has_locked_is_skipped_not_waited_for(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises claimers with BEGIN IMMEDIATE; row locks are PostgreSQL's")
    ids = _activate(db, 2)
    with db.session() as holder:
        holder.execute(select(StartRequest.id).where(StartRequest.id == ids[0]).with_for_update())
        # The other claimer runs while the row lock is held; without SKIP LOCKED it would block until timeout.
        result = run_together(1, lambda _: claim(db, "b"), timeout=10)
    assert result == [[ids[1]]]


def test_two_owners_claiming_at_once_never_share_a_request(db: Database) -> None:
    ids = _activate(db, 20)

    def claim_as(index: int) -> list[int]:
        with db.session() as s:
            return claim_work(s, owner=f"replica-{index}", now=T0, lease_seconds=30)

    results = run_together(8, claim_as)
    claimed = [rid for result in results for rid in result]
    assert sorted(claimed) == ids  # every request claimed, none twice
    with db.session(readonly=True) as s:
        owners = {rid: owner for rid, owner in s.execute(select(StartRequest.id, StartRequest.lease_owner))}
    for index, result in enumerate(results):
        assert all(owners[rid] == f"replica-{index}" for rid in result)
