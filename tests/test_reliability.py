"""Promises under crashes and several replicas (issue 10): each test failed before the fix, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.db.models import AuditEvent, InstanceClaim, Operation, OperationInstance, OutboxMessage, ZenlayerCall
from bot.db.session import Database
from bot.delivery import outbox
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.execution.polling import CONFIRM_POLLS, MISSING_POLLS
from bot.grants import rules as grants
from bot.operations import leases, repository
from bot.operations.click_model import ClickOutcome, ClickRow, Decision
from bot.operations.engine import Engine
from bot.operations.opening import DuplicatePending
from bot.operations.states import State
from bot.zenlayer.client import ZenlayerClient
from tests.db_support import run_together, travel
from tests.engine_support import Services, engine, services
from tests.slack_support import ACCESS_KEY_ID, ACCESS_KEY_SECRET, start_calls, wait_until
from tests.zenlayer_support import VmProxy


def add(db: Database, user: str, *patterns: str) -> None:
    with db.session() as session:
        grants.add_grants(session, user, list(patterns), granted_by="test")


def owed(db: Database, request_id: int) -> list[str]:
    """Return the kinds of the messages still owed to a request's channel (pending outbox rows), oldest first."""
    with db.session(readonly=True) as session:
        return list(
            session.scalars(
                select(OutboxMessage.kind)
                .where(OutboxMessage.request_id == request_id, OutboxMessage.pending_key.is_not(None))
                .order_by(OutboxMessage.id)
            )
        )


def state(db: Database, request_id: int) -> str:
    with db.session(readonly=True) as session:
        request = repository.record(session, request_id)
        assert request is not None
        return request.state


def approved(svc: Services, user: str, ids: list[str]) -> int:
    request_id = svc.open(user, ids)
    assert svc.click(request_id, user, Decision.CONFIRM).outcome == ClickOutcome.APPROVED
    return request_id


# --- exclusivity -----------------------------------------------------------------------------------------------


def test_overlapping_requests_clicked_at_once_never_both_win(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "*")
    add(db, "U0BBB", "*")
    svc = services(db, vm)
    for n in range(8):
        simulator.add_instance(f"a{n}")
        simulator.add_instance(f"b{n}")
        first = svc.open("U0AAA", [f"a{n}"])
        second = svc.open("U0BBB", [f"a{n}", f"b{n}"])
        clicks = [(first, "U0AAA"), (second, "U0BBB")]

        results = run_together(2, lambda i, clicks=clicks: svc.click(clicks[i][0], clicks[i][1], Decision.CONFIRM))

        outcomes = sorted(r.outcome for r in results)
        assert outcomes == [ClickOutcome.APPROVED, ClickOutcome.BUSY], f"round {n}: {outcomes}"
        winner = clicks[[r.outcome for r in results].index(ClickOutcome.APPROVED)][0]
        loser = next(r for r in results if r.outcome == ClickOutcome.BUSY)
        assert loser.busy == [f"a{n}"] and loser.holders[f"a{n}"].request_id == winner  # told who holds it
    with db.session(readonly=True) as session:
        claimed = session.execute(select(InstanceClaim.instance_id, InstanceClaim.request_id)).all()
    assert len(claimed) == len({i for i, _ in claimed})


def test_identical_commands_at_once_give_one_confirmation(db: Database, vm: ZenlayerClient) -> None:
    add(db, "U0AAA", "web-*")
    svc = services(db, vm)

    def command(_: int) -> object:
        try:
            return svc.open("U0AAA", ["web-1", "web-2"])
        except DuplicatePending as exc:
            return exc

    results = run_together(6, command)

    assert sum(not isinstance(r, DuplicatePending) for r in results) == 1


def test_a_confirmation_whose_process_died_before_posting_it_is_still_owed_and_blocks_a_duplicate(
    db: Database, vm: ZenlayerClient
) -> None:
    add(db, "U0AAA", "web-*")
    svc = services(db, vm)
    lost = svc.open("U0AAA", ["web-1"])  # the process died before its sender posted the confirmation
    with pytest.raises(DuplicatePending):  # within seconds it is on its way
        svc.open("U0AAA", ["web-1"])

    travel(db, 20)

    with pytest.raises(DuplicatePending):  # and later too: the confirmation is owed until a sender posts it
        svc.open("U0AAA", ["web-1"])
    with db.session(readonly=True) as session:
        assert outbox.is_pending(session, lost, outbox.Kind.CONFIRM)
    assert state(db, lost) == "pending"


