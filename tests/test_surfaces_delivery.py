"""What the surfaces are owed goes through the one outbox: a person's App Home (coalesced per person, only for
people who opened theirs, paced by the workspace-wide views.publish gate — not by any channel's) and the completion
of a Workflow Builder step (once, when its operation ends). On SQLite and PostgreSQL, against the Slack stand-in."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from slack_sdk import WebClient
from sqlalchemy import select, update

from bot.db.lease import Lease, Owner
from bot.db.models import OutboxMessage
from bot.db.session import Database
from bot.delivery import gate, outbox
from bot.delivery.sender import Sender
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.domain.actions import START
from bot.grants.authority import Authority
from bot.operations import homes, repository
from bot.operations.app_home import AppHome
from bot.operations.creation import NewInstance, create
from bot.operations.runs import RunBook
from bot.operations.states import State
from bot.operations.steps import StepRecorder
from bot.slack.courier import SlackCourier
from bot.slack.surfaces_courier import RoutingCourier, SurfacesCourier
from bot.slack.workspace import Workspace
from tests.db_support import travel
from tests.slack_support import BOT_TOKEN, wait_until

REQUESTER, APPROVER, OTHER = "U0REQUEST", "U0APPROVE", "U0OTHER"


def open_operation(db: Database, *, channel: str = "C0OPS", step: str | None = None) -> int:
    """Record a pending operation that needs APPROVER's approval (and was opened by a step, if given)."""
    with db.session() as session:
        request_id = create(
            session,
            action=START,
            requester_id=REQUESTER,
            channel_id=channel,
            instances=[NewInstance("web-1", name="web-1", status="STOPPED")],
            needs_approval=True,
            ttl_seconds=600,
            approvers=[APPROVER],
        )
        if step is not None:
            StepRecorder(step)(session, request_id)
        outbox.enqueue(session, request_id, outbox.Kind.CONFIRM)
        return request_id


