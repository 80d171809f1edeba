"""The chaos check's invariants over starts: waiting until everything settled, then what must hold of every
request, click and StartInstances call (runs have theirs in `chaos_run_checks`)."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chaos_faults import patient
from chaos_traffic import ACTIVE, Tally
from sqlalchemy import select, text

from bot.db.models import Click, Operation, ZenlayerCall
from bot.db.session import Database
from bot.delivery import outbox
from bot.devtools.slack_web_api import FakeSlackWebApi

# A start's final reply: addressed to the requester, then one of these.
FINAL_REPLY = re.compile(
    r"^(<@\w+> )?(:white_check_mark: All|:x: Not every instance started|:alarm_clock: Stopped watching)"
)
# Its run's stop reports in the same thread; a stop that timed out says so with the words a start's would use.
STOP_WORDS = "not STOPPED yet"


def is_start_final(message_text: str) -> bool:
    """True for a start's final reply (not its run's stop's, in the same thread)."""
    return bool(FINAL_REPLY.match(message_text)) and STOP_WORDS not in message_text


def wait_settled(
    db: Database, *, also: Callable[[], bool] = lambda: True, stalled: float = 120.0, cap: float = 1200.0
) -> list[str]:
    """Wait until everything is settled (and `also` holds), as long as Slack's backlog still shrinks: every message
    goes through the one channel's gate (about one a second, as Slack paces it), so after Slack was away the
    replies owed queue up for minutes; delivered late is not lost. A backlog that stops shrinking for `stalled`
    seconds is."""
    started = last_progress = time.monotonic()
    smallest = None
    while time.monotonic() - started < cap:
        if patient(lambda: settled(db) and also()):
            return []
        with db.session(readonly=True) as session:
            backlog = patient(lambda: outbox.pending_count(session))
        if smallest is None or backlog < smallest:
            smallest, last_progress = backlog, time.monotonic()
        if time.monotonic() - last_progress > stalled:
            return [f"did not settle: {backlog} messages owed to Slack and none delivered for {stalled:g} s"]
        time.sleep(1.0)
    return [f"did not settle within {cap:g} s"]


def settled(db: Database) -> bool:
    """True when every click is decided, no request is active and every final outcome that is told was told."""
    with db.session(readonly=True) as session:
        if session.scalar(select(Click.id).where(Click.decided_at.is_(None)).limit(1)) is not None:
            return False
        active = session.scalar(select(Operation.id).where(Operation.state.in_(ACTIVE)).limit(1))
        # A call whose outcome the database never recorded is settled a lease after it, once its operation is over.
        if session.scalar(select(ZenlayerCall.id).where(ZenlayerCall.completed_at.is_(None)).limit(1)) is not None:
            return False
        untold = session.scalar(
            select(Operation.id)
            .where(
                Operation.state.in_(["done", "failed", "timed_out"]),
                Operation.outcome_posted_at.is_(None),
            )
            .limit(1)
        )
    return active is None and untold is None


def check(db: Database, fake: FakeSlackWebApi, calls: list[dict[str, Any]], tally: Tally) -> list[str]:
    """Return every broken invariant of starts and clicks, one line each."""
    starts = [c for c in calls if c["action"] == "StartInstances"]
    accepted = Counter(i for c in starts if c["httpStatus"] == 200 for i in c["instanceIds"])
    violations = [f"{instance}: {count} accepted StartInstances" for instance, count in accepted.items() if count > 1]
    with db.session(readonly=True) as session:
        requests = {r.id: r for r in session.scalars(select(Operation))}
        attempts = list(session.scalars(select(ZenlayerCall).where(ZenlayerCall.action == "StartInstances")))
        refused = {
            (rid, actor)
            for rid, actor in session.execute(
                text("SELECT request_id, actor FROM audit_events WHERE event = 'click_refused'")
            )
        }
    for request_id, user, action, key in tally.acked_clicks:
        request = requests.get(request_id)
        if any(_told_nothing_happened(str(body.get("text", ""))) for body in fake.responses(key)):
            tally.honest_failures += 1  # not recorded (the database was away) and the clicker was told so
            continue
        if request is not None and request.state == "pending" and (request_id, user) not in refused:
            violations.append(f"request {request_id}: {action} click by {user} acknowledged but not taken")
    violations += _finals(fake, [r for r in requests.values() if r.action == "start"], tally)
    violations += _attempts(starts, attempts)
    now = datetime.now(UTC)
    ownerless = [
        r.id for r in requests.values() if r.state in ACTIVE and (r.lease_until is None or r.lease_until < now)
    ]
    if ownerless:
        violations.append(f"active requests without an owner: {ownerless}")
    return violations


