"""Safety rules at the moment of decision: who may approve, grant and start, and what cannot happen twice.

Each test here failed against an earlier version (found in review); they run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from sqlalchemy import select

from bot.db import audit
from bot.db.models import Operation
from bot.db.session import Database
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.domain.errors import NotAllowed
from bot.grants import rules as grants
from bot.grants.admin import GrantArgs, GrantService, pattern_within
from bot.operations import claims, repository
from bot.operations.click_model import ClickOutcome, Decision
from bot.operations.records import OperationRecord
from bot.zenlayer.client import ZenlayerClient
from tests.db_support import travel
from tests.engine_support import Services, engine, services
from tests.slack_support import start_calls
from tests.zenlayer_support import VmProxy


@pytest.fixture
def starts(db: Database, vm: ZenlayerClient) -> Services:
    """The operation services over the real database and client."""
    return services(db, vm)


def add(db: Database, user: str, *patterns: str, **options: object) -> None:
    """Grant as the CLI would."""
    with db.session() as session:
        grants.add_grants(session, user, list(patterns), granted_by="test", **options)  # type: ignore[arg-type]


def read(db: Database, request_id: int) -> OperationRecord:
    with db.session(readonly=True) as session:
        found = repository.record(session, request_id)
        assert found is not None
        return found


def withdraw(db: Database, request_id: int, reason: str) -> bool:
    """What the courier does when Slack never confirmed a confirmation's post."""
    with db.session() as session:
        return repository.withdraw(session, request_id, reason)


# --- grants managed from chat ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "admin_pattern", "within"),
    [
        ("web-1", "web-*", True),
        ("web-*", "web-*", True),
        ("web-1?", "web-*", True),
        ("anything", "*", True),
        ("web-[0-9]", "web-[0-9]", True),
        ("web-3", "web-[0-9]", True),
        ("web-*", "web-?", False),  # `?` matched the `*` as text: an admin for web-1..9 granted all of web-*
        ("*", "?*", False),
        ("web-*", "web-[!x]*", False),
        ("db-*", "web-*", False),
        ("*", "web-*", False),
        ("we*", "web-*", False),
    ],
)
def test_an_admin_reaches_only_patterns_inside_their_own(pattern: str, admin_pattern: str, within: bool) -> None:
    assert pattern_within(pattern, admin_pattern) is within


def test_an_admin_cannot_grant_wider_than_their_pattern_and_the_refusal_is_audited(db: Database) -> None:
    add(db, "U0ADM", "web-?", action="admin")
    service = GrantService(db)

    with pytest.raises(NotAllowed):
        service.grant("U0ADM", "C0OPS", GrantArgs("U0EVE", ["web-*"]))
    assert service.grant("U0ADM", "C0OPS", GrantArgs("U0EVE", ["web-1"])) == 1

    with db.session(readonly=True) as session:
        assert {g.pattern for g in grants.list_grants(session, "U0EVE")} == {"web-1"}
        assert [e.event for e in audit.latest(session, user="U0ADM")].count("denied") == 1


def test_a_channel_scoped_admin_manages_grants_only_in_that_channel(db: Database) -> None:
    add(db, "U0ADM", "web-*", action="admin", channels=["C0OPS"])
    add(db, "U0VIC", "web-1", channels=["C0DB"])
    service = GrantService(db)

    with pytest.raises(NotAllowed):  # no --channel means every channel
        service.grant("U0ADM", "C0OPS", GrantArgs("U0ADM", ["web-*"], action="admin"))
    with pytest.raises(NotAllowed):
        service.grant("U0ADM", "C0OPS", GrantArgs("U0EVE", ["web-1"], channels=["C0DB"]))
    with pytest.raises(NotAllowed):
        service.revoke("U0ADM", "C0OPS", GrantArgs("U0VIC", ["web-1"]))
    with pytest.raises(NotAllowed):
        service.revoke("U0ADM", "C0ELSE", GrantArgs("U0VIC", ["web-1"], channels=["C0DB"]))
    assert service.grant("U0ADM", "C0OPS", GrantArgs("U0EVE", ["web-1"], channels=["C0OPS"])) == 1

    with db.session(readonly=True) as session:
        assert [(g.pattern, g.channel_id) for g in grants.list_grants(session, "U0VIC")] == [("web-1", "C0DB")]
        assert [(g.action, g.channel_id) for g in grants.list_grants(session, "U0ADM")] == [("admin", "C0OPS")]


# --- decisions at the click -----------------------------------------------------------------------------------


