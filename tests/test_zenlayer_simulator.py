"""The Zenlayer simulator over real HTTP: authentication, state machine, validation, controls, the CLI."""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import Secret, Settings
from bot.devtools import zenlayer_simulator as simulator_module
from bot.devtools.zenlayer_simulator import ApiError, ZenlayerSimulator
from bot.devtools.zenlayer_simulator.state import DEFAULT_GROUP_NAME, resource_group_id
from bot.zenlayer.client import ZenlayerClient
from tests.zenlayer_support import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    TOKEN,
    host_of,
    post_api,
    signed_headers,
    signed_post,
    wait_until,
)


@pytest.fixture
def sim() -> Iterator[ZenlayerSimulator]:
    """A simulator with a key pair and a token, fast transitions, and a few instances."""
    with ZenlayerSimulator(
        boot_seconds=0.2,
        stop_seconds=0.2,
        reboot_seconds=0.2,
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        token=TOKEN,
        instances={"web-1": "STOPPED", "web-2": "STOPPED", "db-1": "RUNNING", "old-1": "RECYCLE"},
    ) as simulator:
        yield simulator


def error_of(response: httpx.Response) -> tuple[int, str]:
    """Check an error envelope's shape and return (HTTP status, code)."""
    payload = response.json()
    assert set(payload) == {"requestId", "code", "message"}
    uuid.UUID(payload["requestId"])
    return response.status_code, payload["code"]


def test_signed_request_gets_the_documented_envelope(sim: ZenlayerSimulator) -> None:
    response = signed_post(sim.url, {"instanceIds": ["web-1", "db-1", "ghost"]})

    assert response.status_code == 200
    payload = response.json()
    assert set(payload) == {"requestId", "response"}
    assert payload["response"]["requestId"] == payload["requestId"] == sim.calls[-1].request_id
    uuid.UUID(payload["requestId"])
    assert payload["response"]["totalCount"] == 2
    assert payload["response"]["dataSet"] == [
        {"instanceId": "web-1", "instanceStatus": "STOPPED"},
        {"instanceId": "db-1", "instanceStatus": "RUNNING"},
    ]


def test_signature_covers_the_raw_bytes_as_sent(sim: ZenlayerSimulator) -> None:
    # Spaced like the SDK's json.dumps, and with a key order of the sender's choosing: both fine if signed as sent.
    body = b'{ "pageNum": 1,  "instanceIds": ["web-1"] }'
    response = post_api(sim.url, body, signed_headers(sim.url, body))
    assert response.status_code == 200


def test_bearer_token_is_accepted(sim: ZenlayerSimulator) -> None:
    headers = {
        "X-ZC-Action": "DescribeInstances",
        "X-ZC-Version": "2026-04-01",
        "X-ZC-Service": "vm",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {TOKEN}",
    }
    response = post_api(sim.url, {"instanceIds": ["web-1"]}, headers)
    assert response.status_code == 200
    assert response.json()["response"]["dataSet"][0]["instanceName"] == "web-1"


def _resign(url: str, headers: dict[str, str], body: bytes, **changes: Any) -> dict[str, str]:
    """Sign body again for the same action, with some part of the signing changed."""
    return signed_headers(url, body, action=headers["X-ZC-Action"], **changes)


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    """Return headers minus one."""
    return {k: v for k, v in headers.items() if k != name}


