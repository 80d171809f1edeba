"""Run timers under several replicas and crashes, engines stepped by hand on SQLite and PostgreSQL: a due stop
happens exactly once, two replicas never both stop a run, and a replica that dies at any instant leaves its stop to
be finished by another within a lease and a poll."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import select, update

from bot.db.models import Operation, Run, ZenlayerCall
from bot.db.session import Database
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.domain.actions import REBOOT
from bot.grants import rules as grants
from bot.operations import leases
from bot.operations.click_model import ClickOutcome, Decision
from bot.operations.runs import STOP_RETRY_SECONDS
from bot.operations.states import State
from bot.zenlayer.client import ZenlayerClient
from tests.db_support import run_together, travel
from tests.engine_support import engine, services
from tests.zenlayer_support import VmProxy

HOUR = 3600.0
LEASE = 150.0  # tests/engine_support.engine's default


class Crash(BaseException):
    """The process dies here (nothing after it runs)."""


class CrashAfterStop(VmProxy):
    """The real client; the process dies right after StopInstances was sent."""

    def stop_instances(self, ids: Sequence[str]) -> str:
        self.client.stop_instances(ids)
        raise Crash


class CrashBeforeStop(VmProxy):
    """The real client; the process dies just before StopInstances would be sent."""

    def stop_instances(self, ids: Sequence[str]) -> str:
        raise Crash


def running_run(db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator, ids: list[str]) -> int:
    """Start ids as a one-hour run (its clock running) and return the start's id."""
    with db.session() as session:
        grants.add_grants(session, "U0AAA", ["web-*"], granted_by="test")
    svc = services(db, vm)
    request_id = svc.open("U0AAA", ids, run_seconds=HOUR)
    assert svc.click(request_id, "U0AAA", Decision.CONFIRM).outcome == ClickOutcome.APPROVED
    starter = engine(db, vm, owner="r0/a")
    starter.step()
    for instance_id in ids:
        simulator.set_status(instance_id, "RUNNING")
    starter.step()
    assert run_states(db)[-len(ids) :] == ["running"] * len(ids)
    return request_id


def run_states(db: Database) -> list[str]:
    """Every run's state, in id order."""
    with db.session(readonly=True) as session:
        return list(session.scalars(select(Run.state).order_by(Run.id)))


def stops(simulator: ZenlayerSimulator) -> list[list[str]]:
    """The ids of every StopInstances call the simulator answered."""
    return [list(c.instance_ids) for c in simulator.calls if c.action == "StopInstances"]


def stop_operations(db: Database) -> int:
    """How many stop operations exist."""
    with db.session(readonly=True) as session:
        return len(session.scalars(select(Operation.id).where(Operation.action == "stop")).all())


def settle(db: Database, simulator: ZenlayerSimulator, vm: ZenlayerClient, owners: Sequence[str]) -> None:
    """Step the replicas (a few polls: a call of unknown outcome is made again only once polls show it was not
    applied) until every run has ended, instances stopping reaching STOPPED at once."""
    replicas = [engine(db, vm, owner=owner) for owner in owners]
    for _ in range(12):
        for instance_id, status in simulator.statuses().items():
            if status == "STOPPING":
                simulator.set_status(instance_id, "STOPPED")
        for replica in replicas:
            replica.step()
        if all(state in ("stopped", "ended") for state in run_states(db)):
            return


