"""The Zenlayer client against the simulator over real loopback HTTP: calls, batching, errors, retries."""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from bot.config import Secret, Settings
from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.devtools.zenlayer_simulator.state import resource_group_id
from bot.domain.ports import InstanceInfo, InstanceQuery, VmApi
from bot.zenlayer.client import ZenlayerClient, instance_info
from bot.zenlayer.errors import (
    AccessBlocked,
    AuthenticationFailed,
    InstanceNotFound,
    InstanceNotRunning,
    InstanceNotStopped,
    InstanceRecycled,
    InstanceStatusRefused,
    InvalidRequest,
    MalformedResponse,
    NetworkError,
    OutcomeUnknown,
    ServerError,
    StateRefused,
    Throttled,
    ZenlayerError,
)
from tests.zenlayer_support import ACCESS_KEY_ID, ACCESS_KEY_SECRET, TOKEN, closed_port_url

BACKOFF = 0.001


@pytest.fixture
def sim() -> Iterator[ZenlayerSimulator]:
    """A simulator checking the test key pair, with a few instances in different states."""
    with ZenlayerSimulator(
        boot_seconds=30,
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        instances={
            "web-1": {"status": "STOPPED", "name": "web one", "zone": "SEL-A", "group": "dev", "tags": {"team": "web"}},
            "web-2": "STOPPED",
            "db-1": {"status": "RUNNING", "zone": "FRA-A"},
            "old-1": "RECYCLE",
        },
    ) as simulator:
        yield simulator


@pytest.fixture
def sleeps() -> list[float]:
    """Backoff delays the client asked for (recorded, not slept, so retry tests stay fast)."""
    return []


@pytest.fixture
def make_client(sim: ZenlayerSimulator, sleeps: list[float]) -> Iterator[Callable[..., ZenlayerClient]]:
    """Build clients aimed at the simulator; closed after the test."""
    clients: list[ZenlayerClient] = []

    def make(**options: Any) -> ZenlayerClient:
        settings: dict[str, Any] = {
            "access_key_id": ACCESS_KEY_ID,
            "access_key_secret": ACCESS_KEY_SECRET,
            "timeout": 2.0,
            "backoff_seconds": BACKOFF,
            "sleep": sleeps.append,
        }
        settings.update(options)
        client = ZenlayerClient(settings.pop("base_url", sim.url), **settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., ZenlayerClient], sim: ZenlayerSimulator) -> ZenlayerClient:
    """A client with the right key pair, calling the simulator in process (its WSGI app): no socket needed."""
    return make_client(base_url="http://zenlayer.test", transport=httpx.WSGITransport(app=sim.wsgi_app))


def actions(sim: ZenlayerSimulator) -> list[str | None]:
    """Return the actions the simulator has seen, in order."""
    return [call.action for call in sim.calls]


# Each state-changing action: the client method that sends it, an instance it applies to in the `sim` fixture,
# and the status that instance is in once the call was carried out.
CHANGES = {
    "StartInstances": ("start_instances", "web-1", "BOOTING"),
    "StopInstances": ("stop_instances", "db-1", "STOPPING"),
    "RebootInstances": ("reboot_instances", "db-1", "REBOOT"),
}


def change(client: ZenlayerClient, action: str, ids: Any) -> str:
    """Call the client method that sends action."""
    return str(getattr(client, CHANGES[action][0])(ids))


def test_client_satisfies_the_domain_port(client: ZenlayerClient) -> None:
    assert isinstance(client, VmApi)  # every method of the port exists
    port_methods = [name for name in vars(VmApi) if not name.startswith("_") and callable(getattr(VmApi, name))]
    assert port_methods == [
        "start_instances",
        "stop_instances",
        "reboot_instances",
        "describe_instances_status",
        "describe_instances",
        "list_instances",
    ]
    for name in port_methods:
        ours, port = inspect.signature(getattr(ZenlayerClient, name)), inspect.signature(getattr(VmApi, name))
        assert list(ours.parameters) == list(port.parameters), name
        assert ours.return_annotation == port.return_annotation, name