Spoiler = Callable[[str, dict[str, str], bytes], tuple[dict[str, str], bytes]]
# How to spoil a correctly signed request, and the code the refusal must carry (None: any).
SPOILERS: dict[str, tuple[Spoiler, str | None]] = {
    "forged body": (lambda url, h, b: (h, b.replace(b'"]', b'", "web-2"]')), "INVALID_SIGNATURE"),
    "wrong secret": (lambda url, h, b: (_resign(url, h, b, secret="nope"), b), "INVALID_SIGNATURE"),
    "signed for another host": (lambda url, h, b: (_resign(url, h, b, host="evil.test"), b), "INVALID_SIGNATURE"),
    "content type changed": (
        lambda url, h, b: ({**h, "Content-Type": "application/json; charset=utf-8"}, b),
        "INVALID_SIGNATURE",
    ),
    "unknown key": (lambda url, h, b: (_resign(url, h, b, key_id="AKIDOTHER"), b), "INVALID_ACCESS_KEY_ID"),
    "stale timestamp": (
        lambda url, h, b: (_resign(url, h, b, timestamp=int(time.time()) - 301), b),
        "SIGNATURE_EXPIRED",
    ),
    "future timestamp": (
        # +310: int() drops up to a second here, and the simulator reads its clock a moment later (300 s allowed)
        lambda url, h, b: (_resign(url, h, b, timestamp=int(time.time()) + 310), b),
        "SIGNATURE_EXPIRED",
    ),
    "missing authorization": (lambda url, h, b: (_without(h, "Authorization"), b), "AUTHFAILURE"),
    "missing timestamp": (lambda url, h, b: (_without(h, "X-ZC-Timestamp"), b), "AUTHFAILURE"),
    "missing signature method": (lambda url, h, b: (_without(h, "X-ZC-Signature-Method"), b), "AUTHFAILURE"),
    "garbled authorization": (lambda url, h, b: ({**h, "Authorization": "ZC2-HMAC-SHA256 junk"}, b), "AUTHFAILURE"),
    "bad token": (lambda url, h, b: ({**h, "Authorization": "Bearer zpat-wrong"}, b), "INVALID_TOKEN"),
    "bare bearer": (lambda url, h, b: ({**h, "Authorization": "Bearer"}, b), "AUTHFAILURE"),
    "bearer with blank token": (lambda url, h, b: ({**h, "Authorization": "Bearer \t x"}, b), "INVALID_TOKEN"),
}


# A request each state-changing action would carry out if it got through.
CHANGES = {
    "StartInstances": {"instanceIds": ["web-1"]},
    "StopInstances": {"instanceIds": ["db-1"], "forceShutdown": False},
    "RebootInstances": {"instanceIds": ["db-1"]},
}


@pytest.mark.parametrize("action", list(CHANGES))
@pytest.mark.parametrize("name", list(SPOILERS))
def test_refuses_requests_that_are_not_properly_authenticated(sim: ZenlayerSimulator, name: str, action: str) -> None:
    spoil, code = SPOILERS[name]
    before = sim.statuses()
    body = json.dumps(CHANGES[action]).encode()
    headers, sent = spoil(sim.url, signed_headers(sim.url, body, action=action), body)

    response = post_api(sim.url, sent, headers)

    status, got = error_of(response)
    assert status == 401
    if code is not None:
        assert got == code
    assert sim.statuses() == before
    assert sim.calls[-1].http_status == 401


def test_token_only_simulator_refuses_signatures_and_key_only_refuses_tokens() -> None:
    body = b'{"instanceIds": []}'
    with ZenlayerSimulator(token=TOKEN) as token_only:
        assert error_of(post_api(token_only.url, body, signed_headers(token_only.url, body))) == (
            401,
            "INVALID_ACCESS_KEY_ID",
        )
    with ZenlayerSimulator(access_key_id=ACCESS_KEY_ID, access_key_secret=Secret(ACCESS_KEY_SECRET)) as key_only:
        headers = {**signed_headers(key_only.url, body), "Authorization": f"Bearer {TOKEN}"}
        assert error_of(post_api(key_only.url, body, headers)) == (401, "INVALID_TOKEN")


@pytest.mark.parametrize(
    "credentials",
    [{}, {"access_key_id": ACCESS_KEY_ID}, {"access_key_secret": ACCESS_KEY_SECRET}, {"token": ""}],
)
def test_refuses_to_exist_without_credentials(credentials: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        ZenlayerSimulator(**credentials)


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("X-ZC-Action", "ReleaseInstances", "INVALID_ACTION"),
        ("X-ZC-Service", "zec", "INVALID_SERVICE"),
        ("X-ZC-Version", "1999-01-01", "INVALID_VERSION"),
    ],
)
def test_refuses_unknown_action_service_and_version(sim: ZenlayerSimulator, header: str, value: str, code: str) -> None:
    body = b'{"instanceIds": ["web-1"]}'
    headers = {**signed_headers(sim.url, body), header: value}
    assert error_of(post_api(sim.url, body, headers)) == (400, code)


