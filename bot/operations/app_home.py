"""What one person's App Home shows, from the database and their grants: their runs, the requests waiting for their
approval, their recent requests, and whether they may start anything at all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.db.session import Database
from bot.domain.ports import InstanceInfo
from bot.domain.vocabulary import GrantAction
from bot.grants.authority import Authority, Question
from bot.grants.rules import list_grants
from bot.operations import homes
from bot.operations.records import HomeRun, OperationRecord
from bot.operations.runs import RunBook

WAITING_SHOWN = 20  # requests waiting for approval the Home lists (the rest are counted)
RUNS_SHOWN = 50


@dataclass(frozen=True)
class HomeModel:
    """One person's Home as it stands now (`as_of`: the database's time)."""

    user_id: str
    runs: tuple[HomeRun, ...]
    runs_more: int  # runs not listed
    waiting: tuple[OperationRecord, ...]
    waiting_more: int  # requests waiting for them that are not listed
    recent: tuple[OperationRecord, ...]
    may_start: bool  # holds a start grant (the Start instances button)
    has_grants: bool
    notice: str | None
    as_of: datetime


class AppHome:
    """Builds Home models; everything on a Home is something its reader may see."""

    def __init__(self, db: Database, authority: Authority, run_book: RunBook, *, extend_seconds: float):
        self.db = db
        self.authority = authority
        self.run_book = run_book
        self.extend_seconds = extend_seconds  # whether a run's Extend fits its cap depends on it

    def model(self, user_id: str) -> HomeModel:
        """Read someone's Home from the database and their grants."""
        with self.db.session(readonly=True) as session:
            rows = homes.read(session, user_id)
            held = list_grants(session, user_id)
        waiting = self.waiting_for(user_id, rows.pending_approvals)
        runs = self.run_book.home_runs(user_id, self.extend_seconds)
        return HomeModel(
            user_id=user_id,
            runs=tuple(runs[:RUNS_SHOWN]),
            runs_more=max(0, len(runs) - RUNS_SHOWN),
            waiting=tuple(waiting[:WAITING_SHOWN]),
            waiting_more=max(0, len(waiting) - WAITING_SHOWN),
            recent=rows.recent,
            may_start=any(g.action == GrantAction.START for g in held),
            has_grants=bool(held),
            notice=rows.notice,
            as_of=rows.as_of,
        )

    def waiting_for(self, user_id: str, pending: tuple[OperationRecord, ...]) -> list[OperationRecord]:
        """Keep the requests this person may approve, by their grants as they are now.

        Id and name grants are matched against the request's instances as recorded when it was opened. Resource
        group and tag grants need attributes a request does not keep, so for them the list of approvers found when
        it was opened (from Zenlayer's answer then) counts, as long as the person still holds an approve grant usable
        in that channel. Either way the click decides again, from Zenlayer's answer at that moment.
        """
        questions = [
            Question(
                user_id,
                GrantAction.APPROVE,
                [i.instance_id for i in op.included],
                op.channel_id,
                {
                    i.instance_id: InstanceInfo(i.instance_id, i.name or "", i.last_status or "", i.zone)
                    for i in op.included
                },
            )
            for op in pending
        ]
        answers = self.authority.check_all(questions) if questions else []
        return [
            op
            for op, coverage in zip(pending, answers, strict=True)
            if coverage.ok or (user_id in op.approvers and coverage.usable_here)
        ]
