"""The operation services wired as app.py wires them, for tests that drive them without Slack in between."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.db.lease import Lease, Owner
from bot.db.session import Database
from bot.domain.actions import START, Action
from bot.domain.ports import VmApi
from bot.grants.authority import Authority
from bot.grants.cache import GrantCache
from bot.operations import runs
from bot.operations.click_model import ClickResult, ClickRow, Decision
from bot.operations.clicks import Clicks
from bot.operations.engine import Engine
from bot.operations.opening import Opening


@dataclass
class Services:
    """Opening and clicks over one database and Zenlayer client, as one replica has them."""

    db: Database
    opening: Opening
    clicks: Clicks

    def open(
        self,
        user: str,
        ids: Sequence[str],
        channel: str = "C0OPS",
        action: Action = START,
        *,
        run_seconds: float | None = None,
    ) -> int:
        """Check, look up and open an operation as `/vm start` does (`--for` as run_seconds); return its id."""
        prepared = self.opening.open(self.opening.look_up(user, channel, action, ids, run_seconds=run_seconds))
        assert prepared.request_id is not None
        return prepared.request_id

    def click(
        self,
        request_id: int,
        user: str,
        decision: Decision,
        *,
        message_ts: str | None = None,
        channel: str | None = "C0OPS",
    ) -> ClickResult:
        """Record a click and decide it, as the listener does after its ack."""
        click_id = self.clicks.record(ClickRow(request_id, user, decision, channel, message_ts))
        result = self.clicks.decide(click_id)
        assert result is not None
        return result


def services(db: Database, vm: VmApi, *, replica: str = "r1", cached: bool = False) -> Services:
    """Build the services one replica has (with the grant cache before acks when `cached`)."""
    authority = Authority(db, GrantCache(db) if cached else None, run_owner=runs.owner_of(db))
    opening = Opening(db, vm, authority, confirm_ttl_seconds=600, approval_ttl_seconds=3600)
    return Services(db, opening, Clicks(db, vm, authority, owner=Owner(replica), lease=Lease(15)))


def engine(
    db: Database,
    vm: VmApi,
    owner: str = "r1/a",
    *,
    lease_seconds: float = 150,
    watch_seconds: float = 600,
    **options: object,
) -> Engine:
    """An engine stepped by hand (its calls made inline unless `workers` is given)."""
    replica, nonce = owner.split("/")
    return Engine(
        db,
        vm,
        owner=Owner(replica, nonce),
        lease=Lease(lease_seconds),
        poll_interval_seconds=float(options.pop("poll_interval_seconds", 1)),  # type: ignore[arg-type]
        watch_seconds=watch_seconds,
        **options,  # type: ignore[arg-type]
    )