def test_body_that_is_not_a_json_object_is_refused(sim: ZenlayerSimulator) -> None:
    for body in (b"not json", b"[1]"):
        assert error_of(post_api(sim.url, body, signed_headers(sim.url, body))) == (400, "INVALID_PARAMETER")


def test_start_boots_then_runs_and_stop_goes_back(sim: ZenlayerSimulator) -> None:
    started = time.monotonic()
    assert signed_post(sim.url, {"instanceIds": ["web-1", "web-2"]}, action="StartInstances").status_code == 200
    assert sim.status("web-1") == "BOOTING"

    wait_until(lambda: sim.statuses()["web-2"] == "RUNNING", timeout=5, what="web-2 RUNNING")
    assert time.monotonic() - started >= 0.2
    assert sim.status("web-1") == "RUNNING"

    assert signed_post(sim.url, {"instanceIds": ["web-1"]}, action="StopInstances").status_code == 200
    assert sim.status("web-1") == "STOPPING"
    wait_until(lambda: sim.status("web-1") == "STOPPED", timeout=5, what="web-1 STOPPED")
    assert error_of(signed_post(sim.url, {"instanceIds": ["web-1"]}, action="StopInstances")) == (
        403,
        "OPERATION_DENIED_INSTANCE_NOT_RUNNING",
    )


def test_each_transition_takes_its_own_time(sim: ZenlayerSimulator) -> None:
    sim.boot_seconds, sim.stop_seconds, sim.reboot_seconds = 30, 1, 30
    sim.add_instance("app-1", "RUNNING")

    asked = time.monotonic()
    assert signed_post(sim.url, {"instanceIds": ["db-1"], "forceShutdown": False}, action="StopInstances").is_success
    assert signed_post(sim.url, {"instanceIds": ["app-1"]}, action="RebootInstances").is_success
    assert (sim.status("db-1"), sim.status("app-1")) == ("STOPPING", "REBOOT")

    wait_until(lambda: sim.status("db-1") == "STOPPED", timeout=10, what="db-1 STOPPED")
    assert time.monotonic() - asked >= 1
    assert sim.status("app-1") == "REBOOT"  # its 30 s are not over
    sim.reboot_seconds = 0
    assert signed_post(sim.url, {"instanceIds": ["db-1"]}, action="StartInstances").is_success
    assert (sim.status("db-1"), sim.status("app-1")) == ("BOOTING", "REBOOT")  # a change applies to later calls only
    with pytest.raises(ValueError):
        sim.stop_seconds = -1


def test_reboot_goes_through_reboot_back_to_running(sim: ZenlayerSimulator) -> None:
    sim.reboot_seconds = 0.5
    response = signed_post(sim.url, {"instanceIds": ["db-1"]}, action="RebootInstances")

    assert response.status_code == 200
    assert response.json()["response"] == {"requestId": sim.calls[-1].request_id}
    assert sim.status("db-1") == "REBOOT"
    wait_until(lambda: sim.status("db-1") == "RUNNING", timeout=5, what="db-1 RUNNING again")
    assert [(c.action, c.instance_ids) for c in sim.calls] == [("RebootInstances", ("db-1",))]


def test_stop_records_force_shutdown_as_sent(sim: ZenlayerSimulator) -> None:
    sim.add_instance("app-1", "RUNNING")

    graceful = signed_post(sim.url, {"instanceIds": ["db-1"], "forceShutdown": False}, action="StopInstances")
    unsaid = signed_post(sim.url, {"instanceIds": ["app-1"]}, action="StopInstances")
    sim.set_status("db-1", "RUNNING")
    as_text = signed_post(sim.url, {"instanceIds": ["db-1"], "forceShutdown": "false"}, action="StopInstances")

    assert graceful.status_code == unsaid.status_code == 200
    assert error_of(as_text) == (400, "INVALID_PARAMETER_VALUE")
    assert sim.status("db-1") == "RUNNING"  # a malformed stop stops nothing
    assert [c.force_shutdown for c in sim.calls] == [False, None, "false"]
    assert sim.calls[0].params == {"instanceIds": ["db-1"], "forceShutdown": False}


