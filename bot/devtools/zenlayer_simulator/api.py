"""The API path: check the headers, apply scripted faults, run the action, and record the call."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from email.message import Message
from typing import TYPE_CHECKING, Any

from bot.devtools.zenlayer_simulator.auth import authenticate
from bot.devtools.zenlayer_simulator.instances import Filters
from bot.devtools.zenlayer_simulator.replies import ApiError, Reply, json_bytes
from bot.devtools.zenlayer_simulator.script import Fault

if TYPE_CHECKING:
    from bot.devtools.zenlayer_simulator.server import ZenlayerSimulator

API_PATH = "/api/v2/vm"
SERVICE = "vm"
SUPPORTED_VERSIONS = ("2026-04-01", "2023-03-13")
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000
MAX_BATCH = 100  # instanceIds per Describe* call


def handle_api(sim: ZenlayerSimulator, headers: Message, body: bytes) -> Reply:
    """Answer one POST to the API path: authenticate, apply faults, run the action, record the call."""
    request_id = str(uuid.uuid4())
    action = headers.get("X-ZC-Action")
    recorded_params = _params_for_record(body)
    instance_ids = tuple(str(i) for i in recorded_params.get("instanceIds") or () if isinstance(i, str))
    fault: Fault | None = None
    try:
        authenticate(sim.credentials, headers, body, sim.max_skew_seconds, now=sim.now())
        _check_headers(headers, action)
        fault = sim.take_fault(action)
        if fault is not None and not fault.answers_normally:
            reply = _fault_reply(fault, request_id)
            code = None if fault.body else fault.code
            sim.record(action, instance_ids, recorded_params, reply.status, request_id, code)
            sim.hang(fault.hang_seconds)
            return reply
        result = ACTIONS[str(action)](sim, _parse_params(body))
    except ApiError as error:
        sim.record(action, instance_ids, recorded_params, error.status, request_id, error.code)
        payload = {"requestId": request_id, "code": error.code, "message": error.message}
        return Reply(error.status, json_bytes(payload))
    sim.record(action, instance_ids, recorded_params, 200, request_id, None)
    if fault is not None:
        sim.hang(fault.hang_seconds)
    return Reply(200, json_bytes({"requestId": request_id, "response": {"requestId": request_id, **result}}))


def _start(sim: ZenlayerSimulator, params: dict[str, Any]) -> dict[str, Any]:
    """StartInstances: STOPPED -> BOOTING -> RUNNING, all or nothing."""
    sim.change("StartInstances", _required_ids(params))
    return {}


def _stop(sim: ZenlayerSimulator, params: dict[str, Any]) -> dict[str, Any]:
    """StopInstances: RUNNING -> STOPPING -> STOPPED, all or nothing (the call log keeps forceShutdown as sent)."""
    force = params.get("forceShutdown")
    if force is not None and not isinstance(force, bool):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "forceShutdown must be a boolean")
    sim.change("StopInstances", _required_ids(params))
    return {}


def _reboot(sim: ZenlayerSimulator, params: dict[str, Any]) -> dict[str, Any]:
    """RebootInstances: RUNNING -> REBOOT -> RUNNING, all or nothing."""
    sim.change("RebootInstances", _required_ids(params))
    return {}


def _describe_status(sim: ZenlayerSimulator, params: dict[str, Any]) -> dict[str, Any]:
    """DescribeInstancesStatus: a page of ids and statuses."""
    rows, total = _page(sim, params)
    return {"totalCount": total, "dataSet": [{"instanceId": r.instance_id, "instanceStatus": r.status} for r in rows]}


def _describe(sim: ZenlayerSimulator, params: dict[str, Any]) -> dict[str, Any]:
    """DescribeInstances: a page of full instance rows, filtered as the API documents."""
    rows, total = _page(sim, params, _filters(params))
    return {"totalCount": total, "dataSet": [r.describe() for r in rows]}


ACTIONS: dict[str, Callable[[ZenlayerSimulator, dict[str, Any]], dict[str, Any]]] = {
    "StartInstances": _start,
    "StopInstances": _stop,
    "RebootInstances": _reboot,
    "DescribeInstancesStatus": _describe_status,
    "DescribeInstances": _describe,
}


def _page(sim: ZenlayerSimulator, params: dict[str, Any], where: Filters | None = None) -> tuple[list[Any], int]:
    """Return the requested page of matching instances and how many match in all."""
    ids = _id_list(params, required=False)
    if ids is not None and len(ids) > MAX_BATCH:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"instanceIds must hold at most {MAX_BATCH} ids")
    page_size = _int_param(params, "pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page_num = _int_param(params, "pageNum", 1, 1, 1_000_000)
    return sim.page(ids, page_size, page_num, where)


def _filters(params: dict[str, Any]) -> Filters:
    """Read DescribeInstances' filters: instanceName, resourceGroupId, zoneId, instanceStatus, tagKeys, tags."""
    text: dict[str, str | None] = {}
    for name in ("instanceName", "resourceGroupId", "zoneId", "instanceStatus"):
        value = params.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"{name} must be a non-empty string")
        text[name] = value
    keys = params.get("tagKeys") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "tagKeys must be a list of strings")
    tags = params.get("tags") or []
    if not isinstance(tags, list) or not all(
        isinstance(t, dict) and isinstance(t.get("key"), str) and isinstance(t.get("value", ""), str) for t in tags
    ):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "tags must be a list of {key, value} objects")
    return Filters(
        name=text["instanceName"],
        resource_group_id=text["resourceGroupId"],
        zone=text["zoneId"],
        status=text["instanceStatus"],
        tag_keys=tuple(keys),
        tags=tuple((t["key"], t.get("value", "")) for t in tags),
    )