def test_the_client_sends_zenlayers_headers_and_a_json_body() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"requestId": "r-1", "response": {"requestId": "r-1"}})

    with ZenlayerClient(
        "http://zenlayer.test",
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        transport=httpx.MockTransport(answer),
    ) as vm:
        assert vm.start_instances(["web-1", "web-2", "web-1"]) == "r-1"

    (request,) = seen
    assert request.method == "POST" and request.url.path == "/api/v2/vm"
    assert request.headers["X-ZC-Action"] == "StartInstances"
    assert request.headers["X-ZC-Service"] == "vm"
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.headers["Authorization"].startswith(f"ZC2-HMAC-SHA256 Credential={ACCESS_KEY_ID}")
    assert json.loads(request.content) == {"instanceIds": ["web-1", "web-2"]}


@pytest.mark.parametrize(
    ("action", "body"),
    [
        # Zenlayer reads an absent forceShutdown as a forced shutdown: the client must say false, every time.
        ("StopInstances", b'{"instanceIds":["web-1","web-2"],"forceShutdown":false}'),
        ("RebootInstances", b'{"instanceIds":["web-1","web-2"]}'),
    ],
)
def test_stop_and_reboot_send_their_action_and_exact_body(action: str, body: bytes) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"requestId": "r-1", "response": {"requestId": "r-1"}})

    with ZenlayerClient(
        "http://zenlayer.test",
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        transport=httpx.MockTransport(answer),
    ) as vm:
        assert change(vm, action, ["web-1", "web-2", "web-1"]) == "r-1"

    (request,) = seen
    assert request.headers["X-ZC-Action"] == action
    assert request.content == body


def test_stop_and_reboot_against_the_simulator(client: ZenlayerClient, sim: ZenlayerSimulator) -> None:
    sim.add_instance("app-1", "RUNNING")

    stopped = client.stop_instances(["db-1"])
    rebooted = client.reboot_instances(["app-1"])

    stop, reboot = sim.calls
    assert (stop.action, stop.instance_ids, stop.request_id) == ("StopInstances", ("db-1",), stopped)
    assert stop.force_shutdown is False  # a graceful shutdown, said explicitly
    assert (reboot.action, reboot.instance_ids, reboot.request_id) == ("RebootInstances", ("app-1",), rebooted)
    assert client.describe_instances_status(["db-1", "app-1"]) == {"db-1": "STOPPING", "app-1": "REBOOT"}


def test_describe_status_start_and_describe_instances(client: ZenlayerClient, sim: ZenlayerSimulator) -> None:
    assert client.describe_instances_status(["web-1", "db-1", "ghost"]) == {"web-1": "STOPPED", "db-1": "RUNNING"}

    request_id = client.start_instances(["web-1", "web-2"])

    assert request_id == sim.calls[-1].request_id
    assert sim.calls[-1].action == "StartInstances"
    assert sim.calls[-1].instance_ids == ("web-1", "web-2")
    found = client.describe_instances(["web-1", "db-1", "ghost"])
    assert found == {
        "web-1": InstanceInfo(
            "web-1",
            "web one",
            "BOOTING",
            "SEL-A",
            resource_group_id=resource_group_id("dev"),
            resource_group_name="dev",
            tags=(("team", "web"),),
            public_ips=("198.51.100.2",),
            private_ips=("10.0.0.2",),
            instance_type="z2a.cpu.1",
        ),
        "db-1": InstanceInfo(
            "db-1",
            "db-1",
            "RUNNING",
            "FRA-A",
            resource_group_id=resource_group_id("Default Resource Group"),
            resource_group_name="Default Resource Group",
            public_ips=("198.51.100.4",),
            private_ips=("10.0.0.4",),
            instance_type="z2a.cpu.1",
        ),
    }
    assert found["web-1"].ip == "198.51.100.2"