@pytest.mark.parametrize(
    ("action", "ids", "status", "code", "named"),
    [
        ("StopInstances", ["db-1", "ghost"], 404, "INVALID_INSTANCE_NOT_FOUND", "ghost"),
        ("StopInstances", ["db-1", "web-1"], 403, "OPERATION_DENIED_INSTANCE_NOT_RUNNING", "web-1 is STOPPED"),
        ("StopInstances", ["db-1", "old-1"], 403, "OPERATION_DENIED_INSTANCE_RECYCLED", "old-1"),
        ("StopInstances", [], 400, "INVALID_PARAMETER_VALUE", "1 to 100"),
        ("StopInstances", [f"i-{n}" for n in range(101)], 400, "INVALID_PARAMETER_VALUE", "101"),
        ("RebootInstances", ["db-1", "ghost"], 404, "INVALID_INSTANCE_NOT_FOUND", "ghost"),
        ("RebootInstances", ["db-1", "web-1"], 403, "OPERATION_DENIED_INSTANCE_STATUS", "web-1 is STOPPED"),
        ("RebootInstances", ["db-1", "old-1"], 403, "OPERATION_DENIED_INSTANCE_RECYCLED", "old-1"),
        ("RebootInstances", [], 400, "INVALID_PARAMETER_VALUE", "1 to 100"),
        ("RebootInstances", [f"i-{n}" for n in range(101)], 400, "INVALID_PARAMETER_VALUE", "101"),
    ],
)
def test_stop_and_reboot_are_all_or_nothing(
    sim: ZenlayerSimulator, action: str, ids: list[str], status: int, code: str, named: str
) -> None:
    response = signed_post(sim.url, {"instanceIds": ids}, action=action)

    assert error_of(response) == (status, code)
    assert named in response.json()["message"]
    assert sim.status("db-1") == "RUNNING"


@pytest.mark.parametrize(("action", "code"), [("StopInstances", "NOT_RUNNING"), ("RebootInstances", "STATUS")])
def test_stop_and_reboot_refuse_an_instance_on_its_way(sim: ZenlayerSimulator, action: str, code: str) -> None:
    sim.boot_seconds = sim.reboot_seconds = 30
    signed_post(sim.url, {"instanceIds": ["web-1"]}, action="StartInstances")
    signed_post(sim.url, {"instanceIds": ["db-1"]}, action="RebootInstances")

    for instance_id in ("web-1", "db-1"):  # BOOTING, REBOOT
        refused = signed_post(sim.url, {"instanceIds": [instance_id]}, action=action)
        assert error_of(refused) == (403, f"OPERATION_DENIED_INSTANCE_{code}")


@pytest.mark.parametrize(
    ("ids", "status", "code", "named"),
    [
        (["web-1", "ghost"], 404, "INVALID_INSTANCE_NOT_FOUND", "ghost"),
        (["web-1", "db-1"], 403, "OPERATION_DENIED_INSTANCE_NOT_STOPPED", "db-1"),
        (["web-1", "old-1"], 403, "OPERATION_DENIED_INSTANCE_RECYCLED", "old-1"),
        ([], 400, "INVALID_PARAMETER_VALUE", "1 to 100"),
        ([f"i-{n}" for n in range(101)], 400, "INVALID_PARAMETER_VALUE", "101"),
    ],
)
def test_start_is_all_or_nothing(sim: ZenlayerSimulator, ids: list[str], status: int, code: str, named: str) -> None:
    response = signed_post(sim.url, {"instanceIds": ids}, action="StartInstances")

    assert error_of(response) == (status, code)
    assert named in response.json()["message"]
    assert sim.status("web-1") == "STOPPED"


def test_start_without_instance_ids_is_refused(sim: ZenlayerSimulator) -> None:
    assert error_of(signed_post(sim.url, {}, action="StartInstances")) == (400, "INVALID_PARAMETER_VALUE")