def _told_nothing_happened(reply: str) -> bool:
    """True for a private reply saying the click did nothing: it could not be recorded, or not against replays."""
    return "Nothing more will happen" in reply or "so nothing was done" in reply


def _finals(fake: FakeSlackWebApi, starts: list[Operation], tally: Tally) -> list[str]:
    """Every approved start that ended was told once, in its own thread."""
    violations: list[str] = []
    for request in starts:
        if request.decided_by is None or request.state in ("cancelled", "rejected", "withdrawn"):
            continue
        if request.state in ACTIVE:
            violations.append(f"request {request.id}: approved but still {request.state}")
            continue
        if request.state in ("done", "failed", "timed_out"):
            if request.outcome_posted_at is None:
                violations.append(f"request {request.id}: {request.state} but not told")
            thread = fake.thread(request.channel_id, request.message_ts or "")
            finals = [m for m in thread if is_start_final(m.text)]
            if len(finals) == 2 and _killed_between_posts(fake, request, tally.kill_times):
                # Posted, then the process died before recording it: its successor posted again (at least once).
                tally.repeated_after_kill += 1
            elif len(finals) != 1:
                violations.append(f"request {request.id}: {len(finals)} final replies in its thread")
    all_finals = sum(1 for m in fake.messages.values() if m.thread_ts and is_start_final(m.text))
    told = sum(1 for r in starts if r.state in ("done", "failed", "timed_out"))
    if all_finals != told + tally.repeated_after_kill:
        violations.append(f"{all_finals} final replies posted for {told} finished requests")
    return violations


def _attempts(starts: list[dict[str, Any]], attempts: list[ZenlayerCall]) -> list[str]:
    """Every StartInstances call has its completed attempt row (or an unknown outcome that explains it)."""
    violations: list[str] = []
    open_attempts = [a.id for a in attempts if a.completed_at is None]
    if open_attempts:
        violations.append(f"start attempts never completed: {open_attempts}")
    recorded = {a.zenlayer_request_id for a in attempts if a.zenlayer_request_id}
    unknown = sum(1 for a in attempts if a.outcome == "unknown")
    unrecorded = [c["requestId"] for c in starts if c["requestId"] not in recorded]
    if len(unrecorded) > unknown:
        violations.append(f"{len(unrecorded)} StartInstances calls without their audit row ({unknown} unknown)")
    if len(attempts) < len(starts):
        violations.append(f"{len(starts)} StartInstances calls but only {len(attempts)} attempt rows")
    return violations


def _killed_between_posts(fake: FakeSlackWebApi, request: Operation, kill_times: list[float]) -> bool:
    """True when a replica was killed between the first and the second final reply of a request."""
    posts = sorted(
        c.at
        for c in fake.calls_to("chat.postMessage")
        if c.args.get("thread_ts") == request.message_ts and is_start_final(str(c.args.get("text", "")))
    )
    return len(posts) == 2 and any(posts[0] <= t <= posts[1] for t in kill_times)


def start_counts(db: Database, tally: Tally, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The counts of the commands, clicks, requests, StartInstances calls and kills of one scenario."""
    with db.session(readonly=True) as session:
        states = Counter(session.scalars(select(Operation.state).where(Operation.action == "start")))
        attempts = Counter(
            a.outcome for a in session.scalars(select(ZenlayerCall).where(ZenlayerCall.action == "StartInstances"))
        )
    starts = [c for c in calls if c["action"] == "StartInstances"]
    accepted = Counter(i for c in starts if c["httpStatus"] == 200 for i in c["instanceIds"])
    return {
        "commands": tally.commands,
        "commands acknowledged": tally.commands_acked,
        "clicks": tally.clicks,
        "clicks acknowledged": len(tally.acked_clicks),
        "requests by state": dict(sorted(states.items())),
        "StartInstances calls": len(starts),
        "StartInstances answered 500 (outcome unknown)": sum(1 for c in starts if c["httpStatus"] == 500),
        "StartInstances by status": dict(Counter(str(c["httpStatus"]) for c in starts)),
        "start attempts by outcome": {str(k): v for k, v in attempts.items()},
        "max accepted starts per instance": max(accepted.values(), default=0),
        "kills": tally.kills,
        "takeovers by the restarted replica": len(tally.restarts_at_once),
        "longest takeover by the restarted replica (s)": round(max(tally.restarts_at_once, default=0.0), 2),
        "takeovers by another replica": len(tally.takeovers_by_others),
        "longest takeover by another replica (s)": round(max(tally.takeovers_by_others, default=0.0), 2),
        "final replies repeated because a kill fell between posting and recording": tally.repeated_after_kill,
        "clicks not recorded (database away), clicker told nothing happened": tally.honest_failures,
    }