def test_list_instances_sends_the_filters_and_reads_pages(client: ZenlayerClient, sim: ZenlayerSimulator) -> None:
    for n in range(5):
        sim.add_instance(None, name=f"api-{n}", group="dev", tags={"team": "api", "env": "prod" if n % 2 else "dev"})

    page = client.list_instances(
        InstanceQuery(name="api-*", resource_group_id=resource_group_id("dev"), tags=(("env", "prod"),)),
        page_num=1,
        page_size=1,
    )
    second = client.list_instances(InstanceQuery(name="api-*", tags=(("env", "prod"),)), page_num=2, page_size=1)
    exact = client.list_instances(InstanceQuery(name="api-3", status="STOPPED"))
    everything = client.list_instances(InstanceQuery())

    assert page.total == 2 and [i.name for i in page.instances] == ["api-1"]
    assert second.total == 2 and [i.name for i in second.instances] == ["api-3"]
    assert [i.name for i in exact.instances] == ["api-3"] and exact.total == 1
    assert exact.instances[0].instance_id.isdigit() and len(exact.instances[0].instance_id) == 19  # opaque
    assert everything.total == 9
    assert sim.calls[0].params == {
        "pageSize": 1,
        "pageNum": 1,
        "instanceName": "api-*",
        "resourceGroupId": resource_group_id("dev"),
        "tags": [{"key": "env", "value": "prod"}],
    }
    with pytest.raises(ValueError):
        client.list_instances(InstanceQuery(), page_size=1001)


def test_describe_instances_tolerates_odd_optional_fields() -> None:
    row = {
        "instanceId": "i-1",
        "instanceStatus": "RUNNING",
        "instanceName": None,
        "tags": [{"key": "team", "value": None}, {"value": "x"}, "junk"],
        "publicIpAddresses": "198.51.100.9",
        "privateIpAddresses": ["10.0.0.9", 7],
    }

    info = instance_info(row)

    assert info == InstanceInfo("i-1", "", "RUNNING", tags=(("team", ""),), private_ips=("10.0.0.9",))
    assert info.ip == "10.0.0.9"


def test_describe_batches_by_100_with_matching_page_size(client: ZenlayerClient, sim: ZenlayerSimulator) -> None:
    ids = [f"bulk-{n:03d}" for n in range(250)]
    for instance_id in ids[::2]:
        sim.add_instance(instance_id, "RUNNING")

    statuses = client.describe_instances_status([*ids, ids[0]])
    infos = client.describe_instances(ids)

    assert statuses == {instance_id: "RUNNING" for instance_id in ids[::2]}
    assert set(infos) == set(ids[::2])
    sent = [(c.action, len(c.instance_ids), c.params["pageSize"], c.params["pageNum"]) for c in sim.calls]
    assert sent == [
        ("DescribeInstancesStatus", 100, 100, 1),
        ("DescribeInstancesStatus", 100, 100, 1),
        ("DescribeInstancesStatus", 50, 50, 1),
        ("DescribeInstances", 100, 100, 1),
        ("DescribeInstances", 100, 100, 1),
        ("DescribeInstances", 50, 50, 1),
    ]


def test_describe_with_no_ids_makes_no_call(client: ZenlayerClient, sim: ZenlayerSimulator) -> None:
    assert client.describe_instances_status([]) == {}
    assert client.describe_instances([]) == {}
    assert sim.calls == []


@pytest.mark.parametrize("action", list(CHANGES))
@pytest.mark.parametrize("count", [0, 101])
def test_changes_refuse_batches_outside_1_to_100(
    client: ZenlayerClient, sim: ZenlayerSimulator, count: int, action: str
) -> None:
    with pytest.raises(ValueError, match=f"{action} takes 1 to 100"):
        change(client, action, [f"i-{n}" for n in range(count)])
    assert sim.calls == []


@pytest.mark.parametrize("action", list(CHANGES))
def test_changes_take_100_ids_in_one_call(client: ZenlayerClient, sim: ZenlayerSimulator, action: str) -> None:
    _, _, during = CHANGES[action]
    source = "STOPPED" if action == "StartInstances" else "RUNNING"
    ids = [f"bulk-{n:03d}" for n in range(100)]
    for instance_id in ids:
        sim.add_instance(instance_id, source)

    change(client, action, ids)

    assert [(c.action, len(c.instance_ids)) for c in sim.calls] == [(action, 100)]
    assert set(client.describe_instances_status(ids).values()) == {during}


@pytest.mark.parametrize("action", list(CHANGES))
def test_changes_refuse_a_bare_string(client: ZenlayerClient, sim: ZenlayerSimulator, action: str) -> None:
    with pytest.raises(TypeError):
        change(client, action, "web-1")
    assert sim.calls == []


