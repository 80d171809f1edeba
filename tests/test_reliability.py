"""Promises under crashes and several replicas (issue 10): each test failed before the fix, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.db.models import AuditEvent, InstanceClaim, OutboxMessage, RequestInstance, StartAttempt, StartRequest
from bot.db.session import Database
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.domain import grants, lifecycle
from bot.domain.starts import ClickOutcome, Decision, DuplicatePending, StartService
from bot.domain.watcher import CONFIRM_POLLS, MISSING_POLLS, Watcher
from bot.zenlayer.client import ZenlayerClient
from tests.db_support import run_together
from tests.slack_support import ACCESS_KEY_ID, ACCESS_KEY_SECRET, start_calls, wait_until
from tests.zenlayer_support import VmProxy


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def add(db: Database, user: str, *patterns: str) -> None:
    with db.session() as session:
        grants.add_grants(session, user, list(patterns), granted_by="test")


def service(db: Database, vm: object, clock: Callable[[], datetime] | None = None) -> StartService:
    extra = {"clock": clock} if clock else {}
    return StartService(db, vm, confirm_ttl_seconds=600, approval_ttl_seconds=3600, **extra)  # type: ignore[arg-type]


def watcher(db: Database, vm: object, owner: str = "r1/a", **options: object) -> Watcher:
    options.setdefault("lease_seconds", 150)
    return Watcher(db, vm, poll_interval_seconds=1, start_timeout_seconds=600, owner=owner, **options)  # type: ignore[arg-type]


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
        request = lifecycle.get_request(session, request_id)
        assert request is not None
        return request.state


def approved(db: Database, starts: StartService, user: str, ids: list[str]) -> int:
    request = starts.prepare(user, "C0OPS", ids).request
    assert request is not None
    assert starts.decide(request.id, user, Decision.START).outcome == ClickOutcome.APPROVED
    return request.id


# --- exclusivity -----------------------------------------------------------------------------------------------


def test_overlapping_requests_clicked_at_once_never_both_win(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "*")
    add(db, "U0BBB", "*")
    starts = service(db, vm)
    for n in range(8):
        simulator.add_instance(f"a{n}")
        simulator.add_instance(f"b{n}")
        first = starts.prepare("U0AAA", "C0OPS", [f"a{n}"]).request
        second = starts.prepare("U0BBB", "C0OPS", [f"a{n}", f"b{n}"]).request
        assert first is not None and second is not None
        clicks = [(first.id, "U0AAA"), (second.id, "U0BBB")]

        results = run_together(2, lambda i, clicks=clicks: starts.decide(clicks[i][0], clicks[i][1], Decision.START))

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
    starts = service(db, vm)

    def command(_: int) -> object:
        try:
            return starts.prepare("U0AAA", "C0OPS", ["web-1", "web-2"]).request
        except DuplicatePending as exc:
            return exc

    results = run_together(6, command)

    assert sum(not isinstance(r, DuplicatePending) for r in results) == 1


def test_a_command_whose_confirmation_was_never_posted_does_not_block_the_next(
    db: Database, vm: ZenlayerClient
) -> None:
    add(db, "U0AAA", "web-*")
    clock = Clock()
    starts = service(db, vm, clock)
    lost = starts.prepare("U0AAA", "C0OPS", ["web-1"]).request  # the process died before posting it
    assert lost is not None
    with pytest.raises(DuplicatePending):  # within seconds it may still be on its way
        starts.prepare("U0AAA", "C0OPS", ["web-1"])

    clock.advance(20)
    again = starts.prepare("U0AAA", "C0OPS", ["web-1"]).request

    assert again is not None and again.id != lost.id
    assert state(db, lost.id) == "cancelled"


def test_a_recorded_click_is_decided_once_and_a_lost_one_is_recovered(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    simulator.add_instance("web-3")
    add(db, "U0AAA", "web-*")
    clock = Clock()
    starts = service(db, vm, clock)
    live, lost, elsewhere = (starts.prepare("U0AAA", "C0OPS", [f"web-{n}"]).request for n in (1, 2, 3))
    assert live is not None and lost is not None and elsewhere is not None
    click = starts.record_click(live.id, "U0AAA", Decision.START, message_ts="1.1", replica="r1/old")
    result = starts.decide_click(click)
    assert result is not None and result.outcome == ClickOutcome.APPROVED
    assert starts.decide_click(click) is None  # decided once, whoever comes second
    # Two clicks acknowledged by processes killed before deciding them:
    starts.record_click(lost.id, "U0AAA", Decision.START, message_ts="1.2", replica="r1/old")
    starts.record_click(elsewhere.id, "U0AAA", Decision.CANCEL, message_ts="1.3", replica="r2/dead")

    # The restarted r1 decides its predecessor's click at once; r2's waits until it is clearly orphaned.
    assert [r.outcome for r in starts.decide_orphaned_clicks(replica="r1", owner="r1/new")] == [ClickOutcome.APPROVED]
    assert state(db, elsewhere.id) == "pending"
    clock.advance(30)
    assert [r.outcome for r in starts.decide_orphaned_clicks(replica="r1", owner="r1/new")] == [ClickOutcome.CANCELLED]
    assert [state(db, r.id) for r in (live, lost, elsewhere)] == ["approved", "approved", "cancelled"]


# --- takeover ----------------------------------------------------------------------------------------------------


def test_a_restarted_replica_resumes_at_once_and_others_wait_for_the_lease(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    simulator.boot_seconds = 60
    request_id = approved(db, service(db, vm), "U0AAA", ["web-1"])
    watcher(db, vm, owner="r1/old").tick()  # started, then the process is killed
    assert state(db, request_id) == "watching"

    other = watcher(db, vm, owner="r2/x")
    other.tick()
    restarted = watcher(db, vm, owner="r1/new", replica="r1")
    assert restarted.take_over_predecessor() == 1
    simulator.set_status("web-1", "RUNNING")
    restarted.tick()

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
    request_id = approved(db, service(db, vm), "U0AAA", ["web-1", "web-2"])
    with pytest.raises(Crash):
        watcher(db, CrashAfterStart(vm), owner="r1/old").tick()
    with db.session(readonly=True) as session:
        attempt = session.scalars(select(StartAttempt)).one()
    assert (json.loads(attempt.instance_ids), attempt.replica, attempt.completed_at) == (
        ["web-1", "web-2"],
        "r1/old",
        None,
    )

    restarted = watcher(db, vm, owner="r1/new", replica="r1")
    restarted.take_over_predecessor()
    restarted.tick()
    simulator.set_status("web-1", "RUNNING")
    simulator.set_status("web-2", "RUNNING")
    restarted.tick()

    assert state(db, request_id) == "done"
    assert len(start_calls(simulator)) == 1  # the start that went through was not repeated
    with db.session(readonly=True) as session:
        attempt = session.scalars(select(StartAttempt)).one()
        audited = session.scalars(select(AuditEvent).where(AuditEvent.event == "zenlayer_start_instances")).all()
    assert attempt.completed_at is not None and attempt.outcome == "unknown"
    assert [json.loads(e.detail)["outcome"] for e in audited] == ["unknown"]


# --- unknown outcomes ----------------------------------------------------------------------------------------------


def test_an_unknown_start_that_was_applied_is_watched_not_repeated(db: Database, simulator: ZenlayerSimulator) -> None:
    add(db, "U0AAA", "web-*")
    with ZenlayerClient(
        simulator.url, access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, timeout=0.3, max_retries=0
    ) as vm:
        request_id = approved(db, service(db, vm), "U0AAA", ["web-1"])
        simulator.fail_next("StartInstances", status=200, hang_seconds=1)  # applied, but the reply never comes
        w = watcher(db, vm)
        w.tick()
        wait_until(lambda: simulator.status("web-1") == "RUNNING", what="web-1 running")
        w.tick()

    assert state(db, request_id) == "done"
    assert len(start_calls(simulator)) == 1


def test_an_unknown_start_that_was_not_applied_is_made_again_after_a_few_polls(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    request_id = approved(db, service(db, vm), "U0AAA", ["web-1"])
    simulator.fail_next("StartInstances", status=500)
    w = watcher(db, vm)
    w.tick()  # unknown outcome, still STOPPED
    for _ in range(CONFIRM_POLLS):
        w.tick()
    wait_until(lambda: simulator.status("web-1") == "RUNNING", what="web-1 running")
    w.tick()

    assert state(db, request_id) == "done"
    assert [c.http_status for c in simulator.calls if c.action == "StartInstances"] == [500, 200]


def test_an_unknown_start_that_never_takes_effect_fails_plainly_without_waiting_for_the_timeout(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    request_id = approved(db, service(db, vm), "U0AAA", ["web-1"])
    simulator.fail_next("StartInstances", status=500, times=2)
    w = watcher(db, vm)
    for _ in range(2 * CONFIRM_POLLS + 1):
        w.tick()

    assert state(db, request_id) == "failed"
    with db.session(readonly=True) as session:
        request = lifecycle.get_request(session, request_id)
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
    request_id = approved(db, service(db, vm), "U0AAA", ["web-1"])
    w = watcher(db, Gaps(vm, empty=MISSING_POLLS - 1))
    w.tick()  # started; the poll in this tick is the first empty page
    for _ in range(MISSING_POLLS - 2):
        w.tick()
    assert state(db, request_id) == "watching"
    wait_until(lambda: simulator.status("web-1") == "RUNNING", what="web-1 running")
    w.tick()
    assert state(db, request_id) == "done"


def test_an_instance_gone_from_several_polls_in_a_row_is_declared_gone(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    simulator.boot_seconds = 60
    request_id = approved(db, service(db, vm), "U0AAA", ["web-1"])
    w = watcher(db, vm)
    w.tick()
    simulator.remove_instance("web-1")
    for _ in range(MISSING_POLLS - 1):
        w.tick()
    assert state(db, request_id) == "watching"
    w.tick()
    assert state(db, request_id) == "failed"


# --- independence -----------------------------------------------------------------------------------------------------


POOLED: dict[str, Any] = {"poll_interval_seconds": 0.05, "start_timeout_seconds": 60, "owner": "r1/a", "workers": 4}


@contextmanager
def running(w: Watcher) -> Iterator[Watcher]:
    """Run a watcher's loop (heartbeat, pool and all) in a thread, as `vm-bot run` does; stop it afterwards."""
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
    starts = service(db, vm)
    slow = approved(db, starts, "U0AAA", ["web-1"])
    fast = approved(db, starts, "U0AAA", ["web-2"])
    api = SlowFor(vm, "web-1")
    with running(Watcher(db, api, **POOLED)):  # type: ignore[arg-type]
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
    request_id = approved(db, service(db, vm), "U0AAA", ["web-1"])
    mine = watcher(db, vm, owner="r1/a")
    mine.tick()
    assert state(db, request_id) == "watching"
    polled = mine._load(request_id)  # what this replica read before another took the lease over
    with db.session() as session:
        session.execute(update(StartRequest).where(StartRequest.id == request_id).values(lease_owner="r2/b"))

    mine._apply_polls([polled], {"web-1": "RUNNING"}, datetime.now(UTC))

    assert state(db, request_id) == "watching"
    with db.session(readonly=True) as session:
        assert session.scalar(select(RequestInstance.last_status).where(RequestInstance.request_id == request_id)) != (
            "RUNNING"
        )
    assert "final" not in owed(db, request_id)
