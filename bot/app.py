"""Wiring only: build the Slack app, the domain services and the watcher from settings."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot.config import Settings
from bot.db.session import Database
from bot.domain.grant_admin import GrantService
from bot.domain.inventory import Inventory
from bot.domain.ports import VmApi
from bot.domain.starts import StartService
from bot.domain.watcher import Watcher
from bot.slack.listeners import Listeners
from bot.slack.messages import SlackMessages
from bot.zenlayer.client import ZenlayerClient

# bolt runs every ack on one pool; ours only parses and submits, so a modest pool is plenty.
LISTENER_THREADS = 32
LOOKUP_THREADS = 16
DECISION_THREADS = 8
# Starts, reconciliation and posts of different requests run side by side on this many threads.
WATCHER_THREADS = 8


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
    executors: tuple[ThreadPoolExecutor, ...]

    def close(self) -> None:
        """Finish queued work and release connections."""
        for executor in self.executors:
            executor.shutdown(wait=True)
        close = getattr(self.vm, "close", None)
        if close is not None:
            close()
        self.db.close()


def make_web_client(settings: Settings) -> WebClient:
    """Return a Web API client that retries Slack's 429 (honouring Retry-After) and connection errors."""
    assert settings.slack_bot_token is not None
    return WebClient(
        token=settings.slack_bot_token.reveal(),
        base_url=settings.slack_api_url,
        timeout=10,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )


def create_app(settings: Settings, *, vm: VmApi | None = None, db: Database | None = None) -> BotApp:
    """Build the bolt app and the services behind it; nothing starts running here."""
    db = db or Database(settings.database_url)
    vm = vm or ZenlayerClient.from_settings(settings)
    client = make_web_client(settings)
    approver = f"<!subteam^{settings.approver_group_id}>" if settings.approver_group_id else None
    messages = SlackMessages(client, approver_group=approver, broadcast_success=settings.broadcast_success)
    starts = StartService(
        db,
        vm,
        confirm_ttl_seconds=settings.confirm_ttl_seconds,
        approval_ttl_seconds=settings.approval_ttl_seconds,
    )
    # A stable identity plus a nonce: a restarted replica tells its predecessor's leases (and clicks) from its own.
    owner = f"{settings.replica_id}/{uuid.uuid4().hex[:12]}"
    watcher = Watcher(
        db,
        vm,
        messages,
        poll_interval_seconds=settings.poll_interval_seconds,
        start_timeout_seconds=settings.start_timeout_seconds,
        owner=owner,
        replica=settings.replica_id,
        chores=[lambda: starts.decide_orphaned_clicks(replica=settings.replica_id, owner=owner)],
        lease_seconds=settings.lease_seconds,
        workers=WATCHER_THREADS,
    )
    lookups = ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="vm-bot-lookup")
    # Clicks only touch the database; their own pool keeps them quick while Zenlayer is slow to answer lookups.
    decisions = ThreadPoolExecutor(max_workers=DECISION_THREADS, thread_name_prefix="vm-bot-decide")
    app = App(
        client=client,
        signing_secret=settings.slack_signing_secret.reveal() if settings.slack_signing_secret else "",
        request_verification_enabled=not settings.socket_mode,
        listener_executor=ThreadPoolExecutor(max_workers=LISTENER_THREADS, thread_name_prefix="bolt-listener"),
    )
    Listeners(
        starts=starts,
        grants=GrantService(db),
        inventory=Inventory(db, vm),
        vm=vm,
        messages=messages,
        lookups=lookups,
        decisions=decisions,
        wake_watcher=watcher.wake,
        owner=owner,
    ).register(app)
    return BotApp(settings, app, db, vm, client, starts, watcher, (lookups, decisions))
