"""The delivery outbox and its sender: paced per channel, coalesced, isolated from other channels' 429s, durable
across crashes and shared by replicas (the Slack stand-in over loopback, databases built by the migrations)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import insert, select, update

from bot.db.lease import Lease, Owner
from bot.db.models import Operation, OperationInstance, OutboxMessage, SlackChannel
from bot.db.session import Database
from bot.delivery import outbox
from bot.delivery.sender import Sender
from bot.devtools.slack_calls import Call
from bot.devtools.slack_driver import Confirmation, SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.domain.actions import START
from bot.operations import repository
from bot.operations.creation import NewInstance, create
from bot.operations.states import State
from bot.slack import action_ids
from bot.slack.courier import SlackCourier
from tests.db_support import travel
from tests.slack_support import BOT_TOKEN, wait_until
from tests.zenlayer_support import stopped_simulator

REQUESTER = "U0REQUEST"
FINAL = "instance RUNNING"


def sent_to(fake: FakeSlackWebApi, channel: str, since: float = 0.0) -> list[Call]:
    """Return the messages Slack accepted in a channel (posts and edits), oldest first."""
    with fake._lock:
        return [
            c
            for c in fake.calls
            if c.method in ("chat.postMessage", "chat.update")
            and c.args.get("channel") == channel
            and c.at > since
            and c.status == 200
            and c.response.get("ok")
        ]


# What these tests hold the sender to, whatever its constants say: Slack's ~1 message per second per channel with a
# short burst of 3. The sender claims a channel's slots at most 3 at once, then one a second (GCRA, at claim time);
# seen at Slack, a send's own latency can move one more into the same second as the burst.
SLACK_PACE_SECONDS = 1.0
MOST_IN_ONE_SECOND = 3 + 1


def busiest_second(calls: Sequence[Call]) -> int:
    """Return the most calls in any one-second window."""
    times = sorted(c.at for c in calls)
    return max((sum(1 for u in times if t <= u < t + 1.0) for t in times), default=0)


def pending(db: Database) -> int:
    """Count the messages still owed to Slack."""
    with db.session(readonly=True) as session:
        return outbox.pending_count(session)


@contextmanager
def sending(
    db: Database,
    fake: FakeSlackWebApi,
    owner: str = "r1/a",
    *,
    lease_seconds: float = 15,
    client: WebClient | None = None,
) -> Iterator[Sender]:
    """Run a sender (with a client that raises on 429, as in production) in a thread until the block ends."""
    client = client or WebClient(token=BOT_TOKEN, base_url=fake.url, timeout=10)
    me, lease = Owner(*owner.split("/")), Lease(lease_seconds)
    sender = Sender(db, SlackCourier(db, client, owner=me, lease=lease), owner=me, lease=lease)
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


def new_request(db: Database, fake: FakeSlackWebApi, channel: str, name: str = "web-1") -> int:
    """Record a pending request whose confirmation is posted in channel; return its id."""
    posted = WebClient(token=BOT_TOKEN, base_url=fake.url).chat_postMessage(channel=channel, text="confirmation")
    with db.session() as session:
        request_id = create(
            session,
            action=START,
            requester_id=REQUESTER,
            channel_id=channel,
            instances=[NewInstance(name, name=name, status="STOPPED")],
            needs_approval=False,
            ttl_seconds=600,
        )
        assert repository.attach_message(session, request_id, str(posted["ts"]))
        return request_id


def finish(db: Database, request_id: int, to: State = State.DONE) -> None:
    """End a request as the engine would (every instance RUNNING), which owes its final reply and an edit."""
    with db.session() as session:
        session.execute(
            update(OperationInstance)
            .where(OperationInstance.request_id == request_id)
            .values(last_status="RUNNING", outcome="reached")
        )
        assert repository.transition(session, request_id, from_states=[State.PENDING], to=to)


def finals_in(fake: FakeSlackWebApi, channel: str, thread_ts: str) -> list[str]:
    """Return the final replies in a thread."""
    return [m.text for m in fake.thread(channel, thread_ts) if FINAL in m.text]


def thread_of(db: Database, request_id: int) -> str:
    with db.session(readonly=True) as session:
        ts = session.scalar(select(Operation.message_ts).where(Operation.id == request_id))
        assert ts is not None
        return ts


def told(db: Database, request_id: int) -> datetime | None:
    with db.session(readonly=True) as session:
        return session.scalar(select(Operation.outcome_posted_at).where(Operation.id == request_id))


# --- end to end: a burst in one channel, and a 429 in another ----------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[ZenlayerSimulator]:
    """The simulator with ten stopped instances for a burst and a few for two other channels."""
    with stopped_simulator(13) as sim:
        yield sim


def ask(slack: SlackDriver, channel: str, ids: Sequence[str]) -> list[Confirmation]:
    """Ask for one start per id in a channel; return the confirmations in order."""
    confirmations = []
    for index, instance_id in enumerate(ids):
        slack.command(f"start {instance_id}", channel=channel)
        confirmations.append(slack.wait_confirmation(channel, index=index))
    return confirmations


def test_ten_starts_at_once_in_one_channel_are_paced_and_every_outcome_is_told_once(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    grant(REQUESTER, "web-*")
    confirmations = ask(slack, "C0BURST", [f"web-{i}" for i in range(1, 11)])
    started = fake_slack.calls[-1].at

    for confirmation in confirmations:
        slack.click(confirmation, action_ids.START)
    for confirmation in confirmations:
        slack.wait_thread(confirmation, FINAL, timeout=90)

    calls = sent_to(fake_slack, "C0BURST", since=started)
    span = calls[-1].at - calls[0].at
    # Slack allows about one message a second per channel with short bursts: a burst, then the pace.
    assert busiest_second(calls) <= MOST_IN_ONE_SECOND, [round(c.at - started, 2) for c in calls]
    assert len(calls) <= span / SLACK_PACE_SECONDS + MOST_IN_ONE_SECOND  # the long-run rate: the pace
    for confirmation in confirmations:  # nothing dropped, nothing repeated
        assert len(finals_in(fake_slack, confirmation.channel, confirmation.ts)) == 1
        assert "Confirmed by" in str(slack.message(confirmation).blocks)


def test_a_429_in_one_channel_holds_back_that_channel_only_and_its_replies_follow_after_it(
    slack: SlackDriver, grant: Callable[..., None], fake_slack: FakeSlackWebApi
) -> None:
    grant(REQUESTER, "web-*")
    held = ask(slack, "C0HELDA", ["web-1", "web-2"])
    (quiet,) = ask(slack, "C0QUIETB", ["web-3"])
    hold_seconds = 6
    fake_slack.rate_limit(hold_seconds, channel="C0HELDA")
    limited_at = fake_slack.calls[-1].at

    for confirmation in held:
        slack.click(confirmation, action_ids.START)
    slack.click(quiet, action_ids.START)

    slack.wait_thread(quiet, FINAL, timeout=hold_seconds - 1)  # as if A were quiet: before A's hold lapses
    for confirmation in held:
        slack.wait_thread(confirmation, FINAL, timeout=30)
        assert len(finals_in(fake_slack, confirmation.channel, confirmation.ts)) == 1
    tried = [c for c in fake_slack.calls if c.args.get("channel") == "C0HELDA" and c.at > limited_at]
    refused = [c for c in tried if c.status == 429]
    assert len(refused) == 1, [(c.method, c.status, round(c.at - limited_at, 1)) for c in tried]  # asked once
    assert all(c.at >= limited_at + hold_seconds for c in tried if c.status == 200)


# --- the sender against the stand-in, on SQLite and PostgreSQL ---------------------------------------------------


def test_edits_made_while_a_channel_is_held_are_sent_once_in_their_latest_version(
    db: Database, fake_slack: FakeSlackWebApi
) -> None:
    request_id = new_request(db, fake_slack, "C0EDITS")
    fake_slack.rate_limit(2, channel="C0EDITS")
    with sending(db, fake_slack):
        for step in range(1, 6):
            with db.session() as session:
                session.execute(
                    update(OperationInstance)
                    .where(OperationInstance.request_id == request_id)
                    .values(last_status=f"STEP{step}")
                )
                outbox.enqueue(session, request_id, outbox.Kind.REFRESH)
            wait_until(fake_slack.rejections, what="the first edit refused with 429")
        wait_until(lambda: pending(db) == 0, timeout=15, what="the edits delivered")

    edits = [c for c in sent_to(fake_slack, "C0EDITS") if c.method == "chat.update"]
    assert len(edits) == 1, [c.args.get("blocks") for c in edits]
    assert "STEP5" in str(edits[0].args["blocks"])
    assert len(fake_slack.rejections()) == 1


def test_a_slow_channel_delays_only_itself(db: Database, fake_slack: FakeSlackWebApi) -> None:
    slow, fast = new_request(db, fake_slack, "C0SLOW"), new_request(db, fake_slack, "C0FAST")
    release = threading.Event()

    class SlowChannel(WebClient):
        def api_call(self, api_method: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if (kwargs.get("json") or {}).get("channel") == "C0SLOW":
                assert release.wait(30)
            return super().api_call(api_method, *args, **kwargs)

    with sending(db, fake_slack, client=SlowChannel(token=BOT_TOKEN, base_url=fake_slack.url)):
        finish(db, slow)
        finish(db, fast)
        try:
            wait_until(lambda: finals_in(fake_slack, "C0FAST", thread_of(db, fast)), what="the fast channel's reply")
            assert not finals_in(fake_slack, "C0SLOW", thread_of(db, slow))
        finally:
            release.set()
        wait_until(lambda: finals_in(fake_slack, "C0SLOW", thread_of(db, slow)), what="the slow channel's reply")


def test_a_permanently_refused_reply_is_recorded_not_retried_and_the_requester_is_told(
    db: Database, fake_slack: FakeSlackWebApi
) -> None:
    request_id = new_request(db, fake_slack, "C0REFUSE")
    fake_slack.fail_next("chat.postMessage", times=100, error="msg_too_long", channel="C0REFUSE")
    with sending(db, fake_slack):
        finish(db, request_id)
        wait_until(lambda: told(db, request_id), what="the outcome recorded as told")
        wait_until(lambda: pending(db) == 0, what="nothing left to send")

    posts = [c for c in fake_slack.calls_to("chat.postMessage") if c.args.get("thread_ts")]
    assert len(posts) == 1  # tried once, never again
    with db.session(readonly=True) as session:
        row = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "final")).one()
        assert (row.error, row.sent_at, row.pending_key) == ("msg_too_long", None, None)
    private = fake_slack.calls_to("chat.postEphemeral")
    assert [c.args.get("user") for c in private] == [REQUESTER]
    assert "msg_too_long" in private[0].args["text"] and "could not post the outcome" in private[0].args["text"]


def test_messages_a_killed_process_left_are_sent_by_the_next_one(db: Database, fake_slack: FakeSlackWebApi) -> None:
    queued, in_flight, elsewhere = (new_request(db, fake_slack, f"C0CRASH{i}") for i in range(3))
    for request_id in (queued, in_flight, elsewhere):
        finish(db, request_id)  # the outcome and its intent commit together; then the process dies
    lease = 15.0
    later = time.time() + lease / 2  # the database's clock is this host's (SQLite) or a local server's
    with db.session() as session:  # two sends were under way: one by this replica's last process, one by r2's
        for request_id, owner in ((in_flight, "r1/dead"), (elsewhere, "r2/dead")):
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.request_id == request_id)
                .values(claimed_by=owner, claim_until=datetime.fromtimestamp(later).astimezone())
            )
            channel = f"C0CRASH{(in_flight, elsewhere).index(request_id) + 1}"
            session.add(SlackChannel(channel_id=channel, tat=0.0, claimed_by=owner, claim_until=later))

    with sending(db, fake_slack, owner="r1/new", lease_seconds=lease):
        for request_id in (queued, in_flight):  # r1's own are resumed at once
            wait_until(lambda r=request_id: told(db, r), what="the outcome told by the next process")
        assert told(db, elsewhere) is None  # r2's is left until its claim lapses

    travel(db, lease)  # r2's claim has lapsed
    with sending(db, fake_slack, owner="r3/x", lease_seconds=lease):
        wait_until(lambda: told(db, elsewhere), what="a lapsed claim taken over by another replica")
    for request_id, channel in zip((queued, in_flight, elsewhere), ("C0CRASH0", "C0CRASH1", "C0CRASH2"), strict=True):
        assert len(finals_in(fake_slack, channel, thread_of(db, request_id))) == 1


def test_two_senders_on_one_database_share_the_pace_and_never_send_a_row_twice(
    db: Database, fake_slack: FakeSlackWebApi
) -> None:
    requests = [new_request(db, fake_slack, "C0SHARED", name=f"web-{i}") for i in range(4)]
    started = fake_slack.calls[-1].at
    with sending(db, fake_slack, owner="r1/a"), sending(db, fake_slack, owner="r2/b"):
        for request_id in requests:
            finish(db, request_id)
        wait_until(lambda: pending(db) == 0, timeout=30, what="every message delivered")

    for request_id in requests:
        assert len(finals_in(fake_slack, "C0SHARED", thread_of(db, request_id))) == 1
    calls = sent_to(fake_slack, "C0SHARED", since=started)
    assert len(calls) == 2 * len(requests)  # a final reply and an edit each, none repeated
    assert busiest_second(calls) <= MOST_IN_ONE_SECOND, [round(c.at - started, 2) for c in calls]


def test_old_delivered_rows_are_pruned_and_pending_ones_kept_whatever_their_age(
    db: Database, fake_slack: FakeSlackWebApi
) -> None:
    done, waiting = new_request(db, fake_slack, "C0OLD1"), new_request(db, fake_slack, "C0OLD2")
    finish(db, done)
    finish(db, waiting)
    with db.session() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.request_id == done).values(pending_key=None))
    travel(db, 30 * 24 * 3600)
    with db.session() as session:
        assert outbox.prune(session, older_than_seconds=7 * 24 * 3600) == 2
    with db.session(readonly=True) as session:
        left = session.scalars(select(OutboxMessage.request_id)).all()
    assert left == [waiting, waiting]


def test_a_backlog_in_one_held_channel_does_not_hide_another_channels_messages(
    db: Database, fake_slack: FakeSlackWebApi
) -> None:
    held = new_request(db, fake_slack, "C0BACKLOG")
    quiet = new_request(db, fake_slack, "C0QUIET")
    now = datetime.now().astimezone()
    with db.session() as session:  # 1,000 older rows owed to a channel a 429 holds back: none can go now
        session.execute(
            insert(OutboxMessage),
            [
                {
                    "request_id": held,
                    "channel_id": "C0BACKLOG",
                    "kind": "progress",
                    "pending_key": f"bulk:{i}",
                    "created_at": now,
                    "due_at": now,
                }
                for i in range(1000)
            ],
        )
        session.add(SlackChannel(channel_id="C0BACKLOG", tat=now.timestamp() + 600.0))
    finish(db, quiet)  # the quiet channel's final reply, owed after the backlog
    with db.session(readonly=True) as session:
        found = outbox.ready(session)
    assert found.channels == ["C0QUIET"]


def test_an_unexpected_failure_is_given_up_after_the_last_try_and_the_requester_told(
    db: Database, fake_slack: FakeSlackWebApi
) -> None:
    request_id = new_request(db, fake_slack, "C0BROKEN")
    finish(db, request_id)

    class Broken(WebClient):
        def api_call(self, api_method: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if api_method == "chat.postMessage" and (kwargs.get("json") or {}).get("thread_ts"):
                raise ValueError("stands for any bug between the claim and the send")
            return super().api_call(api_method, *args, **kwargs)

    with db.session() as session:  # the row has already failed all but its last try
        session.execute(
            update(OutboxMessage).where(OutboxMessage.kind == "final").values(attempts=outbox.MAX_ATTEMPTS - 1)
        )
    with sending(db, fake_slack, client=Broken(token=BOT_TOKEN, base_url=fake_slack.url)):
        wait_until(lambda: told(db, request_id), what="the outcome recorded as told, with why")
    with db.session(readonly=True) as session:
        row = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "final")).one()
        assert row.pending_key is None and row.error is not None
    assert [c.args.get("user") for c in fake_slack.calls_to("chat.postEphemeral")] == [REQUESTER]


def test_a_send_slower_than_its_claim_is_not_taken_over_and_sent_again_meanwhile(
    db: Database, fake_slack: FakeSlackWebApi
) -> None:
    request_id = new_request(db, fake_slack, "C0SLOWACK")
    thread = thread_of(db, request_id)
    fake_slack.delay_next("chat.postMessage", 4, channel="C0SLOWACK")  # carried out at once, answered late
    # A short lease, so a slow send outlives it in a test: the heartbeat must keep it.
    with (
        sending(db, fake_slack, owner="r1/a", lease_seconds=1.5),
        sending(db, fake_slack, owner="r2/b", lease_seconds=1.5),
    ):
        finish(db, request_id)
        wait_until(lambda: told(db, request_id), timeout=15, what="the outcome told")
    assert len(finals_in(fake_slack, "C0SLOWACK", thread)) == 1
