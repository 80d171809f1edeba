"""Prometheus metrics: one registry per app (so tests and several apps in one process never collide)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Slack wants an answer in 3 s; buckets fine enough below that to see a slow ack coming.
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RUNNING_BUCKETS = (5, 10, 20, 30, 60, 120, 300, 600, 900, 1800)
NO_ERROR = "none"


class Metrics:
    """Every metric vm-bot exposes at /metrics."""

    # Long on purpose: one declaration per metric, the list /metrics exports.
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.commands = Counter(
            "vmbot_commands", "/vm commands received, by verb and outcome", ["verb", "outcome"], registry=r
        )
        self.ack_seconds = Histogram(
            "vmbot_ack_latency_seconds",
            "time from a Slack request arriving to its acknowledgement, by kind (command, interaction)",
            ["kind"],
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.clicks = Counter(
            "vmbot_clicks", "confirmation button clicks, by decision and outcome", ["decision", "outcome"], registry=r
        )
        self.zenlayer_calls = Counter(
            "vmbot_zenlayer_calls",
            "Zenlayer API calls (each HTTP attempt), by action and error code (none when it succeeded)",
            ["action", "error"],
            registry=r,
        )
        self.zenlayer_seconds = Histogram(
            "vmbot_zenlayer_call_seconds",
            "Zenlayer API call latency, by action",
            ["action"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.slack_calls = Counter(
            "vmbot_slack_api_calls",
            "Slack Web API calls, by method and error (none when it succeeded)",
            ["method", "error"],
            registry=r,
        )
        self.slack_messages = Counter(
            "vmbot_slack_messages",
            "outbox messages by kind (progress, final, refresh) and result (sent, dropped: nothing left to say, "
            "failed: refused for good or given up, untold: its failure could not be told to anyone)",
            ["kind", "result"],
            registry=r,
        )
        self.click_to_running = Histogram(
            "vmbot_click_to_running_seconds",
            "time from the approving click to every instance RUNNING",
            buckets=RUNNING_BUCKETS,
            registry=r,
        )
        self.tick_seconds = Histogram(
            "vmbot_watcher_tick_seconds", "duration of one watcher tick", buckets=CALL_BUCKETS, registry=r
        )
        self.last_tick = Gauge(
            "vmbot_watcher_last_tick_timestamp_seconds", "Unix time the watcher last finished a tick", registry=r
        )
        self.takeovers = Counter(
            "vmbot_watcher_takeovers", "requests whose lapsed lease this process took over from another", registry=r
        )
        self.clock_offset = Gauge(
            "vmbot_clock_offset_seconds",
            "this replica's clock minus the database's, read at every lease heartbeat (positive: the replica is "
            "ahead); deadlines never use the replica's clock, so this only shows a host whose time is off",
            registry=r,
        )
        self.http_refused = Counter(
            "vmbot_http_refused", "requests refused before reaching Slack handling, by reason", ["reason"], registry=r
        )

    def watch_database(self, gauges: Callable[[], dict[str, float | dict[str, float]]]) -> None:
        """Read the gauges that live in the database (watched instances, pending messages) at every scrape."""
        self.registry.register(_DatabaseGauges(gauges))

    def ticked(self, seconds: float) -> None:
        """Record one finished watcher tick."""
        self.tick_seconds.observe(seconds)
        self.last_tick.set(time.time())

    def took_over(self, count: int) -> None:
        """Record requests taken over from a replica whose lease lapsed."""
        if count:
            self.takeovers.inc(count)

    def render(self) -> tuple[bytes, str]:
        """Return the exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _DatabaseGauges(Collector):
    """Gauges and counters computed from the database when scraped (every replica reports the same values: the
    database is shared); a failing query leaves them out of that scrape. A value is a number, or by label value."""

    DOCS = {
        "vmbot_watched_instances": "instances of active start requests not yet settled",
        "vmbot_messages_pending": "messages owed to Slack (outbox rows) not yet delivered",
        "vmbot_runs_active": "time-boxed runs whose instance is running (or being stopped)",
    }
    COUNTERS = {
        "vmbot_run_auto_stops": ("time-boxed runs stopped on time by vm-bot", None),
        "vmbot_run_extensions": ("hours added to time-boxed runs with Extend", None),
        "vmbot_run_instance_hours": ("instance-hours of ended time-boxed runs, by how they ended", "ended"),
        "vmbot_run_instance_hours_saved": ("instance-hours of time boxes left unused by early stops", None),
    }

    def __init__(self, read: Callable[[], dict[str, float | dict[str, float]]]):
        self._read = read

    def describe(self) -> Iterator[Any]:
        return iter(())  # values come from the database at scrape time only

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        try:
            values = self._read()
        except Exception as exc:
            log.warning("metrics: could not read gauges from the database (%s)", type(exc).__name__)
            return
        for name, doc in self.DOCS.items():
            value = values.get(name)
            if isinstance(value, float | int):
                yield GaugeMetricFamily(name, doc, value=value)
        for name, (doc, label) in self.COUNTERS.items():
            value = values.get(name)
            if isinstance(value, float | int):
                yield CounterMetricFamily(name, doc, value=value)
            elif isinstance(value, dict) and label is not None:
                family = CounterMetricFamily(name, doc, labels=[label])
                for label_value, number in sorted(value.items()):
                    family.add_metric([label_value], number)
                yield family
