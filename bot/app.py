"""Wiring only: build the Slack app, the services behind it, the engine and the sender from settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot.config import Settings
from bot.db.lease import Lease, Owner
from bot.db.migrate import head_revision
from bot.db.seen_requests import SeenRequests
from bot.db.session import Database
from bot.delivery.sender import Sender
from bot.domain.ports import VmApi
from bot.grants.admin import GrantService
from bot.grants.authority import Authority
from bot.grants.cache import GrantCache
from bot.health import Health, database_gauges
from bot.metrics import Metrics
from bot.operations import retention
from bot.operations.app_home import AppHome
from bot.operations.clicks import Clicks
from bot.operations.engine import Engine
from bot.operations.inventory import Inventory
from bot.operations.mirror import InstanceMirror
from bot.operations.opening import Opening
from bot.operations.runs import RunBook, owner_of
from bot.operations.starting import Starting
from bot.operations.suggestions import Suggestions
from bot.runtime.ack_first import AckFirst
from bot.runtime.workers import WorkerPool
from bot.slack import listeners
from bot.slack.courier import SlackCourier
from bot.slack.links import Links
from bot.slack.listeners.context import Context
from bot.slack.listeners.rate_limit import CommandLimiter
from bot.slack.metered_client import MeteredWebClient
from bot.slack.surface_runs import SlackRuns
from bot.slack.surfaces import Surfaces
from bot.slack.surfaces_courier import RoutingCourier, SurfacesCourier
from bot.slack.workspace import Workspace
from bot.zenlayer.client import ZenlayerClient
from bot.zenlayer.metered import MeteredTransport

log = logging.getLogger(__name__)

# Only lazy listeners run on bolt's listener_executor (vm-bot has none): with process_before_response=True every
# listener runs in the request's own thread and hands its work to the pools below. Kept small for that reason.
LISTENER_THREADS = 4
LOOKUP_THREADS = 16
DECISION_THREADS = 8
# The App Home, modals and Workflow Builder steps: opening a modal within its trigger's 3 s never queues behind lookups.
SURFACE_THREADS = 8
# Calls and reconciliation of different operations run side by side on this many threads.
ENGINE_THREADS = 8
# PRUNE_OLDER_THAN deletes at most this many batches of each table an hour: a first run on years of rows catches up
# over a few hours instead of holding the sender up.
AUTO_PRUNE_BATCHES = 20
# How long a Slack Web API call may take before the client gives up (its outcome then unknown).
SLACK_TIMEOUT_SECONDS = 10


@dataclass
class BotApp:
    """Everything `vm-bot run` needs, built and connected but not yet running."""

    settings: Settings
    app: App
    db: Database
    vm: VmApi
    client: WebClient
    engine: Engine
    sender: Sender
    executors: tuple[Executor, ...]
    metrics: Metrics = field(default_factory=Metrics)
    health: Health | None = None
    ack_first: AckFirst = field(default_factory=AckFirst)  # background writes wait while Slack is being answered

    def close(self) -> None:
        """Finish queued work and release connections."""
        for executor in self.executors:
            executor.shutdown(wait=True)
        close = getattr(self.vm, "close", None)
        if close is not None:
            close()
        self.db.close()


def make_web_client(
    settings: Settings,
    metrics: Metrics | None = None,
    *,
    wait_on_429: bool = True,
    timeout: int = SLACK_TIMEOUT_SECONDS,
) -> WebClient:
    """Return a Web API client that retries connection errors and (with wait_on_429) Slack's 429 after its
    Retry-After, sleeping in the calling thread; without it a 429 raises for the caller to hold back."""
    assert settings.slack_bot_token is not None
    return MeteredWebClient(
        metrics=metrics or Metrics(),
        token=settings.slack_bot_token.reveal(),
        base_url=settings.slack_api_url,
        timeout=timeout,
        retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=2)]
        + ([RateLimitErrorRetryHandler(max_retry_count=3)] if wait_on_429 else []),
    )


def build_surfaces(
    db: Database, vm: VmApi, authority: Authority, starting: Starting, client: WebClient, home: AppHome
) -> Surfaces:
    """The services behind the App Home, the start modal and the Workflow Builder step (`client` raises on 429).

    Time-boxed runs reach them through `starting.runs`."""
    pool = WorkerPool(SURFACE_THREADS, thread_name_prefix="vm-bot-surface")
    return Surfaces(
        db=db,
        home=home,
        suggestions=Suggestions(vm, authority, InstanceMirror(vm, pool)),
        starting=starting,
        runs=starting.runs,
        workspace=Workspace(client),
        client=client,
        pool=pool,
    )


def _housekeeping(settings: Settings, db: Database) -> list[Callable[[], object]]:
    """Return the sender's hourly chores: PRUNE_OLDER_THAN's prune, a few batches an hour, when it is set."""
    older_than = settings.prune_older_than
    if older_than is None:
        return []

    def prune() -> None:
        pruned = retention.prune(db, older_than, max_batches=AUTO_PRUNE_BATCHES)
        if pruned.total:
            log.info("pruned rows older than PRUNE_OLDER_THAN: %s", pruned.counts())

    return [prune]


# Long on purpose: the wiring, every part built once in the order the parts need each other.
def create_app(
    settings: Settings,
    *,
    vm: VmApi | None = None,
    db: Database | None = None,
    slack_timeout: int = SLACK_TIMEOUT_SECONDS,
) -> BotApp:
    """Build the bolt app and the services behind it; nothing starts running here (`slack_timeout`: seconds a
    call to Slack may take before its outcome counts as unknown; tests shorten it)."""
    metrics = Metrics()
    # Acknowledgements first: work after an ack, the engine's included, waits to write while other acks are answered.
    ack_first = AckFirst()
    if db is None:
        db = Database(settings.database_url, before_write=ack_first.wait_turn)
    vm = vm or ZenlayerClient.from_settings(settings, transport=MeteredTransport(httpx.HTTPTransport(), metrics))
    # A stable identity plus a nonce: a restarted replica tells its predecessor's leases (and clicks) from its own.
    owner = Owner(settings.replica_id)
    lease = Lease(settings.lease_seconds)
    # The check before an ack says "allowed" from memory; refusals and everything that acts read the database.
    authority = Authority(db, GrantCache(db), run_owner=owner_of(db))
    opening = Opening(
        db,
        vm,
        authority,
        confirm_ttl_seconds=settings.confirm_ttl_seconds,
        approval_ttl_seconds=settings.approval_ttl_seconds,
    )
    clicks = Clicks(db, vm, authority, owner=owner, lease=lease, extend_seconds=settings.run_extend_seconds)
    # Signed requests accepted already, shared by every replica: a replay is answered and has no effect.
    seen = SeenRequests(db) if not settings.socket_mode else None
    engine = Engine(
        db,
        vm,
        owner=owner,
        lease=lease,
        poll_interval_seconds=settings.poll_interval_seconds,
        watch_seconds=settings.start_timeout_seconds,
        reminder_seconds=settings.run_reminder_seconds,
        workers=ENGINE_THREADS,
        chores=[clicks.decide_orphans, *([seen.prune] if seen else [])],
    )
    approver = f"<!subteam^{settings.approver_group_id}>" if settings.approver_group_id else None
    run_book = RunBook(db)
    runs = SlackRuns(run_book, authority, clicks, extend_seconds=settings.run_extend_seconds, wake=engine.wake)
    surfaces = build_surfaces(
        db,
        vm,
        authority,
        Starting(opening, runs),
        make_web_client(settings, metrics, wait_on_429=False, timeout=slack_timeout),
        AppHome(db, authority, run_book, extend_seconds=settings.run_extend_seconds),
    )
    # Every message to a channel — the confirmation included — is paced by the channel's gate; a 429 holds back
    # its channel instead of sleeping. App Homes and step completions go through their Web API method's gate.
    courier = RoutingCourier(
        SlackCourier(
            db,
            make_web_client(settings, metrics, wait_on_429=False, timeout=slack_timeout),
            owner=owner,
            lease=lease,
            approver_group=approver,
            broadcast_success=settings.broadcast_success,
            metrics=metrics,
            extend_seconds=settings.run_extend_seconds,
        ),
        SurfacesCourier(
            db,
            surfaces.client,
            owner=owner,
            lease=lease,
            home=surfaces.home,
            workspace=surfaces.workspace,
            metrics=metrics,
        ),
    )
    sender = Sender(db, courier, owner=owner, lease=lease, housekeeping=_housekeeping(settings, db))
    health = Health(db, head_revision(), settings.poll_interval_seconds)

    def ticked(seconds: float) -> None:
        metrics.ticked(seconds)
        health.ticked(seconds)

    engine.on_tick = ticked
    engine.on_takeover = metrics.took_over
    engine.on_clock_offset = metrics.clock_offset.set
    metrics.watch_database(lambda: database_gauges(db))
    # Acks hand work over to these: a submit() that never queues behind a lock (see WorkerPool).
    lookups = WorkerPool(LOOKUP_THREADS, thread_name_prefix="vm-bot-lookup")
    # Clicks only touch the database; their own pool keeps them quick while Zenlayer is slow to answer lookups.
    decisions = WorkerPool(DECISION_THREADS, thread_name_prefix="vm-bot-decide")
    client = make_web_client(settings, metrics)
    app = App(
        client=client,
        signing_secret=settings.slack_signing_secret.reveal() if settings.slack_signing_secret else "",
        request_verification_enabled=not settings.socket_mode,
        # Run the listener in the request's own thread and answer as soon as it returns: our listeners only ack
        # and hand the rest to our executors, and bolt's default instead polls for the ack in steps of ~10 ms.
        process_before_response=True,
        listener_executor=ThreadPoolExecutor(max_workers=LISTENER_THREADS, thread_name_prefix="bolt-listener"),
    )
    context = Context(
        opening=opening,
        clicks=clicks,
        authority=authority,
        grants=GrantService(db, on_change=authority.cache.invalidate if authority.cache else lambda: None),
        inventory=Inventory(db, vm),
        run_book=run_book,
        links=Links(make_web_client(settings, metrics, wait_on_429=False, timeout=slack_timeout)),
        limiter=CommandLimiter(db, settings.commands_per_minute),
        lookups=lookups,
        decisions=decisions,
        wake_engine=engine.wake,
        seen=seen,
        extend_seconds=settings.run_extend_seconds,
        metrics=metrics,
        ack_first=ack_first,
        surfaces=surfaces,
    )
    listeners.register(app, context)
    executors = (lookups, decisions, surfaces.pool)
    return BotApp(settings, app, db, vm, client, engine, sender, executors, metrics, health, ack_first)