@pytest.mark.parametrize(
    ("ids", "error", "code", "status"),
    [
        (["web-1", "ghost"], InstanceNotFound, "INVALID_INSTANCE_NOT_FOUND", 404),
        (["web-1", "db-1"], InstanceNotStopped, "OPERATION_DENIED_INSTANCE_NOT_STOPPED", 403),
        (["old-1"], InstanceRecycled, "OPERATION_DENIED_INSTANCE_RECYCLED", 403),
    ],
)
def test_start_refusals_become_typed_errors_with_request_id(
    client: ZenlayerClient,
    sim: ZenlayerSimulator,
    ids: list[str],
    error: type[ZenlayerError],
    code: str,
    status: int,
) -> None:
    with pytest.raises(error) as caught:
        client.start_instances(ids)

    assert caught.value.code == code
    assert caught.value.http_status == status
    assert caught.value.action == "StartInstances"
    assert isinstance(caught.value, StateRefused)  # the group the watcher re-checks after
    assert not isinstance(caught.value, OutcomeUnknown)
    assert caught.value.request_id == sim.calls[-1].request_id
    assert caught.value.request_id in str(caught.value)
    assert len(sim.calls) == 1  # a refusal is final: never retried
    assert sim.status("web-1") == "STOPPED"  # all or nothing


@pytest.mark.parametrize(
    ("action", "ids", "error", "code", "status"),
    [
        ("StopInstances", ["db-1", "ghost"], InstanceNotFound, "INVALID_INSTANCE_NOT_FOUND", 404),
        ("StopInstances", ["db-1", "web-1"], InstanceNotRunning, "OPERATION_DENIED_INSTANCE_NOT_RUNNING", 403),
        ("StopInstances", ["db-1", "old-1"], InstanceRecycled, "OPERATION_DENIED_INSTANCE_RECYCLED", 403),
        ("RebootInstances", ["db-1", "ghost"], InstanceNotFound, "INVALID_INSTANCE_NOT_FOUND", 404),
        ("RebootInstances", ["db-1", "web-1"], InstanceStatusRefused, "OPERATION_DENIED_INSTANCE_STATUS", 403),
        ("RebootInstances", ["db-1", "old-1"], InstanceRecycled, "OPERATION_DENIED_INSTANCE_RECYCLED", 403),
    ],
)
def test_stop_and_reboot_refusals_become_typed_errors_with_request_id(
    client: ZenlayerClient,
    sim: ZenlayerSimulator,
    action: str,
    ids: list[str],
    error: type[ZenlayerError],
    code: str,
    status: int,
) -> None:
    with pytest.raises(error) as caught:
        change(client, action, ids)

    assert type(caught.value) is error
    assert (caught.value.code, caught.value.http_status, caught.value.action) == (code, status, action)
    assert isinstance(caught.value, StateRefused)  # nothing was done: the caller re-checks
    assert not isinstance(caught.value, OutcomeUnknown)
    assert caught.value.request_id == sim.calls[-1].request_id
    assert caught.value.request_id in str(caught.value)
    assert len(sim.calls) == 1  # a refusal is final: never retried
    assert sim.status("db-1") == "RUNNING"  # all or nothing


