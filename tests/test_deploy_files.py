"""The deploy files name only what a running vm-bot exports, and track the release they deploy.

The Grafana dashboard's queries and the Prometheus alert rules are checked against a live scrape of a bot that
has served a `/vm start` and its click (so labelled counters and histograms have samples). The rest of deploy/ is
checked by .ci/deploy-check.sh (schemas, promtool).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bot.devtools.slack_driver import SlackDriver
from bot.devtools.support import wait_until
from bot.server import RunningBot
from bot.slack import action_ids
from tests.transports import HttpSlack

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "vm-bot.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
KUSTOMIZATION = DEPLOY / "kubernetes" / "base" / "kustomization.yaml"
# Not vm-bot's: kube-state-metrics' view of the Deployment's readiness (why: the comment on VmBotNoReadyReplica).
NOT_VM_BOT_IN_ALERTS = frozenset({"kube_deployment_status_replicas_available"})

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
_MATCHERS = re.compile(r"\{[^}]*\}")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_BRACKETS = re.compile(r"\[[^\]]*\]")
# Not preceded by a word character or a dot, so the `e3` of 1e3 and the `m` of `offset 10m` are not names.
_IDENTIFIER = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")
_OPERATORS = {"and", "or", "unless", "offset", "bool", "inf", "nan"}
_LABEL_VALUES = re.compile(r"label_values\((.*),\s*\w+\s*\)")


def metric_names(expr: str) -> set[str]:
    """Return the metric names a PromQL expression (or a Grafana label_values() query) selects.

    Not a full parser, but more than a regex over `vmbot_*`: string literals, label matchers `{...}`, grouping
    label lists (`by (...)`, `on (...)`, ...) and `[...]` ranges go first, so label names and Grafana's variables
    never count; of the identifiers left, one followed by `(` is a function or an aggregation, and the rest, bar
    PromQL's keywords, are metric names (vmbot's or anyone's).
    """
    values_query = _LABEL_VALUES.fullmatch(expr.strip())
    if values_query:
        expr = values_query.group(1)
    for pattern in (_STRINGS, _MATCHERS, _LABEL_LISTS, _BRACKETS):
        expr = pattern.sub(" ", expr)
    return {
        match.group()
        for match in _IDENTIFIER.finditer(expr)
        if match.group().lower() not in _OPERATORS and not expr[match.end() :].lstrip().startswith("(")
    }


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Yield every panel, including those folded into rows."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries() -> dict[str, list[str]]:
    """Return every query in the dashboard, by where it is (panel title or template variable)."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {f"panel {p['title']!r}": [t["expr"] for t in p.get("targets", [])] for p in _panels(dashboard["panels"])}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            queries[f"variable ${variable['name']}"] = [query["query"] if isinstance(query, dict) else query]
    return {where: exprs for where, exprs in queries.items() if exprs}


def alert_queries() -> dict[str, list[str]]:
    """Return every alert rule's expression, by alert name."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {f"alert {rule['alert']}": [rule["expr"]] for group in groups for rule in group["rules"]}


def exported_after_a_start(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]], grant: Callable[..., None]
) -> set[str]:
    """Serve one `/vm start`, its click and a refused request, then return every sample name /metrics shows."""
    running, driver = start_bot()
    assert running.http is not None
    url = running.http.url
    chat = HttpSlack(driver)
    grant("U0REQUEST", "web-*")
    chat.say("start web-1")
    confirmation = chat.wait_confirmation()
    chat.press(confirmation, action_ids.START)
    chat.wait_thread(confirmation, "RUNNING")
    httpx.post(f"{url}/slack/events", content=b"unsigned")  # vmbot_http_refused_total{reason="unsigned"}

    def names_once_observed() -> set[str] | None:
        samples = [s for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text) for s in f.samples]
        running_count = sum(s.value for s in samples if s.name == "vmbot_click_to_running_seconds_count")
        return {s.name for s in samples} if running_count else None

    # The click-to-RUNNING histogram is observed as the request is recorded done, just after the thread's reply.
    return wait_until(names_once_observed, what="a scrape showing the start's click-to-RUNNING")


def unexported(
    queries: dict[str, list[str]], exported: set[str], allowed: frozenset[str] = frozenset()
) -> dict[str, list[str]]:
    """Return, by place, the metric names its queries select that are neither exported nor allowed."""
    named = {where: {name for expr in exprs for name in metric_names(expr)} for where, exprs in queries.items()}
    return {where: sorted(missing) for where, names in named.items() if (missing := names - exported - allowed)}


def test_every_metric_the_dashboard_and_the_alerts_name_is_exported(
    start_bot: Callable[..., tuple[RunningBot, SlackDriver]], grant: Callable[..., None]
) -> None:
    dashboard, alerts = dashboard_queries(), alert_queries()
    assert len(dashboard) >= 15 and len(alerts) >= 6  # the files were read, not skipped
    exported = exported_after_a_start(start_bot, grant)
    # Histograms are exported as _bucket, _sum and _count samples and counters as _total: a query must name one of
    # those exactly (the bare family name selects nothing in Prometheus), which comparing with sample names checks.
    assert not unexported(dashboard, exported), "the dashboard queries metrics /metrics does not export"
    assert not unexported(alerts, exported, NOT_VM_BOT_IN_ALERTS), "alerts use metrics /metrics does not export"


def test_metric_names_leave_out_labels_functions_variables_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (kind, le) (rate(vmbot_ack_latency_seconds_bucket{namespace=~"$namespace",'
        ' kind!="command"}[$__rate_interval]))) > 2 and on (kind) vmbot_nope_total offset 10m'
        " or time() - vmbot_watcher_last_tick_timestamp_seconds > 1e3"
        ' unless absent(up{job="vm-bot"}) / ignoring(pod) group_left(instance) sum without (pod) (vmbot_x[5m:1m])'
    )
    assert metric_names(expr) == {
        "vmbot_ack_latency_seconds_bucket",
        "vmbot_nope_total",
        "vmbot_watcher_last_tick_timestamp_seconds",
        "up",
        "vmbot_x",
    }
    assert metric_names("label_values(vmbot_messages_pending{pod=~'a.*'}, namespace)") == {"vmbot_messages_pending"}


def test_the_image_tag_is_this_release() -> None:
    images = yaml.safe_load(KUSTOMIZATION.read_text())["images"]
    assert [image["newTag"] for image in images if image["name"] == "vm-bot"] == [version("vm-bot")], (
        "deploy/kubernetes/base/kustomization.yaml should deploy this release's image: update its newTag"
    )