def test_a_run_is_not_stopped_a_moment_before_its_time(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    running_run(db, vm, simulator, ["web-1"])
    travel(db, HOUR - 2)
    engine(db, vm, owner="r1/a").step()
    assert stops(simulator) == [] and run_states(db) == ["running"]
    travel(db, 2)
    engine(db, vm, owner="r1/a").step()
    assert stops(simulator) == [["web-1"]]


def test_two_replicas_stepping_at_the_due_moment_stop_the_run_once(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    running_run(db, vm, simulator, ["web-1", "web-2"])
    travel(db, HOUR + 1)
    replicas = [engine(db, vm, owner=f"r{i}/a") for i in (1, 2, 3)]

    run_together(3, lambda i: replicas[i].step())
    settle(db, simulator, vm, ["r1/a", "r2/a", "r3/a"])  # whoever holds the stop's lease calls

    assert stops(simulator) == [["web-1", "web-2"]]  # one call for both, by one replica
    assert stop_operations(db) == 1
    assert run_states(db) == ["stopped", "stopped"]


@pytest.mark.parametrize("proxy", [CrashBeforeStop, CrashAfterStop], ids=["before_the_call", "after_the_call"])
def test_a_replica_dying_around_its_stop_call_leaves_the_stop_to_another_within_a_lease(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator, proxy: type[VmProxy]
) -> None:
    running_run(db, vm, simulator, ["web-1"])
    travel(db, HOUR + 1)
    with pytest.raises(Crash):
        engine(db, proxy(vm), owner="r1/a").step()  # made the stop operation, leased it, then died
    other = engine(db, vm, owner="r2/a")
    other.step()
    assert stop_operations(db) == 1  # the timer fired once: the other replica finds nothing due

    travel(db, LEASE + 1)  # the dead replica's lease lapses
    settle(db, simulator, vm, ["r2/a"])

    assert stops(simulator) == [["web-1"]]  # made once: a call that went out is seen applied, not repeated
    assert run_states(db) == ["stopped"]
    assert simulator.status("web-1") == "STOPPED"


def test_runs_of_several_starts_falling_due_together_share_one_call_and_a_busy_instance_is_left_to_its_holder(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    for instance_id in ("web-3", "web-4"):
        simulator.add_instance(instance_id, "STOPPED")
    first = running_run(db, vm, simulator, ["web-1", "web-2"])
    second = running_run(db, vm, simulator, ["web-3"])
    third = running_run(db, vm, simulator, ["web-4"])
    with db.session() as session:
        grants.add_grants(session, "U0AAA", ["web-*"], action="reboot", granted_by="test")
    svc = services(db, vm)
    reboot = svc.open("U0AAA", ["web-3"], action=REBOOT)  # approved as the runs fall due: it holds web-3
    assert svc.click(reboot, "U0AAA", Decision.CONFIRM).outcome == ClickOutcome.APPROVED
    travel(db, HOUR + 1)

    engine(db, vm, owner="r1/a").step()  # the one firing: stop operations made, leased and called at once
    settle(db, simulator, vm, ["r1/a"])

    assert stops(simulator) == [["web-1", "web-2", "web-4"]]  # one call for both free starts
    with db.session(readonly=True) as session:
        made = session.execute(
            select(Operation.parent_id, Operation.state, Operation.error)
            .where(Operation.action == "stop")
            .order_by(Operation.parent_id)
        ).all()
        ended = {
            i: (state, why) for i, state, why in session.execute(select(Run.instance_id, Run.state, Run.ended_reason))
        }
    assert [(parent, state) for parent, state, _ in made] == [(first, "done"), (second, "failed"), (third, "done")]
    assert made[1].error == "another request holds web-3"
    stopped = ("stopped", "auto")
    # web-3's stop is made again once its holder is done (bot.operations.runs.retry_delay), not dropped.
    assert ended == {"web-1": stopped, "web-2": stopped, "web-3": ("running", None), "web-4": stopped}


def test_a_shared_stop_call_leaves_out_an_operation_whose_lease_another_replica_took(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    simulator.add_instance("web-3", "STOPPED")
    first = running_run(db, vm, simulator, ["web-1", "web-2"])
    running_run(db, vm, simulator, ["web-3"])
    travel(db, HOUR + 1)
    mine = engine(db, vm, owner="r1/a")
    assert mine.timers.stop_due()  # the firing: one stop operation per start, approved
    with db.session() as session:
        made = leases.claim_work(session, owner=mine.owner, lease=mine.lease)
    jobs = mine.journal.jobs(made, State.APPROVED)
    assert sorted(mine.journal.begin(made)) == sorted(made) and len(made) == 2
    theirs = next(j.operation_id for j in jobs if [t.instance_id for t in j.targets] == ["web-3"])
    with db.session() as session:  # another replica took that one's lease meanwhile
        session.execute(update(Operation).where(Operation.id == theirs).values(lease_owner="r2/b"))

    mine.caller.call_all(jobs)

    assert stops(simulator) == [["web-1", "web-2"]]  # the lost one's instance is left out of the shared call
    with db.session(readonly=True) as session:
        calls = session.execute(
            select(ZenlayerCall.request_id, ZenlayerCall.instance_ids).where(ZenlayerCall.action == "StopInstances")
        ).all()
        parents = dict(session.execute(select(Operation.id, Operation.parent_id)).all())
    assert [(parents[request_id], ids) for request_id, ids in calls] == [(first, '["web-1", "web-2"]')]


def test_an_auto_stop_that_failed_is_made_again_later_until_the_instance_stops(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    running_run(db, vm, simulator, ["web-1"])
    travel(db, HOUR + 1)
    simulator.fail_next("StopInstances", status=500, times=2)  # Zenlayer fails both calls (nothing applied)
    settle(db, simulator, vm, ["r1/a"])
    assert simulator.status("web-1") == "RUNNING" and len(stops(simulator)) == 2
    with db.session(readonly=True) as session:
        run = session.scalars(select(Run)).one()
    assert (run.state, run.stop_failures, run.stop_request_id) == ("running", 1, None)

    engine(db, vm, owner="r1/a").step()
    assert len(stops(simulator)) == 2  # not at once: a while later
    travel(db, STOP_RETRY_SECONDS + 1)
    settle(db, simulator, vm, ["r1/a"])

    assert len(stops(simulator)) == 3 and simulator.status("web-1") == "STOPPED"
    assert run_states(db) == ["stopped"]