def test_approval_is_refused_once_the_requester_lost_their_grant(
    db: Database, starts: Services, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0REQ", "web-*", needs_approval=True)
    add(db, "U0APP", "web-*", action="approve")
    request = starts.open("U0REQ", ["web-1"])
    with db.session() as session:
        grants.revoke_grants(session, "U0REQ")

    result = starts.click(request, "U0APP", Decision.APPROVE)

    assert result.outcome == ClickOutcome.REQUESTER_NOT_ALLOWED
    engine(db, vm).step()
    assert start_calls(simulator) == []


def test_start_is_refused_when_the_grant_now_needs_a_second_person(db: Database, starts: Services) -> None:
    add(db, "U0REQ", "web-*")
    request = starts.open("U0REQ", ["web-1"])
    add(db, "U0REQ", "web-*", needs_approval=True)  # an admin tightened the grant meanwhile

    assert starts.click(request, "U0REQ", Decision.CONFIRM).outcome == ClickOutcome.NEEDS_APPROVAL


def test_a_withdrawn_request_is_never_started_by_a_click_on_it(db: Database, starts: Services) -> None:
    add(db, "U0REQ", "web-*")
    request = starts.open("U0REQ", ["web-1"])

    assert withdraw(db, request, "Slack did not confirm the post (TimeoutError)")  # the post timed out
    assert not withdraw(db, request, "again")  # a compare-and-set: once
    result = starts.click(request, "U0REQ", Decision.CONFIRM, message_ts="1700000001.000002")

    assert result.outcome == ClickOutcome.WITHDRAWN
    assert result.request is not None and result.request.state == "withdrawn"
    assert result.request.message_ts == "1700000001.000002"  # found: its message can now be shown withdrawn
    with db.session(readonly=True) as session:
        assert claims.holders(session, ["web-1"]) == {}


def test_a_click_that_came_first_keeps_the_request_from_being_withdrawn(db: Database, starts: Services) -> None:
    add(db, "U0REQ", "web-*")
    request = starts.open("U0REQ", ["web-1"])

    assert starts.click(request, "U0REQ", Decision.CONFIRM, message_ts="1.2").outcome == ClickOutcome.APPROVED
    assert not withdraw(db, request, "Slack did not confirm the post (TimeoutError)")
    assert read(db, request).state == "approved"


def test_approve_and_reject_do_not_apply_to_a_plain_confirmation(db: Database, starts: Services) -> None:
    add(db, "U0REQ", "web-*")
    add(db, "U0OTHER", "web-*", action="approve")
    request = starts.open("U0REQ", ["web-1"])
    assert not read(db, request).needs_approval

    assert starts.click(request, "U0OTHER", Decision.APPROVE).outcome == ClickOutcome.NOT_REQUESTER
    assert starts.click(request, "U0OTHER", Decision.REJECT).outcome == ClickOutcome.NOT_REQUESTER
    assert read(db, request).state == "pending"


def test_an_approver_cannot_approve_with_a_forged_start(db: Database, starts: Services) -> None:
    add(db, "U0REQ", "web-*", needs_approval=True)
    add(db, "U0APP", "web-*", action="approve")
    request = starts.open("U0REQ", ["web-1"])
    assert starts.click(request, "U0APP", Decision.CONFIRM).outcome == ClickOutcome.NOT_REQUESTER


def test_two_pending_requests_for_one_instance_start_it_once(
    db: Database, starts: Services, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    add(db, "U0BBB", "web-*")
    first = starts.open("U0AAA", ["web-1"])
    second = starts.open("U0BBB", ["web-1"])

    assert starts.click(first, "U0AAA", Decision.CONFIRM).outcome == ClickOutcome.APPROVED
    refused = starts.click(second, "U0BBB", Decision.CONFIRM)

    assert (refused.outcome, refused.busy) == (ClickOutcome.BUSY, ["web-1"])
    engine(db, vm).step()
    assert start_calls(simulator) == [["web-1"]]


# --- the watcher ------------------------------------------------------------------------------------------------


def test_a_status_too_long_to_store_does_not_stall_other_requests(
    db: Database, starts: Services, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0REQ", "web-*")
    odd = starts.open("U0REQ", ["web-1"])
    fine = starts.open("U0REQ", ["web-2"])
    starts.click(odd, "U0REQ", Decision.CONFIRM)
    starts.click(fine, "U0REQ", Decision.CONFIRM)
    w = engine(db, vm)
    w.step()  # both started
    simulator.set_status("web-1", "MAINTENANCE_IN_PROGRESS_BY_OPERATOR_X")  # unknown and 37 characters
    simulator.set_status("web-2", "RUNNING")

    w.step()

    assert read(db, fine).state == "done"
    stored = read(db, odd).instances[0].last_status
    assert stored == "MAINTENANCE_IN_PROGRESS_BY_OPERA"  # shown verbatim, cut to the column's 32 characters


class SlowStart(VmProxy):
    """The real client, with a hook that runs while a StartInstances call is in flight."""

    def __init__(self, client: ZenlayerClient, during_start: Callable[[int], None]):
        super().__init__(client)
        self.during_start = during_start
        self.calls = 0

    def start_instances(self, ids: Sequence[str]) -> str:
        self.calls += 1
        self.during_start(self.calls)
        return super().start_instances(ids)


def test_the_lease_is_renewed_between_start_batches(
    db: Database, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    ids = [f"web-{n}" for n in range(3, 153)]  # two StartInstances batches
    for instance_id in ids:
        simulator.add_instance(instance_id)
    add(db, "U0REQ", "web-*")
    svc = services(db, vm)
    request = svc.open("U0REQ", ids)
    svc.click(request, "U0REQ", Decision.CONFIRM)
    other = engine(db, vm, owner="w2/b")

    def slow_batch(call: int) -> None:
        travel(db, 100)  # each batch takes long; together longer than one lease (150 s)
        other.step()  # another replica looks for work meanwhile

    first = engine(db, SlowStart(vm, slow_batch), owner="w1/a")
    first.step()

    current = read(db, request)
    assert current.state == "watching"
    with db.session(readonly=True) as session:
        owner = session.scalar(select(Operation.lease_owner).where(Operation.id == request))
    assert owner == "w1/a"
    assert [len(batch) for batch in start_calls(simulator)] == [100, 50]