@pytest.mark.parametrize("action", list(CHANGES))
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"status": 500, "code": "INTERNAL_ERROR"}, ServerError),
        ({"status": 503, "body": "<html>unavailable</html>"}, ServerError),
        ({"status": 200, "body": '{"requestId": "r-1"}'}, MalformedResponse),
    ],
)
def test_a_change_whose_outcome_is_unknown_is_never_repeated(
    client: ZenlayerClient,
    sim: ZenlayerSimulator,
    sleeps: list[float],
    action: str,
    fault: dict[str, Any],
    error: type[ZenlayerError],
) -> None:
    sim.fail_next(action, times=5, **fault)

    with pytest.raises(error) as caught:
        change(client, action, [CHANGES[action][1]])

    assert isinstance(caught.value, OutcomeUnknown)
    assert caught.value.action == action
    assert actions(sim) == [action]
    assert sleeps == []


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"status": 401, "code": "AUTHFAILURE"}, AuthenticationFailed),
        ({"status": 403, "code": "INVALID_SIGNATURE"}, AuthenticationFailed),
        ({"status": 400, "code": "SIGNATURE_EXPIRED"}, AuthenticationFailed),
        ({"status": 403, "body": "<html>challenge</html>", "headers": {"cf-mitigated": "challenge"}}, AccessBlocked),
        ({"status": 451, "body": "<html>blocked</html>"}, AccessBlocked),
        ({"status": 400, "code": "INVALID_PARAMETER_VALUE"}, InvalidRequest),
        ({"status": 403, "code": "OPERATION_DENIED_SOMETHING_ELSE"}, InvalidRequest),
        ({"status": 502, "body": "<html>bad gateway</html>"}, ServerError),
        ({"status": 200, "body": "not json"}, MalformedResponse),
        ({"status": 200, "body": '{"requestId": "r-1"}'}, MalformedResponse),
        ({"status": 200, "body": '["response"]'}, MalformedResponse),
        ({"status": 200, "body": '{"response": {}}'}, MalformedResponse),
        ({"status": 302, "body": "", "headers": {"Location": "/elsewhere"}}, MalformedResponse),
    ],
)
def test_start_replies_map_to_typed_errors_without_retry(
    client: ZenlayerClient, sim: ZenlayerSimulator, fault: dict[str, Any], error: type[ZenlayerError]
) -> None:
    sim.fail_next("StartInstances", **fault)

    with pytest.raises(error) as caught:
        client.start_instances(["web-1"])

    assert type(caught.value) is error
    # The group the watcher must not retry a start after: only a reply that may hide a carried-out start.
    assert isinstance(caught.value, OutcomeUnknown) == (error in (ServerError, MalformedResponse))
    assert not isinstance(caught.value, StateRefused)
    assert caught.value.http_status == fault["status"]
    assert caught.value.action == "StartInstances"
    assert actions(sim) == ["StartInstances"]


@pytest.mark.parametrize(
    "body",
    [
        '{"requestId": "r", "response": {"totalCount": 1, "dataSet": "web-1"}}',
        '{"requestId": "r", "response": {"totalCount": 1, "dataSet": [{"instanceId": "web-1"}]}}',
        '{"requestId": "r", "response": {"totalCount": 1}}',
        '{"requestId": "r", "response": {"totalCount": "1", "dataSet": []}}',
    ],
)
def test_describe_reply_of_the_wrong_shape_is_malformed(
    client: ZenlayerClient, sim: ZenlayerSimulator, body: str
) -> None:
    sim.fail_next("DescribeInstancesStatus", status=200, body=body)

    with pytest.raises(MalformedResponse) as caught:
        client.describe_instances_status(["web-1"])

    assert caught.value.request_id == "r"
    assert len(sim.calls) == 1


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"access_key_secret": "wrong-secret"}, "INVALID_SIGNATURE"),
        ({"access_key_id": "AKIDOTHER"}, "INVALID_ACCESS_KEY_ID"),
        ({"clock": lambda: time.time() - 3600}, "SIGNATURE_EXPIRED"),
        ({"token": "zpat-wrong"}, "INVALID_TOKEN"),
    ],
)
def test_bad_credentials_raise_authentication_failed_without_retry(
    make_client: Callable[..., ZenlayerClient], sim: ZenlayerSimulator, options: dict[str, Any], code: str
) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        make_client(**options).describe_instances_status(["web-1"])

    assert caught.value.code == code
    assert caught.value.http_status == 401
    assert len(sim.calls) == 1


def test_token_auth_is_used_and_wins_over_the_key_pair() -> None:
    with (
        ZenlayerSimulator(token=TOKEN, instances={"web-1": "STOPPED"}) as sim,
        ZenlayerClient(sim.url, access_key_id="AKIDIGNORED", access_key_secret="ignored", token=Secret(TOKEN)) as vm,
    ):
        assert vm.auth_method == "token"
        assert vm.describe_instances_status(["web-1"]) == {"web-1": "STOPPED"}
        assert vm.start_instances(["web-1"]) == sim.calls[-1].request_id