def pending_rows(db: Database) -> list[tuple[str, int | None, str | None, str, int]]:
    """(kind, request, user, gate key, version) of every row still owed, oldest first."""
    with db.session(readonly=True) as session:
        rows = session.execute(
            select(
                OutboxMessage.kind,
                OutboxMessage.request_id,
                OutboxMessage.user_id,
                OutboxMessage.channel_id,
                OutboxMessage.version,
            )
            .where(OutboxMessage.pending_key.is_not(None))
            .order_by(OutboxMessage.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def opened(db: Database, *users: str) -> None:
    with db.session() as session:
        homes.opened(session, users)


def test_a_home_is_owed_only_to_those_who_opened_theirs_and_coalesces(db: Database) -> None:
    opened(db, REQUESTER)
    request_id = open_operation(db)
    with db.session() as session:
        outbox.enqueue(session, request_id, outbox.Kind.PROGRESS)  # a status a poll saw: not on a Home
        assert repository.decide(session, request_id, State.CANCELLED, by=REQUESTER, event="request_cancelled")

    rows = pending_rows(db)

    homes_owed = [r for r in rows if r[0] == "home"]
    assert homes_owed == [("home", None, REQUESTER, gate.VIEWS_PUBLISH, 2)]  # opened, created, cancelled: one row
    assert {r[3] for r in rows if r[0] != "home"} == {"C0OPS"}  # the channel's own messages, on its own gate
    opened(db, APPROVER)
    with db.session() as session:
        outbox.enqueue(session, request_id, outbox.Kind.REFRESH)
    assert {r[2] for r in pending_rows(db) if r[0] == "home"} == {REQUESTER, APPROVER}


def test_a_step_is_owed_its_completion_once_when_its_operation_ends(db: Database) -> None:
    request_id = open_operation(db, step="Fx0001")
    other = open_operation(db)
    assert [r for r in pending_rows(db) if r[0] == "step"] == []  # not before the end

    with db.session() as session:
        assert repository.decide(session, request_id, State.REJECTED, by=APPROVER, event="request_rejected")
        assert repository.decide(session, other, State.REJECTED, by=APPROVER, event="request_rejected")
        outbox.enqueue(session, [request_id, other], outbox.Kind.REFRESH)

    assert [r[:2] for r in pending_rows(db) if r[0] == "step"] == [("step", request_id)]
    assert {r[3] for r in pending_rows(db) if r[0] == "step"} == {gate.FUNCTIONS}


def test_the_views_publish_gate_paces_every_home_together(db: Database) -> None:
    me, lease = Owner("r1"), Lease(15)
    pace = gate.pace_of(gate.VIEWS_PUBLISH)
    taken = []
    for _ in range(pace.burst + 1):
        with db.session() as session:
            taken.append(gate.take(session, gate.VIEWS_PUBLISH, owner=me, lease=lease))
            gate.release(session, gate.VIEWS_PUBLISH, owner=me)

    assert taken == [True] * pace.burst + [False]  # a burst, then one every pace.seconds for all Homes at once
    assert pace.burst > gate.BURST and pace.seconds < gate.PACE_SECONDS  # Tier 4 is looser than a channel's pace


@contextmanager
def sending(db: Database, fake: FakeSlackWebApi) -> Iterator[Sender]:
    """A sender with both couriers, as app.py wires them (clients that raise on 429)."""
    me, lease = Owner("r1", "a"), Lease(15)
    client = WebClient(token=BOT_TOKEN, base_url=fake.url, timeout=10)
    surfaces = SurfacesCourier(
        db,
        client,
        owner=me,
        lease=lease,
        home=AppHome(db, Authority(db), RunBook(db), extend_seconds=3600),
        workspace=Workspace(client),
    )
    sender = Sender(
        db, RoutingCourier(SlackCourier(db, client, owner=me, lease=lease), surfaces), owner=me, lease=lease
    )
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield sender
    finally:
        stop.set()
        sender.wake()
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_a_429_on_views_publish_holds_back_every_home_and_no_channel(db: Database, fake_slack: FakeSlackWebApi) -> None:
    hold = 3
    fake_slack.rate_limit(hold, method="views.publish")
    limited_at = time.monotonic()
    with sending(db, fake_slack):
        opened(db, REQUESTER, APPROVER, OTHER)
        open_operation(db, channel="C0POSTS")
        wait_until(lambda: fake_slack.channel_messages("C0POSTS"), what="the confirmation, during the hold")
        posted_at = time.monotonic()
        wait_until(lambda: all(fake_slack.home(u) for u in (REQUESTER, APPROVER, OTHER)), timeout=20, what="Homes")

    publishes = fake_slack.calls_to("views.publish")
    refused = [c for c in publishes if c.status == 429]
    assert posted_at - limited_at < hold  # the channel did not wait for the Homes' method
    assert len(refused) == 1  # one refusal held back every Home, as Slack limits the method per workspace
    assert all(c.at >= limited_at + hold for c in publishes if c.status == 200)
    assert sorted(c.args["user_id"] for c in publishes if c.status == 200) == sorted([REQUESTER, APPROVER, OTHER])


def test_opening_a_home_published_a_moment_ago_publishes_nothing(db: Database) -> None:
    opened(db, REQUESTER)
    with db.session() as session:
        (row_id,) = session.scalars(select(OutboxMessage.id).where(OutboxMessage.pending_key.is_not(None))).all()
        session.execute(update(OutboxMessage).where(OutboxMessage.id == row_id).values(pending_key=None))
        homes.published(session, REQUESTER)  # what the courier notes with a views.publish Slack took

    opened(db, REQUESTER)  # flipping back to the tab: every change since was published by itself
    assert pending_rows(db) == []
    travel(db, homes.FRESH_SECONDS + 1)
    opened(db, REQUESTER)  # a minute later its "in 3 h" and "Updated" lines have aged: publish again
    assert [r[:3] for r in pending_rows(db)] == [("home", None, REQUESTER)]