def test_describe_pages_with_default_and_explicit_page_size(sim: ZenlayerSimulator) -> None:
    for n in range(30):
        sim.add_instance(f"bulk-{n:02d}", "RUNNING", name=f"bulk {n}", zone="FRA-A")

    everything = signed_post(sim.url, {}).json()["response"]
    assert everything["totalCount"] == 34
    assert len(everything["dataSet"]) == 20  # Zenlayer's default pageSize

    page = signed_post(sim.url, {"pageSize": 25, "pageNum": 2}).json()["response"]
    assert page["totalCount"] == 34
    assert [row["instanceId"] for row in page["dataSet"]] == [f"bulk-{n:02d}" for n in range(21, 30)]

    rows = signed_post(sim.url, {"instanceIds": ["bulk-07"]}, action="DescribeInstances").json()["response"]
    assert rows["dataSet"][0]["instanceName"] == "bulk 7"
    assert rows["dataSet"][0]["zoneId"] == "FRA-A"
    assert {"instanceType", "cpuCount", "memory", "publicIpAddresses"} <= set(rows["dataSet"][0])


@pytest.mark.parametrize(
    "params",
    [{"pageSize": 0}, {"pageSize": 1001}, {"pageNum": 0}, {"pageSize": "5"}, {"instanceIds": "web-1"}],
)
def test_describe_refuses_bad_paging_and_filters(sim: ZenlayerSimulator, params: dict[str, Any]) -> None:
    assert error_of(signed_post(sim.url, params)) == (400, "INVALID_PARAMETER_VALUE")


def test_calls_are_recorded_with_params(sim: ZenlayerSimulator) -> None:
    signed_post(sim.url, {"instanceIds": ["web-1"], "pageSize": 1, "pageNum": 1})
    signed_post(sim.url, {"instanceIds": ["ghost"]}, action="StartInstances")

    first, second = sim.calls
    assert (first.action, first.instance_ids, first.http_status, first.code) == (
        "DescribeInstancesStatus",
        ("web-1",),
        200,
        None,
    )
    assert first.params == {"instanceIds": ["web-1"], "pageSize": 1, "pageNum": 1}
    assert (second.action, second.http_status, second.code) == ("StartInstances", 404, "INVALID_INSTANCE_NOT_FOUND")
    assert first.time <= second.time
    sim.clear_calls()
    assert sim.calls == []


def test_faults_apply_to_their_action_only_and_count_down(sim: ZenlayerSimulator) -> None:
    sim.fail_next("StartInstances", times=2, status=503, code="BUSY", message="try later")

    assert signed_post(sim.url, {"instanceIds": ["web-1"]}).status_code == 200
    for _ in range(2):
        assert error_of(signed_post(sim.url, {"instanceIds": ["web-1"]}, action="StartInstances")) == (503, "BUSY")
    assert signed_post(sim.url, {"instanceIds": ["web-1"]}, action="StartInstances").status_code == 200

    sim.fail_next("*", status=500)
    sim.reset_faults()
    assert signed_post(sim.url, {}).status_code == 200


def test_faults_apply_to_stop_and_reboot(sim: ZenlayerSimulator) -> None:
    sim.add_instance("app-1", "RUNNING")
    sim.stop_seconds = sim.reboot_seconds = 30
    sim.fail_next("RebootInstances", status=503, code="BUSY")
    sim.fail_next("StopInstances", status=None, hang_seconds=0.05)  # carried out, answered late

    assert error_of(signed_post(sim.url, {"instanceIds": ["db-1"]}, action="RebootInstances")) == (503, "BUSY")
    assert sim.status("db-1") == "RUNNING"
    assert signed_post(sim.url, {"instanceIds": ["app-1"]}, action="StopInstances").status_code == 200
    assert sim.status("app-1") == "STOPPING"
    assert signed_post(sim.url, {"instanceIds": ["db-1"]}, action="RebootInstances").status_code == 200
    assert [(c.action, c.http_status) for c in sim.calls] == [
        ("RebootInstances", 503),
        ("StopInstances", 200),
        ("RebootInstances", 200),
    ]
    assert sim.faults == []


