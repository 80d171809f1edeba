"""Safety rules at the moment of decision: who may approve, grant and start, and what cannot happen twice.

Each test here failed against an earlier version (found in review); they run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from bot.db.session import Database
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.domain import audit, grants, lifecycle
from bot.domain.errors import NotAllowed
from bot.domain.grant_admin import GrantArgs, GrantService, pattern_within
from bot.domain.starts import ClickOutcome, Decision, StartService
from bot.domain.watcher import Watcher
from bot.zenlayer.client import ZenlayerClient
from tests.slack_support import start_calls
from tests.zenlayer_support import VmProxy


@pytest.fixture
def starts(db: Database, vm: ZenlayerClient) -> StartService:
    """The start-request service over the real database and client."""
    return StartService(db, vm, confirm_ttl_seconds=600, approval_ttl_seconds=3600)


def add(db: Database, user: str, *patterns: str, **options: object) -> None:
    """Grant as the CLI would."""
    with db.session() as session:
        grants.add_grants(session, user, list(patterns), granted_by="test", **options)  # type: ignore[arg-type]


def watcher(
    db: Database, vm: object, owner: str = "w1", clock: Callable[[], datetime] | None = None, lease_seconds: float = 150
) -> Watcher:
    """A watcher ticked by hand."""
    extra = {"clock": clock} if clock else {}
    return Watcher(
        db,
        vm,  # type: ignore[arg-type]
        poll_interval_seconds=1,
        start_timeout_seconds=60,
        owner=owner,
        lease_seconds=lease_seconds,
        **extra,  # type: ignore[arg-type]
    )


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
    db: Database, starts: StartService, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0REQ", "web-*", needs_approval=True)
    add(db, "U0APP", "web-*", action="approve")
    request = starts.prepare("U0REQ", "C0OPS", ["web-1"]).request
    assert request is not None
    with db.session() as session:
        grants.revoke_grants(session, "U0REQ")

    result = starts.decide(request.id, "U0APP", Decision.APPROVE)

    assert result.outcome == ClickOutcome.REQUESTER_NOT_ALLOWED
    watcher(db, vm).tick()
    assert start_calls(simulator) == []


def test_start_is_refused_when_the_grant_now_needs_a_second_person(db: Database, starts: StartService) -> None:
    add(db, "U0REQ", "web-*")
    request = starts.prepare("U0REQ", "C0OPS", ["web-1"]).request
    assert request is not None
    add(db, "U0REQ", "web-*", needs_approval=True)  # an admin tightened the grant meanwhile

    assert starts.decide(request.id, "U0REQ", Decision.START).outcome == ClickOutcome.NEEDS_APPROVAL


def test_a_withdrawn_request_is_never_started_by_a_click_on_it(db: Database, starts: StartService) -> None:
    add(db, "U0REQ", "web-*")
    request = starts.prepare("U0REQ", "C0OPS", ["web-1"]).request
    assert request is not None

    assert starts.abandon(request.id, "Slack did not confirm the post (TimeoutError)")  # the post timed out
    assert not starts.abandon(request.id, "again")  # a compare-and-set: once
    result = starts.decide(request.id, "U0REQ", Decision.START, message_ts="1700000001.000002")

    assert result.outcome == ClickOutcome.WITHDRAWN
    assert result.request is not None and result.request.state == "cancelled"
    assert result.request.message_ts == "1700000001.000002"  # found: its message can now be shown withdrawn
    with db.session(readonly=True) as session:
        assert lifecycle.holders(session, ["web-1"]) == {}


def test_a_click_that_came_first_keeps_the_request_from_being_withdrawn(db: Database, starts: StartService) -> None:
    add(db, "U0REQ", "web-*")
    request = starts.prepare("U0REQ", "C0OPS", ["web-1"]).request
    assert request is not None

    assert starts.decide(request.id, "U0REQ", Decision.START, message_ts="1.2").outcome == ClickOutcome.APPROVED
    assert not starts.abandon(request.id, "Slack did not confirm the post (TimeoutError)")
    with db.session(readonly=True) as session:
        assert lifecycle.get_request(session, request.id).state == "approved"  # type: ignore[union-attr]


def test_approve_and_reject_do_not_apply_to_a_plain_confirmation(db: Database, starts: StartService) -> None:
    add(db, "U0REQ", "web-*")
    add(db, "U0OTHER", "web-*", action="approve")
    request = starts.prepare("U0REQ", "C0OPS", ["web-1"]).request
    assert request is not None and not request.needs_approval

    assert starts.decide(request.id, "U0OTHER", Decision.APPROVE).outcome == ClickOutcome.NOT_REQUESTER
    assert starts.decide(request.id, "U0OTHER", Decision.REJECT).outcome == ClickOutcome.NOT_REQUESTER
    with db.session(readonly=True) as session:
        assert lifecycle.get_request(session, request.id).state == "pending"  # type: ignore[union-attr]


def test_an_approver_cannot_approve_with_a_forged_start(db: Database, starts: StartService) -> None:
    add(db, "U0REQ", "web-*", needs_approval=True)
    add(db, "U0APP", "web-*", action="approve")
    request = starts.prepare("U0REQ", "C0OPS", ["web-1"]).request
    assert request is not None
    assert starts.decide(request.id, "U0APP", Decision.START).outcome == ClickOutcome.NOT_REQUESTER


def test_two_pending_requests_for_one_instance_start_it_once(
    db: Database, starts: StartService, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0AAA", "web-*")
    add(db, "U0BBB", "web-*")
    first = starts.prepare("U0AAA", "C0OPS", ["web-1"]).request
    second = starts.prepare("U0BBB", "C0OPS", ["web-1"]).request
    assert first is not None and second is not None

    assert starts.decide(first.id, "U0AAA", Decision.START).outcome == ClickOutcome.APPROVED
    refused = starts.decide(second.id, "U0BBB", Decision.START)

    assert (refused.outcome, refused.busy) == (ClickOutcome.BUSY, ["web-1"])
    watcher(db, vm).tick()
    assert start_calls(simulator) == [["web-1"]]


# --- the watcher ------------------------------------------------------------------------------------------------


def test_a_status_too_long_to_store_does_not_stall_other_requests(
    db: Database, starts: StartService, vm: ZenlayerClient, simulator: ZenlayerSimulator
) -> None:
    add(db, "U0REQ", "web-*")
    odd = starts.prepare("U0REQ", "C0OPS", ["web-1"]).request
    fine = starts.prepare("U0REQ", "C0OPS", ["web-2"]).request
    assert odd is not None and fine is not None
    starts.decide(odd.id, "U0REQ", Decision.START)
    starts.decide(fine.id, "U0REQ", Decision.START)
    w = watcher(db, vm)
    w.tick()  # both started
    simulator.set_status("web-1", "MAINTENANCE_IN_PROGRESS_BY_OPERATOR_X")  # unknown and 37 characters
    simulator.set_status("web-2", "RUNNING")

    w.tick()

    with db.session(readonly=True) as session:
        assert lifecycle.get_request(session, fine.id).state == "done"  # type: ignore[union-attr]
        stored = lifecycle.get_request(session, odd.id).instances[0].last_status  # type: ignore[union-attr]
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
    starts = StartService(db, vm, confirm_ttl_seconds=600, approval_ttl_seconds=3600)
    request = starts.prepare("U0REQ", "C0OPS", ids).request
    assert request is not None
    starts.decide(request.id, "U0REQ", Decision.START)
    now = [datetime.now(UTC)]
    other = watcher(db, vm, owner="w2", clock=lambda: now[0])

    def slow_batch(call: int) -> None:
        now[0] += timedelta(seconds=100)  # each batch takes long; together longer than one lease
        other.tick()  # another replica looks for work meanwhile

    first = watcher(db, SlowStart(vm, slow_batch), owner="w1", clock=lambda: now[0])
    first.tick()

    with db.session(readonly=True) as session:
        current = lifecycle.get_request(session, request.id)
    assert current is not None
    assert current.state == "watching" and current.lease_owner == "w1"
    assert not (current.error or "").startswith("vm-bot restarted")
    assert [len(batch) for batch in start_calls(simulator)] == [100, 50]