def test_a_recorded_click_is_decided_once_and_a_lost_one_is_recovered(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    simulator.add_instance("web-3")
    add(db, "U0AAA", "web-*")
    old, dead, new = services(db, vm), services(db, vm, replica="r2"), services(db, vm)
    live, lost, elsewhere = (old.open("U0AAA", [f"web-{n}"]) for n in (1, 2, 3))
    click = old.clicks.record(ClickRow(live, "U0AAA", Decision.CONFIRM, "C0OPS", None))
    result = old.clicks.decide(click)
    assert result is not None and result.outcome == ClickOutcome.APPROVED
    assert old.clicks.decide(click) is None  # decided once, whoever comes second
    # Two clicks acknowledged by processes killed before deciding them (r1's previous process, and r2):
    old.clicks.record(ClickRow(lost, "U0AAA", Decision.CONFIRM, "C0OPS", None))
    dead.clicks.record(ClickRow(elsewhere, "U0AAA", Decision.CANCEL, "C0OPS", None))

    # The restarted r1 decides its predecessor's click at once; r2's waits until it is clearly orphaned.
    assert [r.outcome for r in new.clicks.decide_orphans()] == [ClickOutcome.APPROVED]
    assert state(db, elsewhere) == "pending"
    travel(db, 30)  # longer than a lease
    assert [r.outcome for r in new.clicks.decide_orphans()] == [ClickOutcome.CANCELLED]
    assert [state(db, r) for r in (live, lost, elsewhere)] == ["approved", "approved", "cancelled"]


# --- takeover ----------------------------------------------------------------------------------------------------


def test_a_restarted_replica_resumes_at_once_and_others_wait_for_the_lease(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    simulator.boot_seconds = 60
    request_id = approved(services(db, vm), "U0AAA", ["web-1"])
    engine(db, vm, owner="r1/old").step()  # started, then the process is killed
    assert state(db, request_id) == "watching"

    other = engine(db, vm, owner="r2/x")
    other.step()
    restarted = engine(db, vm, owner="r1/new")
    assert restarted.take_over_predecessor() == 1
    simulator.set_status("web-1", "RUNNING")
    restarted.step()

    assert state(db, request_id) == "done"
    assert owed(db, request_id).count("final") == 1  # the outcome is owed to the thread, once


# --- intent before effect ----------------------------------------------------------------------------------------


class Crash(BaseException):
    """The process dies here (nothing after it runs)."""


class CrashAfterStart(VmProxy):
    """The real client; the process dies right after StartInstances was sent."""

    def start_instances(self, ids: Sequence[str]) -> str:
        self.client.start_instances(ids)
        raise Crash


def test_a_crash_during_start_instances_leaves_an_open_attempt_that_recovery_settles(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    request_id = approved(services(db, vm), "U0AAA", ["web-1", "web-2"])
    with pytest.raises(Crash):
        engine(db, CrashAfterStart(vm), owner="r1/old").step()
    with db.session(readonly=True) as session:
        attempt = session.scalars(select(ZenlayerCall)).one()
    assert (json.loads(attempt.instance_ids), attempt.replica, attempt.completed_at) == (
        ["web-1", "web-2"],
        "r1/old",
        None,
    )

    restarted = engine(db, vm, owner="r1/new")
    restarted.take_over_predecessor()
    restarted.step()
    simulator.set_status("web-1", "RUNNING")
    simulator.set_status("web-2", "RUNNING")
    restarted.step()

    assert state(db, request_id) == "done"
    assert len(start_calls(simulator)) == 1  # the start that went through was not repeated
    with db.session(readonly=True) as session:
        attempt = session.scalars(select(ZenlayerCall)).one()
        audited = session.scalars(select(AuditEvent).where(AuditEvent.event == "zenlayer_start_instances")).all()
    assert attempt.completed_at is not None and attempt.outcome == "unknown"
    assert [json.loads(e.detail)["outcome"] for e in audited] == ["unknown"]


def test_a_call_whose_outcome_was_never_recorded_is_settled_once_its_operation_is_over(
    db: Database, vm: ZenlayerClient
) -> None:
    # The database failed between a StartInstances and its record (chaos, PostgreSQL restarting), and the operation
    # ended meanwhile by another path (its instances' status): no one would ever settle the open call.
    add(db, "U0AAA", "web-*")
    request_id = approved(services(db, vm), "U0AAA", ["web-1"])
    with pytest.raises(Crash):
        engine(db, CrashAfterStart(vm), owner="r1/old").step()
    with db.session() as session:
        assert repository.transition(session, request_id, from_states=[State.STARTING], to=State.FAILED)
    sweeper = engine(db, vm, owner="r2/a", lease_seconds=15)
    sweeper.step()
    with db.session(readonly=True) as session:
        assert session.scalars(select(ZenlayerCall)).one().completed_at is None  # it may still be in flight
    travel(db, 16)  # a lease later
    sweeper.step()
    with db.session(readonly=True) as session:
        call = session.scalars(select(ZenlayerCall)).one()
    assert call.completed_at is not None and call.outcome == "unknown" and "database failed" in (call.error or "")


# --- unknown outcomes ----------------------------------------------------------------------------------------------


def test_an_unknown_start_that_was_applied_is_watched_not_repeated(db: Database, simulator: ZenlayerSimulator) -> None:
    add(db, "U0AAA", "web-*")
    with ZenlayerClient(
        simulator.url, access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, timeout=0.3, max_retries=0
    ) as vm:
        request_id = approved(services(db, vm), "U0AAA", ["web-1"])
        simulator.fail_next("StartInstances", status=200, hang_seconds=1)  # applied, but the reply never comes
        w = engine(db, vm)
        w.step()
        wait_until(lambda: simulator.status("web-1") == "RUNNING", what="web-1 running")
        w.step()

    assert state(db, request_id) == "done"
    assert len(start_calls(simulator)) == 1


def test_an_unknown_start_that_was_not_applied_is_made_again_after_a_few_polls(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    request_id = approved(services(db, vm), "U0AAA", ["web-1"])
    simulator.fail_next("StartInstances", status=500)
    w = engine(db, vm)
    w.step()  # unknown outcome, still STOPPED
    for _ in range(CONFIRM_POLLS):
        w.step()
    wait_until(lambda: simulator.status("web-1") == "RUNNING", what="web-1 running")
    w.step()

    assert state(db, request_id) == "done"
    assert [c.http_status for c in simulator.calls if c.action == "StartInstances"] == [500, 200]


def test_an_unknown_start_that_never_takes_effect_fails_plainly_without_waiting_for_the_timeout(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    request_id = approved(services(db, vm), "U0AAA", ["web-1"])
    simulator.fail_next("StartInstances", status=500, times=2)
    w = engine(db, vm)
    for _ in range(2 * CONFIRM_POLLS + 1):
        w.step()

    assert state(db, request_id) == "failed"
    with db.session(readonly=True) as session:
        request = repository.record(session, request_id)
        assert request is not None
        assert request.instances[0].skip_reason == "StartInstances did not take effect"
        assert session.scalars(select(InstanceClaim)).all() == []
    assert len(start_calls(simulator)) == 2


# --- not found -------------------------------------------------------------------------------------------------------


class Gaps(VmProxy):
    """The real client, whose status pages come back empty a given number of times."""

    def __init__(self, client: ZenlayerClient, empty: int):
        super().__init__(client)
        self.empty = empty

    def describe_instances_status(self, ids: Sequence[str]) -> dict[str, str]:
        statuses = super().describe_instances_status(ids)
        if self.empty > 0:
            self.empty -= 1
            return {}
        return statuses


def test_one_empty_status_page_does_not_fail_a_request(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    request_id = approved(services(db, vm), "U0AAA", ["web-1"])
    w = engine(db, Gaps(vm, empty=MISSING_POLLS - 1))
    w.step()  # started; the poll in this step is the first empty page
    for _ in range(MISSING_POLLS - 2):
        w.step()
    assert state(db, request_id) == "watching"
    wait_until(lambda: simulator.status("web-1") == "RUNNING", what="web-1 running")
    w.step()
    assert state(db, request_id) == "done"


def test_an_instance_gone_from_several_polls_in_a_row_is_declared_gone(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    simulator.boot_seconds = 60
    request_id = approved(services(db, vm), "U0AAA", ["web-1"])
    w = engine(db, vm)
    w.step()
    simulator.remove_instance("web-1")
    for _ in range(MISSING_POLLS - 1):
        w.step()
    assert state(db, request_id) == "watching"
    w.step()
    assert state(db, request_id) == "failed"


# --- independence -----------------------------------------------------------------------------------------------------


POOLED: dict[str, Any] = {"poll_interval_seconds": 0.05, "watch_seconds": 60, "workers": 4}


@contextmanager
def running(w: Engine) -> Iterator[Engine]:
    """Run an engine's loop (heartbeat, pool and all) in a thread, as `vm-bot run` does; stop it afterwards."""
    stop = threading.Event()
    runner = threading.Thread(target=w.run, args=(stop,), daemon=True)
    runner.start()
    try:
        yield w
    finally:
        stop.set()
        w.wake()
        runner.join(timeout=30)


class SlowFor(VmProxy):
    """The real client; StartInstances naming `slow` blocks until released."""

    def __init__(self, client: ZenlayerClient, slow: str):
        super().__init__(client)
        self.slow = slow
        self.release = threading.Event()

    def start_instances(self, ids: Sequence[str]) -> str:
        if self.slow in ids:
            assert self.release.wait(30)
        return super().start_instances(ids)


def test_a_slow_start_does_not_hold_up_other_requests(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    svc = services(db, vm)
    slow = approved(svc, "U0AAA", ["web-1"])
    fast = approved(svc, "U0AAA", ["web-2"])
    api = SlowFor(vm, "web-1")
    with running(engine(db, api, **POOLED)):
        try:
            wait_until(lambda: state(db, fast) == "done", timeout=15, what="the other request to finish")
            assert state(db, slow) == "starting"
        finally:
            api.release.set()
        wait_until(lambda: state(db, slow) == "done", timeout=15, what="the slow request to finish")


def test_a_poll_applied_in_one_batch_writes_nothing_for_a_request_another_replica_took_over(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    simulator.boot_seconds = 60
    request_id = approved(services(db, vm), "U0AAA", ["web-1"])
    mine = engine(db, vm, owner="r1/a")
    mine.step()
    assert state(db, request_id) == "watching"
    simulator.set_status("web-1", "RUNNING")
    plans = mine.poller.poll(mine.journal.watched([request_id]))  # what this replica saw before it lost the lease
    assert plans[0].ending is not None
    with db.session() as session:
        session.execute(update(Operation).where(Operation.id == request_id).values(lease_owner="r2/b"))

    assert mine.journal.apply(plans, {}) == set()

    assert state(db, request_id) == "watching"
    with db.session(readonly=True) as session:
        assert session.scalar(
            select(OperationInstance.last_status).where(OperationInstance.request_id == request_id)
        ) != ("RUNNING")
    assert "final" not in owed(db, request_id)


def test_a_job_read_before_another_made_its_call_does_not_call_again(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    """Two jobs of one replica read the same operation before either called (the step's read of operations left
    starting can race the job it just handed to the pool): the second finds the call made and does not repeat it."""
    add(db, "U0AAA", "web-*")
    request_id = approved(services(db, vm), "U0AAA", ["web-1"])
    w = engine(db, vm)
    with db.session() as session:
        assert leases.claim_work(session, owner=w.owner, lease=w.lease) == [request_id]
    assert w.journal.begin([request_id]) == [request_id]
    first, second = (w.journal.jobs([request_id], State.STARTING) for _ in range(2))
    w.caller.call_all(first)
    w.caller.call_all(second)
    assert start_calls(simulator) == [["web-1"]]
    assert state(db, request_id) == "watching"


def test_a_refused_call_is_made_again_once_for_the_instances_still_ready(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    request_id = approved(services(db, vm), "U0AAA", ["web-1", "web-2"])
    simulator.fail_next("StartInstances", status=403, code="OPERATION_DENIED_INSTANCE_RECYCLED", message="recycled")
    simulator.set_status("web-1", "RECYCLE")  # the re-check finds web-1 gone to the recycle bin, web-2 still ready
    engine(db, vm).step()
    assert start_calls(simulator) == [["web-1", "web-2"], ["web-2"]]
    with db.session(readonly=True) as session:
        rows = session.scalars(select(OperationInstance).where(OperationInstance.request_id == request_id))
        assert {r.instance_id: r.calls for r in rows} == {"web-1": 1, "web-2": 2}