def test_console_changes_instances_behind_the_bots_back(sim: ZenlayerSimulator) -> None:
    sim.add_instance("app-1", "RUNNING")
    sim.boot_seconds = sim.stop_seconds = sim.reboot_seconds = 30

    sim.console_stop("db-1")
    sim.console_start("web-1")
    sim.console_reboot("app-1")
    assert (sim.status("db-1"), sim.status("web-1"), sim.status("app-1")) == ("STOPPING", "BOOTING", "REBOOT")
    with pytest.raises(ApiError) as refused:
        sim.console_stop("web-2", "db-1")  # the console refuses what the API would: all or nothing
    assert (refused.value.status, refused.value.code) == (403, "OPERATION_DENIED_INSTANCE_NOT_RUNNING")

    sim.console_recycle("web-2")
    sim.console_release("db-1")
    with pytest.raises(ApiError) as missing:
        sim.console_release("ghost")
    assert missing.value.code == "INVALID_INSTANCE_NOT_FOUND"
    assert sim.calls == []  # nothing of that went through the API

    assert error_of(signed_post(sim.url, {"instanceIds": ["web-2"]}, action="StartInstances")) == (
        403,
        "OPERATION_DENIED_INSTANCE_RECYCLED",
    )
    assert error_of(signed_post(sim.url, {"instanceIds": ["db-1"]}, action="StopInstances")) == (
        404,
        "INVALID_INSTANCE_NOT_FOUND",
    )
    listed = signed_post(sim.url, {"instanceIds": ["web-2", "db-1"]}).json()["response"]["dataSet"]
    assert listed == [{"instanceId": "web-2", "instanceStatus": "RECYCLE"}]


def test_faults_do_not_bypass_authentication(sim: ZenlayerSimulator) -> None:
    sim.fail_next(None, status=200, body="{}")
    body = b"{}"
    response = post_api(sim.url, body, signed_headers(sim.url, body, secret="wrong"))
    assert error_of(response) == (401, "INVALID_SIGNATURE")
    assert len(sim.faults) == 1


def test_stop_returns_promptly_while_a_reply_hangs(sim: ZenlayerSimulator) -> None:
    sim.fail_next(None, status=500, hang_seconds=30)
    outcome: queue.Queue[object] = queue.Queue()

    def call() -> None:
        try:
            outcome.put(signed_post(sim.url, {}).status_code)
        except httpx.HTTPError as exc:
            outcome.put(exc)

    threading.Thread(target=call, daemon=True).start()
    wait_until(lambda: len(sim.calls) == 1, timeout=5, what="the hanging call")

    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 15  # woke the 30 s hang instead of waiting it out
    result = outcome.get(timeout=5)  # the woken reply, or the connection cut under it
    assert result == 500 or isinstance(result, httpx.HTTPError)


