"""Wiring only: build the Slack app, the domain services and the watcher from settings."""

from __future__ import annotations

import uuid
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot.config import Settings
from bot.db.migrate import head_revision
from bot.db.seen_requests import SeenRequests
from bot.db.session import Database
from bot.domain.grant_admin import GrantService
from bot.domain.grant_cache import GrantCache
from bot.domain.inventory import Inventory
from bot.domain.ports import VmApi
from bot.domain.starts import StartService
from bot.domain.watcher import Watcher
from bot.health import Health, database_gauges
from bot.metrics import Metrics
from bot.slack.ack_first import AckFirst
from bot.slack.listeners import Listeners
from bot.slack.messages import SlackMessages
from bot.slack.metered_client import MeteredWebClient
from bot.slack.sender import Sender
from bot.workers import WorkerPool
from bot.zenlayer.client import ZenlayerClient
from bot.zenlayer.metered import MeteredTransport

# bolt runs every ack on one pool; ours only parses and submits, so a modest pool is plenty.
LISTENER_THREADS = 32
LOOKUP_THREADS = 16
DECISION_THREADS = 8
# Starts and reconciliation of different requests run side by side on this many threads.
WATCHER_THREADS = 8
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
    starts: StartService
    watcher: Watcher
    sender: Sender
    executors: tuple[Executor, ...]
    seen_requests: SeenRequests  # signed requests accepted already: HTTP mode's replay check
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


def create_app(
    settings: Settings,
    *,
    vm: VmApi | None = None,
    db: Database | None = None,
    slack_timeout: int = SLACK_TIMEOUT_SECONDS,
) -> BotApp:
    """Build the bolt app and the services behind it; nothing starts running here (`slack_timeout`: seconds a
    Slack call from the listeners may take; tests shorten it)."""
    metrics = Metrics()
    # Acknowledgements first: work after an ack, the watcher included, waits to write while other acks are answered.
    ack_first = AckFirst()
    if db is None:
        db = Database(settings.database_url, before_write=ack_first.wait_turn)
    vm = vm or ZenlayerClient.from_settings(settings, transport=MeteredTransport(httpx.HTTPTransport(), metrics))
    client = make_web_client(settings, metrics)
    approver = f"<!subteam^{settings.approver_group_id}>" if settings.approver_group_id else None
    # Commands and clicks run on pools every channel shares: a 429 holds back its channel (the user is told when to
    # try again) instead of sleeping out its Retry-After there.
    messages = SlackMessages(
        make_web_client(settings, metrics, wait_on_429=False, timeout=slack_timeout),
        approver_group=approver,
        hold_on_429=True,
    )
    # The check before an ack says "allowed" from memory; refusals and everything that acts read the database.
    grant_cache = GrantCache(db)
    starts = StartService(
        db,
        vm,
        confirm_ttl_seconds=settings.confirm_ttl_seconds,
        approval_ttl_seconds=settings.approval_ttl_seconds,
        grant_cache=grant_cache,
    )
    # A stable identity plus a nonce: a restarted replica tells its predecessor's leases (and clicks) from its own.
    owner = f"{settings.replica_id}/{uuid.uuid4().hex[:12]}"
    seen_requests = SeenRequests(db)
    watcher = Watcher(
        db,
        vm,
        poll_interval_seconds=settings.poll_interval_seconds,
        start_timeout_seconds=settings.start_timeout_seconds,
        owner=owner,
        replica=settings.replica_id,
        chores=[lambda: starts.decide_orphaned_clicks(replica=settings.replica_id, owner=owner), seen_requests.prune],
        lease_seconds=settings.lease_seconds,
        workers=WATCHER_THREADS,
    )
    # Thread replies and confirmation edits: paced per channel; a 429 holds back its channel instead of sleeping.
    sender = Sender(
        db,
        make_web_client(settings, metrics, wait_on_429=False),
        owner=owner,
        replica=settings.replica_id,
        approver_group=approver,
        broadcast_success=settings.broadcast_success,
        metrics=metrics,
    )
    health = Health(db, head_revision(), settings.poll_interval_seconds)

    def ticked(seconds: float) -> None:
        metrics.ticked(seconds)
        health.ticked(seconds)

    watcher.on_tick = ticked
    watcher.on_takeover = metrics.took_over
    metrics.watch_database(lambda: database_gauges(db))
    # Acks hand work over to these: a submit() that never queues behind a lock (see WorkerPool).
    lookups = WorkerPool(LOOKUP_THREADS, thread_name_prefix="vm-bot-lookup")
    # Clicks only touch the database; their own pool keeps them quick while Zenlayer is slow to answer lookups.
    decisions = WorkerPool(DECISION_THREADS, thread_name_prefix="vm-bot-decide")
    app = App(
        client=client,
        signing_secret=settings.slack_signing_secret.reveal() if settings.slack_signing_secret else "",
        request_verification_enabled=not settings.socket_mode,
        # Run the listener in the request's own thread and answer as soon as it returns: our listeners only ack
        # and hand the rest to our executors, and bolt's default instead polls for the ack in steps of ~10 ms.
        process_before_response=True,
        listener_executor=ThreadPoolExecutor(max_workers=LISTENER_THREADS, thread_name_prefix="bolt-listener"),
    )
    Listeners(
        starts=starts,
        grants=GrantService(db, on_change=grant_cache.invalidate),
        inventory=Inventory(db, vm),
        vm=vm,
        messages=messages,
        lookups=lookups,
        decisions=decisions,
        wake_watcher=watcher.wake,
        metrics=metrics,
        commands_per_minute=settings.commands_per_minute,
        owner=owner,
        ack_first=ack_first,
    ).register(app)
    return BotApp(
        settings,
        app,
        db,
        vm,
        client,
        starts,
        watcher,
        sender,
        (lookups, decisions),
        seen_requests,
        metrics,
        health,
        ack_first,
    )