@pytest.mark.parametrize("action", ["DescribeInstancesStatus", *CHANGES])
def test_throttling_is_retried_with_exponential_backoff_then_succeeds(
    client: ZenlayerClient, sim: ZenlayerSimulator, sleeps: list[float], action: str
) -> None:
    sim.fail_next(action, times=2, status=429, code="REQUEST_LIMIT_EXCEEDED", message="slow down")

    if action in CHANGES:
        _, instance_id, during = CHANGES[action]
        assert change(client, action, [instance_id]) == sim.calls[-1].request_id
        assert sim.status(instance_id) == during
    else:
        assert client.describe_instances_status(["web-1"]) == {"web-1": "STOPPED"}

    assert [c.http_status for c in sim.calls] == [429, 429, 200]
    assert sleeps == [BACKOFF, BACKOFF * 2]


def test_throttling_exhausted_raises_throttled(
    client: ZenlayerClient, sim: ZenlayerSimulator, sleeps: list[float]
) -> None:
    sim.fail_next("StartInstances", times=10, status=429, code="REQUEST_LIMIT_EXCEEDED", message="slow down")

    with pytest.raises(Throttled) as caught:
        client.start_instances(["web-1"])

    assert caught.value.code == "REQUEST_LIMIT_EXCEEDED"
    assert caught.value.request_id == sim.calls[-1].request_id
    assert len(sim.calls) == 4  # the first try and max_retries=3
    assert sleeps == [BACKOFF, BACKOFF * 2, BACKOFF * 4]


def test_retry_after_is_honoured_but_capped(
    make_client: Callable[..., ZenlayerClient], sim: ZenlayerSimulator, sleeps: list[float]
) -> None:
    client = make_client(max_backoff_seconds=5)
    sim.fail_next("DescribeInstancesStatus", status=429, code="REQUEST_LIMIT_EXCEEDED", retry_after=2)
    sim.fail_next("DescribeInstancesStatus", status=429, code="REQUEST_LIMIT_EXCEEDED", retry_after=3600)
    sim.fail_next("DescribeInstancesStatus", status=429, code="REQUEST_LIMIT_EXCEEDED", headers={"Retry-After": "x"})

    assert client.describe_instances_status(["web-1"]) == {"web-1": "STOPPED"}

    assert sleeps == [2, 5, BACKOFF * 4]


def test_429_without_a_code_is_still_throttling(client: ZenlayerClient, sim: ZenlayerSimulator) -> None:
    sim.fail_next("DescribeInstancesStatus", times=10, status=429, body="Too Many Requests")

    with pytest.raises(Throttled):
        client.describe_instances_status(["web-1"])
    assert len(sim.calls) == 4


def test_server_errors_on_describe_are_retried(
    client: ZenlayerClient, sim: ZenlayerSimulator, sleeps: list[float]
) -> None:
    sim.fail_next("DescribeInstances", times=2, status=503, code="SERVICE_UNAVAILABLE")

    assert client.describe_instances(["web-1"])["web-1"].status == "STOPPED"
    assert [c.http_status for c in sim.calls] == [503, 503, 200]
    assert sleeps == [BACKOFF, BACKOFF * 2]


def test_server_errors_on_describe_give_up_after_max_retries(client: ZenlayerClient, sim: ZenlayerSimulator) -> None:
    sim.fail_next("DescribeInstancesStatus", times=10, status=500, code="INTERNAL_ERROR", message="boom")

    with pytest.raises(ServerError) as caught:
        client.describe_instances_status(["web-1"])

    assert caught.value.code == "INTERNAL_ERROR"
    assert caught.value.request_id == sim.calls[-1].request_id
    assert len(sim.calls) == 4


def test_server_error_on_start_is_not_retried(
    client: ZenlayerClient, sim: ZenlayerSimulator, sleeps: list[float]
) -> None:
    sim.fail_next("StartInstances", times=5, status=500, code="INTERNAL_ERROR", message="boom")

    with pytest.raises(ServerError) as caught:
        client.start_instances(["web-1"])

    assert caught.value.request_id == sim.calls[0].request_id
    assert actions(sim) == ["StartInstances"]
    assert sleeps == []