def test_http_controls_script_a_simulator(sim: ZenlayerSimulator) -> None:
    control = f"{sim.url}/_simulator"
    with httpx.Client(timeout=5) as http:
        assert http.get(f"{control}/health").json() == {"ok": True}

        added = http.post(
            f"{control}/instances",
            json={"instances": [{"instanceId": "api-1", "name": "api one", "zone": "LAX-A"}, {"instanceId": "db-1"}]},
        )
        assert added.status_code == 200
        assert added.json()["instances"][0] == {
            "instanceId": "api-1",
            "instanceName": "api one",
            "instanceStatus": "STOPPED",
            "zoneId": "LAX-A",
            "resourceGroupId": resource_group_id(DEFAULT_GROUP_NAME),
            "resourceGroupName": DEFAULT_GROUP_NAME,
            "tags": {"tags": []},
        }
        tagged = http.post(
            f"{control}/instances", json={"name": "api two", "resourceGroup": "dev", "tags": {"team": "api"}}
        ).json()["instances"][0]
        assert tagged["instanceId"].isdigit() and tagged["resourceGroupName"] == "dev"  # an opaque id was made up
        assert tagged["tags"] == {"tags": [{"key": "team", "value": "api"}]}
        assert http.post(f"{control}/instances", json={"tags": "team"}).status_code == 400
        assert http.delete(f"{control}/instances/{tagged['instanceId']}").status_code == 200
        assert http.post(f"{control}/instances", json={"instanceId": "db-1", "status": "stopped"}).status_code == 200
        assert sim.status("db-1") == "STOPPED"
        listed = {
            row["instanceId"]: row["instanceStatus"] for row in http.get(f"{control}/instances").json()["instances"]
        }
        assert listed == {
            "web-1": "STOPPED",
            "web-2": "STOPPED",
            "db-1": "STOPPED",
            "old-1": "RECYCLE",
            "api-1": "STOPPED",
        }

        assert http.post(
            f"{control}/faults",
            json={"action": "StartInstances", "status": 429, "code": "REQUEST_LIMIT_EXCEEDED", "retry_after": 1},
        ).json() == {"faults": 1}
        assert http.get(f"{control}/faults").json()["faults"][0]["headers"] == {"Retry-After": "1"}
        throttled = signed_post(sim.url, {"instanceIds": ["api-1"]}, action="StartInstances")
        assert error_of(throttled) == (429, "REQUEST_LIMIT_EXCEEDED")
        assert throttled.headers["Retry-After"] == "1"
        http.post(f"{control}/faults", json={"action": "StartInstances"})
        assert http.delete(f"{control}/faults").status_code == 200
        assert http.get(f"{control}/faults").json() == {"faults": []}

        timings = {"boot_seconds": 0, "stop_seconds": 0.2, "reboot_seconds": 0.2}
        assert http.post(f"{control}/settings", json={"boot_seconds": 0}).json() == timings
        assert http.get(f"{control}/settings").json() == timings
        assert signed_post(sim.url, {"instanceIds": ["api-1"]}, action="StartInstances").status_code == 200
        assert sim.status("api-1") == "RUNNING"

        calls = http.get(f"{control}/calls").json()["calls"]
        assert [(c["action"], c["instanceIds"], c["httpStatus"]) for c in calls] == [
            ("StartInstances", ["api-1"], 429),
            ("StartInstances", ["api-1"], 200),
        ]
        assert http.delete(f"{control}/calls").status_code == 200
        assert http.get(f"{control}/calls").json() == {"calls": []}

        assert http.delete(f"{control}/instances/api-1").status_code == 200
        assert "api-1" not in sim.statuses()
        assert http.delete(f"{control}/instances/api-1").status_code == 404

        assert http.post(f"{control}/faults", content=b"nope").status_code == 400
        assert http.post(f"{control}/faults", json={"action": "X", "colour": "red"}).status_code == 400
        assert http.post(f"{control}/instances", json={"status": "RUNNING"}).status_code == 400
        assert http.post(f"{control}/settings", json={"boot_seconds": -1}).status_code == 400
        assert http.post(f"{control}/settings", json={"stop_seconds": 1, "colour": 1}).status_code == 400
        assert http.post(f"{control}/settings", json={}).status_code == 400
        assert sim.stop_seconds == 0.2  # a refused change changes nothing
        assert http.get(f"{control}/nothing").status_code == 404
        assert http.get(f"{sim.url}/api/v2/zec").status_code == 404


def test_http_console_acts_behind_the_bots_back(sim: ZenlayerSimulator) -> None:
    console = f"{sim.url}/_simulator/console"
    sim.boot_seconds = sim.stop_seconds = 30
    with httpx.Client(timeout=5) as http:
        stopped = http.post(f"{console}/stop", json={"instanceIds": ["db-1"]})
        assert stopped.status_code == 200
        assert [(i["instanceId"], i["instanceStatus"]) for i in stopped.json()["instances"]] == [("db-1", "STOPPING")]

        again = http.post(f"{console}/reboot", json={"instanceIds": ["db-1"]})
        assert again.status_code == 403 and again.json()["code"] == "OPERATION_DENIED_INSTANCE_STATUS"
        assert "db-1 is STOPPING" in again.json()["error"]
        started = http.post(f"{console}/start", json={"instanceIds": ["web-1"]}).json()["instances"]
        assert [i["instanceStatus"] for i in started] == ["BOOTING"]
        assert http.post(f"{console}/recycle", json={"instanceIds": ["web-2"]}).status_code == 200
        assert http.post(f"{console}/release", json={"instanceIds": ["old-1"]}).json() == {"instances": []}
        assert http.post(f"{console}/release", json={"instanceIds": ["old-1"]}).status_code == 404
        assert http.post(f"{console}/dance", json={"instanceIds": ["web-1"]}).status_code == 400
        assert http.post(f"{console}/stop", json={"instanceIds": "web-1"}).status_code == 400

    assert sim.statuses() == {"web-1": "BOOTING", "web-2": "RECYCLE", "db-1": "STOPPING"}
    assert sim.calls == []