def _check_headers(headers: Message, action: str | None) -> None:
    """Refuse requests for another service, an unknown version or action, or a body that is not JSON."""
    if headers.get("X-ZC-Service") != SERVICE:
        raise ApiError(400, "INVALID_SERVICE", f"X-ZC-Service must be {SERVICE!r}")
    version = headers.get("X-ZC-Version")
    if version not in SUPPORTED_VERSIONS:
        raise ApiError(400, "INVALID_VERSION", f"X-ZC-Version {version!r} is not supported")
    if action not in ACTIONS:
        raise ApiError(400, "INVALID_ACTION", f"action {action!r} is not supported")
    media_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(400, "INVALID_CONTENT_TYPE", "Content-Type must be application/json")


def _fault_reply(fault: Fault, request_id: str) -> Reply:
    """Build the reply a fault scripts."""
    status = fault.status if fault.status is not None else 200
    if fault.body is not None:
        headers = {"Content-Type": "application/json", **fault.headers}
        return Reply(status, fault.body.encode("utf-8"), headers)
    payload = {"requestId": request_id, "code": fault.code, "message": fault.message}
    return Reply(status, json_bytes(payload), dict(fault.headers))


def _parse_params(body: bytes) -> dict[str, Any]:
    """Parse an API body, which must be a JSON object."""
    try:
        params = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "INVALID_PARAMETER", "the request body is not JSON") from None
    if not isinstance(params, dict):
        raise ApiError(400, "INVALID_PARAMETER", "the request body must be a JSON object")
    return params


def _required_ids(params: dict[str, Any]) -> list[str]:
    """Return instanceIds, which must be present."""
    ids = _id_list(params, required=True)
    assert ids is not None
    return ids


def _id_list(params: dict[str, Any], *, required: bool) -> list[str] | None:
    """Return instanceIds as a list of strings; None when absent and optional."""
    ids = params.get("instanceIds")
    if ids is None:
        if required:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "instanceIds is required")
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "instanceIds must be a list of ids")
    return ids


def _int_param(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    """Return an integer parameter within [low, high]."""
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"{name} must be an integer from {low} to {high}")
    return value


def _params_for_record(body: bytes) -> dict[str, Any]:
    """Best-effort parameters of a request, for the call log (even when the request is refused)."""
    try:
        params = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(params, dict):
        return {}
    if not isinstance(params.get("instanceIds"), list):
        params.pop("instanceIds", None)
    return params