@pytest.mark.parametrize("action", list(CHANGES))
def test_a_change_that_times_out_is_network_error_within_the_timeout_and_not_retried(
    make_client: Callable[..., ZenlayerClient], sim: ZenlayerSimulator, sleeps: list[float], action: str
) -> None:
    client = make_client(timeout=0.3)
    _, instance_id, during = CHANGES[action]
    # The simulator carries the call out and then does not answer: the outcome is unknown to the client.
    sim.fail_next(action, status=None, hang_seconds=10)

    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        change(client, action, [instance_id])

    assert time.monotonic() - started < 5  # given up on its timeout, not after the 10 s hang
    assert caught.value.action == action
    assert isinstance(caught.value, OutcomeUnknown)
    assert actions(sim) == [action]
    assert sim.status(instance_id) == during
    assert sleeps == []


def test_describe_timeout_is_retried(
    make_client: Callable[..., ZenlayerClient], sim: ZenlayerSimulator, sleeps: list[float]
) -> None:
    client = make_client(timeout=0.3)
    sim.fail_next("DescribeInstancesStatus", status=None, hang_seconds=10)

    assert client.describe_instances_status(["web-1"]) == {"web-1": "STOPPED"}
    assert len(sim.calls) == 2
    assert sleeps == [BACKOFF]


def test_hanging_server_gives_network_error_once_retries_run_out(
    make_client: Callable[..., ZenlayerClient], sim: ZenlayerSimulator
) -> None:
    client = make_client(timeout=0.2, max_retries=1)
    sim.fail_next(None, times=5, status=500, hang_seconds=10)

    started = time.monotonic()
    with pytest.raises(NetworkError, match="did not answer"):
        client.describe_instances_status(["web-1"])

    assert time.monotonic() - started < 5  # two 0.2 s timeouts, not a 10 s hang
    assert len(sim.calls) == 2


@pytest.mark.parametrize("action", [*CHANGES, "DescribeInstancesStatus"])
def test_unreachable_server_is_network_error(
    make_client: Callable[..., ZenlayerClient], sleeps: list[float], action: str
) -> None:
    client = make_client(base_url=closed_port_url())

    with pytest.raises(NetworkError, match="could not reach"):
        if action in CHANGES:
            change(client, action, ["web-1"])
        else:
            client.describe_instances_status(["web-1"])

    assert len(sleeps) == (0 if action in CHANGES else 3)  # a change might have got through: never repeated


def test_concurrent_starts_of_one_instance_succeed_once(client: ZenlayerClient, sim: ZenlayerSimulator) -> None:
    outcomes: list[str] = []
    lock = threading.Lock()

    def start() -> None:
        try:
            client.start_instances(["web-2"])
            result = "started"
        except InstanceNotStopped:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(outcomes) == ["refused"] * 7 + ["started"]


def test_from_settings_builds_a_working_client(sim: ZenlayerSimulator) -> None:
    settings = Settings(
        zenlayer_api_url=sim.url,
        zenlayer_access_key_id=ACCESS_KEY_ID,
        zenlayer_access_key_secret=Secret(ACCESS_KEY_SECRET),
    )
    with ZenlayerClient.from_settings(settings, timeout=2.0) as vm:
        assert vm.describe_instances_status(["web-2"]) == {"web-2": "STOPPED"}


@pytest.mark.parametrize(
    "credentials",
    [{}, {"access_key_id": ACCESS_KEY_ID}, {"access_key_secret": ACCESS_KEY_SECRET}, {"token": ""}],
)
def test_client_needs_credentials(credentials: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="credentials"):
        ZenlayerClient("http://127.0.0.1:1", **credentials)


def test_secrets_stay_out_of_repr_errors_and_logs(
    make_client: Callable[..., ZenlayerClient], sim: ZenlayerSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    sim.fail_next("StartInstances", status=429, code="REQUEST_LIMIT_EXCEEDED")
    client.start_instances(["web-1"])
    with pytest.raises(InstanceNotStopped) as caught:
        client.start_instances(["web-1"])
    with pytest.raises(AuthenticationFailed) as auth_error:
        make_client(access_key_secret="wrong-" + ACCESS_KEY_SECRET).describe_instances_status(["web-1"])

    texts = [repr(client), str(caught.value), repr(caught.value), str(auth_error.value), caplog.text]
    assert not any(ACCESS_KEY_SECRET in text for text in texts)
    assert "Authorization" not in caplog.text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("bot.zenlayer.")]
    assert any("StartInstances -> HTTP 200" in m and sim.calls[1].request_id in m and " ms" in m for m in ours)
    assert any("retry 1/3" in m for m in ours)