def simulator_args(**overrides: Any) -> argparse.Namespace:
    """The arguments `vm-bot simulator` parses by default (an ephemeral port), with overrides."""
    defaults: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "instance": []}
    defaults.update(boot_seconds=1.0, stop_seconds=1.0, reboot_seconds=1.0)
    return argparse.Namespace(**{**defaults, **overrides})


def test_main_without_credentials_explains_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = simulator_args()
    assert simulator_module.main(args, Settings()) == 2
    assert "ZENLAYER_ACCESS_KEY_ID" in capsys.readouterr().err


def test_main_refuses_an_unknown_status(capsys: pytest.CaptureFixture[str]) -> None:
    args = simulator_args(instance=["web-1:SLEEPING"])
    assert simulator_module.main(args, Settings(zenlayer_token=Secret(TOKEN))) == 2
    assert "SLEEPING" in capsys.readouterr().err


def test_cli_simulator_runs_as_a_subprocess_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZENLAYER_", "SLACK_"))}
    env.update(ZENLAYER_ACCESS_KEY_ID=ACCESS_KEY_ID, ZENLAYER_ACCESS_KEY_SECRET=ACCESS_KEY_SECRET)
    command = [sys.executable, "-m", "bot", "simulator", "--port", "0", "--boot-seconds", "0.1"]
    command += ["--stop-seconds", "0.1", "--reboot-seconds", "30"]
    command += ["--instance", "web-1", "--instance", "db-1:running"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
        first = lines.get(timeout=20)
        assert first.startswith("vm-bot simulator listening on http://127.0.0.1:"), first
        url = first.rsplit(" ", 1)[1].strip()

        with ZenlayerClient(url, access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, timeout=5) as vm:
            assert vm.describe_instances_status(["web-1", "db-1"]) == {"web-1": "STOPPED", "db-1": "RUNNING"}
            vm.start_instances(["web-1"])
            vm.reboot_instances(["db-1"])
            wait_until(
                lambda: vm.describe_instances_status(["web-1"]) == {"web-1": "RUNNING"}, timeout=10, what="RUNNING"
            )
            vm.stop_instances(["web-1"])
            wait_until(
                lambda: vm.describe_instances_status(["web-1"]) == {"web-1": "STOPPED"}, timeout=10, what="STOPPED"
            )
            assert vm.describe_instances_status(["db-1"]) == {"db-1": "REBOOT"}  # --reboot-seconds 30 was heard

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert ACCESS_KEY_SECRET not in process.stderr.read()  # type: ignore[union-attr]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]


def test_official_sdk_is_accepted_when_installed(sim: ZenlayerSimulator) -> None:
    """An independent check of the verification: Zenlayer's own SDK signs, the simulator must agree."""
    sdk = pytest.importorskip("zenlayercloud.vm.v20260401.vm_client")
    from zenlayercloud.common.config import Config
    from zenlayercloud.common.credential import Credential
    from zenlayercloud.vm.v20260401 import models

    client = sdk.VmClient(
        Credential(ACCESS_KEY_ID, ACCESS_KEY_SECRET), Config(scheme="http", domain=host_of(sim.url), request_timeout=5)
    )
    request = models.DescribeInstancesStatusRequest()
    request.instanceIds = ["web-1", "db-1"]
    request.pageSize = 2
    reply = client.DescribeInstancesStatus(request)
    assert {row.instanceId: row.instanceStatus for row in reply.dataSet} == {"web-1": "STOPPED", "db-1": "RUNNING"}

    sim.boot_seconds = sim.stop_seconds = sim.reboot_seconds = 30
    start = models.StartInstancesRequest()
    start.instanceIds = ["web-1"]
    assert client.StartInstances(start).requestId == sim.calls[-1].request_id
    assert sim.status("web-1") == "BOOTING"

    sim.add_instance("app-1", "RUNNING")
    stop = models.StopInstancesRequest()
    stop.instanceIds = ["db-1"]
    stop.forceShutdown = False
    assert client.StopInstances(stop).requestId == sim.calls[-1].request_id
    assert sim.calls[-1].force_shutdown is False and sim.status("db-1") == "STOPPING"
    reboot = models.RebootInstancesRequest()
    reboot.instanceIds = ["app-1"]
    assert client.RebootInstances(reboot).requestId == sim.calls[-1].request_id
    assert sim.status("app-1") == "REBOOT"
