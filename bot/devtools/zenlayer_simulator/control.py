"""The control routes under /_simulator/ (plain JSON, no authentication), as a route table."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from bot.devtools.zenlayer_simulator.instances import DEFAULT_ZONE
from bot.devtools.zenlayer_simulator.replies import ApiError, Reply, json_bytes
from bot.devtools.zenlayer_simulator.state import TIMINGS, SimulatedCloud

if TYPE_CHECKING:
    from bot.devtools.zenlayer_simulator.server import ZenlayerSimulator

CONTROL_PREFIX = "/_simulator/"

# A route's handler gets the simulator, the request body and the rest of the path after the route's prefix.
Handler = Callable[["ZenlayerSimulator", bytes, str], dict[str, Any]]


class ControlError(Exception):
    """A refused control request (with Zenlayer's code when the simulated cloud refused it)."""

    def __init__(self, status: int, message: str, *, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def handle_control(sim: ZenlayerSimulator, method: str, path: str, body: bytes) -> Reply:
    """Answer one request under /_simulator/."""
    route = path[len(CONTROL_PREFIX) :].strip("/")
    try:
        payload = _route(method, route)(sim, body, route)
    except ControlError as error:
        payload = {"error": str(error)} if error.code is None else {"error": str(error), "code": error.code}
        return Reply(error.status, json_bytes(payload))
    return Reply(200, json_bytes(payload))


def _route(method: str, route: str) -> Handler:
    """Return the handler for a method and route; ControlError 404 when there is none."""
    handler = ROUTES.get((method, route))
    if handler is None:
        handler = next(
            (h for (m, prefix), h in PREFIX_ROUTES.items() if m == method and route.startswith(prefix)), None
        )
    if handler is None:
        raise ControlError(404, f"no control endpoint {method} {CONTROL_PREFIX}{route}")
    return handler


def _json(body: bytes) -> Any:
    """Parse a control request body."""
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise ControlError(400, "body is not JSON") from None


def _health(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    return {"ok": True}


def _list_instances(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    return {"instances": sim.summaries()}


def _put_instances(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    data = _json(body)
    specs = data.get("instances", [data]) if isinstance(data, dict) else None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise ControlError(400, "body must be an instance object or {'instances': [objects]}")
    return {"instances": [_upsert(sim, spec) for spec in specs]}


def _delete_instance(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    try:
        sim.remove_instance(unquote(route[len("instances/") :]))
    except KeyError:
        raise ControlError(404, "no such instance") from None
    return {"ok": True}


def _list_calls(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    return {"calls": [call.to_json() for call in sim.calls]}


def _clear_calls(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    sim.clear_calls()
    return {"ok": True}


def _list_faults(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    return {"faults": [fault.to_json() for fault in sim.faults]}


def _add_fault(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    data = _json(body)
    if not isinstance(data, dict) or "action" not in data:
        raise ControlError(400, "body must be an object with at least 'action'")
    try:
        sim.fail_next(**data)
    except (TypeError, ValueError) as exc:
        raise ControlError(400, f"bad fault: {exc}") from None
    return {"faults": len(sim.faults)}


def _clear_faults(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    sim.reset_faults()
    return {"ok": True}


def _get_settings(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    return {name: getattr(sim, name) for name in TIMINGS}


def _set_settings(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    data = _json(body)
    if not isinstance(data, dict) or not data or not set(data) <= set(TIMINGS):
        raise ControlError(400, f"body must be an object with some of {', '.join(TIMINGS)}")
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ControlError(400, f"{name} must be a non-negative number")
    for name, value in data.items():
        setattr(sim, name, value)
    return _get_settings(sim, body, route)


def _console(sim: ZenlayerSimulator, body: bytes, route: str) -> dict[str, Any]:
    act = CONSOLE.get(route[len("console/") :])
    data = _json(body)
    ids = data.get("instanceIds") if isinstance(data, dict) else None
    if act is None or not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        verbs = "|".join(CONSOLE)
        raise ControlError(400, f'use POST {CONTROL_PREFIX}console/{{{verbs}}} with {{"instanceIds": [ids]}}')
    try:
        act(sim, *ids)
    except ApiError as error:
        raise ControlError(error.status, error.message, code=error.code) from None
    wanted = set(ids)
    return {"instances": [row for row in sim.summaries() if row["instanceId"] in wanted]}


# What someone in Zenlayer's console can do behind the bot's back.
CONSOLE: dict[str, Callable[..., None]] = {
    "start": SimulatedCloud.console_start,
    "stop": SimulatedCloud.console_stop,
    "reboot": SimulatedCloud.console_reboot,
    "recycle": SimulatedCloud.console_recycle,
    "release": SimulatedCloud.console_release,
}

ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "health"): _health,
    ("GET", "instances"): _list_instances,
    ("POST", "instances"): _put_instances,
    ("GET", "calls"): _list_calls,
    ("DELETE", "calls"): _clear_calls,
    ("GET", "faults"): _list_faults,
    ("POST", "faults"): _add_fault,
    ("DELETE", "faults"): _clear_faults,
    ("GET", "settings"): _get_settings,
    ("POST", "settings"): _set_settings,
}
PREFIX_ROUTES: dict[tuple[str, str], Handler] = {
    ("DELETE", "instances/"): _delete_instance,
    ("POST", "console/"): _console,
}


def _upsert(sim: ZenlayerSimulator, spec: dict[str, Any]) -> dict[str, Any]:
    """Add or update one instance from a control request; return its view."""
    instance_id = spec.get("instanceId")
    fields = ("status", "name", "zone", "resourceGroup", "instanceType")
    for key, value in (("instanceId", instance_id), *((k, spec.get(k)) for k in fields)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ControlError(400, f"{key} must be a non-empty string")
    if instance_id is None and spec.get("name") is None:
        raise ControlError(400, "instanceId (or, for a new instance with a made-up opaque id, name) is required")
    tags = spec.get("tags")
    if tags is not None and not isinstance(tags, dict | list):
        raise ControlError(400, "tags must be an object {key: value} or a list of {key, value}")
    try:
        if instance_id is None or not sim.has_instance(instance_id):
            instance_id = sim.add_instance(
                instance_id,
                spec.get("status") or "STOPPED",
                name=spec.get("name"),
                zone=spec.get("zone") or DEFAULT_ZONE,
                group=spec.get("resourceGroup"),
                tags=tags,
                instance_type=spec.get("instanceType"),
            )
        else:
            sim.rename_instance(
                instance_id, name=spec.get("name"), zone=spec.get("zone"), group=spec.get("resourceGroup"), tags=tags
            )
            if spec.get("status"):
                sim.set_status(instance_id, spec["status"])
    except ValueError as exc:
        raise ControlError(400, str(exc)) from None
    return next(s for s in sim.summaries() if s["instanceId"] == instance_id)
