"""A local, Zenlayer-compatible VM API for tests, demos and staging — it checks signatures like the real one.

Serves ``POST /api/v2/vm`` with the ``X-ZC-Action`` header set to ``StartInstances``, ``StopInstances``,
``DescribeInstancesStatus`` or ``DescribeInstances``, using the envelopes of Zenlayer API 2.0:
success ``{"requestId", "response": {"requestId", ...}}`` with HTTP 200, failure ``{"requestId", "code",
"message"}`` with HTTP 4xx/5xx. Every request must carry either a ZC2-HMAC-SHA256 signature made with the
configured key pair (verified over the raw body bytes with the received Host and Content-Type, timestamp within
``max_skew_seconds``) or ``Authorization: Bearer <token>`` matching the configured token; a simulator without any
credentials refuses to start, because an auth-less fake would hide signing bugs.

Instances move ``STOPPED -> BOOTING -> RUNNING`` after ``StartInstances`` and ``RUNNING -> STOPPING -> STOPPED``
after ``StopInstances``, each step taking ``boot_seconds`` (computed lazily from a monotonic clock, so reads are
deterministic and need no timer threads). ``StartInstances`` is all-or-nothing: one missing id gives 404
``INVALID_INSTANCE_NOT_FOUND``, one recycled id 403 ``OPERATION_DENIED_INSTANCE_RECYCLED``, one id not STOPPED 403
``OPERATION_DENIED_INSTANCE_NOT_STOPPED``; an empty list or more than 100 ids 400 ``INVALID_PARAMETER_VALUE``.

Control endpoints (plain JSON, no authentication — bind to loopback), for scripting a simulator that runs in
another process. Error replies are ``{"error": "..."}`` with HTTP 400 or 404.

``GET /_simulator/health``
    ``{"ok": true}``.
``GET /_simulator/instances``
    ``{"instances": [{"instanceId", "instanceName", "instanceStatus", "zoneId"}, ...]}``.
``POST /_simulator/instances``
    Body ``{"instanceId": "web-1", "status": "STOPPED", "name": "web-1", "zone": "SEL-A"}`` (all but
    ``instanceId`` optional) or ``{"instances": [<such objects>]}``. Adds new instances; for existing ones sets
    only the fields given (a status is set at once, cancelling any transition). Replies with the instances.
``DELETE /_simulator/instances/<id>``
    Removes an instance (404 when unknown).
``GET /_simulator/calls`` / ``DELETE /_simulator/calls``
    ``{"calls": [{"action", "instanceIds", "httpStatus", "code", "requestId", "time"}, ...]}`` for every
    request to the API path, oldest first / forget them.
``POST /_simulator/faults``
    Body with the keyword arguments of :meth:`ZenlayerSimulator.fail_next`: ``{"action": "StartInstances",
    "times": 1, "status": 500, "code": "INTERNAL_ERROR", "message": "...", "hang_seconds": null,
    "body": null, "headers": {}, "retry_after": null}``. Replies ``{"faults": <number queued>}``.
``GET /_simulator/faults`` / ``DELETE /_simulator/faults``
    List the queued faults / drop them all.
``GET /_simulator/settings`` / ``POST /_simulator/settings``
    ``{"boot_seconds": 5.0}``: read or change how long transitions take (applies to later starts and stops).

Run it with ``vm-bot simulator --port 8089 --instance web-1 --instance db-1:RUNNING`` and the key pair (or token)
in ``ZENLAYER_ACCESS_KEY_ID`` / ``ZENLAYER_ACCESS_KEY_SECRET`` (or ``ZENLAYER_TOKEN``).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import logging
import selectors
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from bot.config import Secret
from bot.zenlayer import signing

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

API_PATH = "/api/v2/vm"
CONTROL_PREFIX = "/_simulator/"
SERVICE = "vm"
SUPPORTED_VERSIONS = ("2026-04-01", "2023-03-13")
ACTIONS = ("StartInstances", "StopInstances", "DescribeInstancesStatus", "DescribeInstances")
KNOWN_STATUSES = (
    "PENDING",
    "DEPLOYING",
    "REBUILDING",
    "REBOOT",
    "RUNNING",
    "STOPPED",
    "BOOTING",
    "RELEASING",
    "STOPPING",
    "RECYCLE",
    "RECYCLING",
    "CREATE_FAILED",
    "IMAGING",
)
MAX_BATCH = 100
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000
MAX_BODY_BYTES = 1 << 20
DEFAULT_INSTANCES: Mapping[str, str] = {"demo-web-1": "STOPPED", "demo-web-2": "STOPPED", "demo-db-1": "STOPPED"}


@dataclass(frozen=True)
class SimulatedCall:
    """One request the simulator answered on the API path."""

    action: str | None
    instance_ids: tuple[str, ...]
    http_status: int
    request_id: str
    code: str | None
    time: float
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Return the call as the control API shows it."""
        return {
            "action": self.action,
            "instanceIds": list(self.instance_ids),
            "params": self.params,
            "httpStatus": self.http_status,
            "code": self.code,
            "requestId": self.request_id,
            "time": self.time,
        }


@dataclass
class Fault:
    """A scripted misbehaviour for the next `times` calls of `action` (None or "*" for any action)."""

    action: str | None
    times: int
    status: int | None
    code: str
    message: str
    hang_seconds: float | None
    body: str | None
    headers: dict[str, str]

    def matches(self, action: str | None) -> bool:
        """Return True when this fault applies to a call of action."""
        return self.action in (None, "*") or self.action == action

    @property
    def answers_normally(self) -> bool:
        """True when the call is carried out as usual and only the reply is delayed."""
        return self.body is None and (self.status is None or self.status == 200)

    def to_json(self) -> dict[str, Any]:
        """Return the fault as the control API shows it."""
        return {
            "action": self.action,
            "times": self.times,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "hang_seconds": self.hang_seconds,
            "body": self.body,
            "headers": dict(self.headers),
        }


@dataclass
class _Instance:
    """One simulated VM; `pending` is the (status, monotonic time) it reaches next."""

    instance_id: str
    name: str
    zone: str
    status: str
    index: int
    pending: tuple[str, float] | None = None

    def settle(self, now: float) -> None:
        """Apply a transition whose time has come."""
        if self.pending is not None and now >= self.pending[1]:
            self.status = self.pending[0]
            self.pending = None

    def summary(self) -> dict[str, Any]:
        """Return the control API's view of the instance."""
        return {
            "instanceId": self.instance_id,
            "instanceName": self.name,
            "instanceStatus": self.status,
            "zoneId": self.zone,
        }

    def describe(self) -> dict[str, Any]:
        """Return a DescribeInstances dataSet row."""
        octet = self.index % 250 + 2
        return {
            **self.summary(),
            "instanceType": "z2a.cpu.1",
            "cpuCount": 2,
            "memory": 4,
            "imageId": "img-ubuntu-2204",
            "imageName": "Ubuntu 22.04",
            "instanceChargeType": "POSTPAID",
            # Documentation address ranges: nothing real is ever named.
            "publicIpAddresses": [f"198.51.100.{octet}"],
            "privateIpAddresses": [f"10.0.0.{octet}"],
            "createTime": "2026-01-01T00:00:00Z",
        }


class _ApiError(Exception):
    """An error reply the API path gives: HTTP status, Zenlayer code and message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class _Reply:
    """What the HTTP handler writes back."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json_bytes(payload: Any) -> bytes:
    """Serialise a reply body."""
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _reveal(value: str | Secret | None) -> str | None:
    """Return a secret's text, treating empty as absent."""
    if isinstance(value, Secret):
        value = value.reveal()
    return value or None


class ZenlayerSimulator:
    """A threaded HTTP server that behaves like Zenlayer's VM API, with Python-side and HTTP controls."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        boot_seconds: float = 5.0,
        access_key_id: str | None = None,
        access_key_secret: str | Secret | None = None,
        token: str | Secret | None = None,
        instances: Mapping[str, str | Mapping[str, Any]] | None = None,
        max_skew_seconds: float = 300,
        max_recorded_calls: int = 100_000,
    ):
        self._key_id = access_key_id or None
        self._key_secret = _reveal(access_key_secret)
        self._token = _reveal(token)
        if (self._key_id is None) != (self._key_secret is None):
            raise ValueError("the simulator needs both an access key id and its secret, or neither")
        if self._key_id is None and self._token is None:
            raise ValueError(
                "the simulator needs credentials to check (an access key id and secret, and/or a token): "
                "an auth-less simulator would hide signing bugs"
            )
        if boot_seconds < 0:
            raise ValueError("boot_seconds must not be negative")
        self._bind_host = host
        self._bind_port = port
        self._boot_seconds = float(boot_seconds)
        self.max_skew_seconds = max_skew_seconds
        self._lock = threading.Lock()
        self._instances: dict[str, _Instance] = {}
        self._next_index = 0
        self._calls: deque[SimulatedCall] = deque(maxlen=max_recorded_calls)
        self._faults: list[Fault] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for instance_id, spec in (instances or {}).items():
            if isinstance(spec, str):
                self.add_instance(instance_id, spec)
            else:
                self.add_instance(
                    instance_id,
                    spec.get("status", "STOPPED"),
                    name=spec.get("name"),
                    zone=spec.get("zone", "SEL-A"),
                )

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"ZenlayerSimulator({where}, instances={len(self._instances)})"

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> ZenlayerSimulator:
        """Bind the port and serve in a background daemon thread; return self."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server_class = _Server6 if ":" in self._bind_host else _Server
        server = server_class((self._bind_host, self._bind_port), _Handler)
        server.simulator = self
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_until_stopped, name="zenlayer-simulator", daemon=True)
        self._thread.start()
        log.debug("zenlayer simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, wake hanging replies, close every connection; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.wake()
        if thread is not None:
            thread.join(timeout=5)
        server.server_close()
        server.close_connections()
        self._server = None
        self._thread = None

    def __enter__(self) -> ZenlayerSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port actually bound (useful with port=0)."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to give the client, e.g. http://127.0.0.1:54321."""
        host = self._bind_host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    # --- Python-side controls ---------------------------------------------------------------------------------

    @property
    def boot_seconds(self) -> float:
        """How long BOOTING and STOPPING last; a change applies to later starts and stops."""
        with self._lock:
            return self._boot_seconds

    @boot_seconds.setter
    def boot_seconds(self, value: float) -> None:
        if value < 0:
            raise ValueError("boot_seconds must not be negative")
        with self._lock:
            self._boot_seconds = float(value)

    def add_instance(
        self, instance_id: str, status: str = "STOPPED", name: str | None = None, zone: str = "SEL-A"
    ) -> None:
        """Add an instance (replacing one with the same id)."""
        if not isinstance(instance_id, str) or not instance_id:
            raise ValueError("instance id must be a non-empty string")
        with self._lock:
            existing = self._instances.get(instance_id)
            index = existing.index if existing else self._next_index
            if existing is None:
                self._next_index += 1
            self._instances[instance_id] = _Instance(
                instance_id=instance_id, name=name or instance_id, zone=zone, status=status.upper(), index=index
            )

    def remove_instance(self, instance_id: str) -> None:
        """Forget an instance; KeyError when unknown."""
        with self._lock:
            del self._instances[instance_id]

    def set_status(self, instance_id: str, status: str) -> None:
        """Put an instance in a status at once, cancelling any transition; KeyError when unknown."""
        with self._lock:
            instance = self._instances[instance_id]
            instance.status = status.upper()
            instance.pending = None

    def status(self, instance_id: str) -> str:
        """Return an instance's current status; KeyError when unknown."""
        with self._lock:
            instance = self._instances[instance_id]
            instance.settle(time.monotonic())
            return instance.status

    def statuses(self) -> dict[str, str]:
        """Return {id: current status} for every instance."""
        return {row["instanceId"]: row["instanceStatus"] for row in self._summaries()}

    @property
    def calls(self) -> list[SimulatedCall]:
        """Requests answered on the API path, oldest first (a copy; only the latest max_recorded_calls kept)."""
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        """Forget the recorded calls."""
        with self._lock:
            self._calls.clear()

    def fail_next(
        self,
        action: str | None,
        times: int = 1,
        status: int | None = 500,
        code: str = "INTERNAL_ERROR",
        message: str = "simulated failure",
        hang_seconds: float | None = None,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Make the next `times` authenticated calls of action (None or "*": any) misbehave.

        With a body, reply those exact bytes with `status`; with status 200 (or None) and no body, carry the
        call out normally; otherwise reply an error envelope with `code` and `message`. `hang_seconds` delays
        the reply (after doing the work, for a normal answer: the caller may time out with the change made).
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        extra = {str(k): str(v) for k, v in (headers or {}).items()}
        if retry_after is not None:
            extra["Retry-After"] = f"{retry_after:g}"
        with self._lock:
            self._faults.append(
                Fault(
                    action=action,
                    times=times,
                    status=status,
                    code=code,
                    message=message,
                    hang_seconds=hang_seconds,
                    body=body,
                    headers=extra,
                )
            )

    def reset_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """The faults still queued (a copy)."""
        with self._lock:
            return [Fault(**{**f.__dict__, "headers": dict(f.headers)}) for f in self._faults]

    def _summaries(self) -> list[dict[str, Any]]:
        """Return every instance's control view, settling transitions first."""
        now = time.monotonic()
        with self._lock:
            for instance in self._instances.values():
                instance.settle(now)
            return [instance.summary() for instance in self._instances.values()]

    # --- the API ----------------------------------------------------------------------------------------------

    def handle_api(self, headers: Message, body: bytes) -> _Reply:
        """Answer one POST to the API path: authenticate, apply faults, run the action, record the call."""
        request_id = str(uuid.uuid4())
        action = headers.get("X-ZC-Action")
        recorded_params = _params_for_record(body)
        instance_ids = tuple(str(i) for i in recorded_params.get("instanceIds") or () if isinstance(i, str))
        fault: Fault | None = None
        try:
            self._authenticate(headers, body)
            self._check_headers(headers, action)
            fault = self._take_fault(action)
            if fault is not None and not fault.answers_normally:
                reply = self._fault_reply(fault, request_id)
                self._record(
                    action, instance_ids, recorded_params, reply.status, request_id, None if fault.body else fault.code
                )
                self._hang(fault.hang_seconds)
                return reply
            params = _parse_params(body)
            result = self._run(str(action), params)
        except _ApiError as error:
            self._record(action, instance_ids, recorded_params, error.status, request_id, error.code)
            payload = {"requestId": request_id, "code": error.code, "message": error.message}
            return _Reply(error.status, _json_bytes(payload))
        self._record(action, instance_ids, recorded_params, 200, request_id, None)
        if fault is not None:
            self._hang(fault.hang_seconds)
        return _Reply(200, _json_bytes({"requestId": request_id, "response": {"requestId": request_id, **result}}))

    def _authenticate(self, headers: Message, body: bytes) -> None:
        """Accept a valid bearer token or ZC2-HMAC-SHA256 signature; raise 401 otherwise."""
        authorization = (headers.get("Authorization") or "").strip()
        if not authorization:
            raise _ApiError(401, "AUTHFAILURE", "the Authorization header is missing")
        if authorization.lower().startswith("bearer "):
            presented = authorization[7:].strip()
            if self._token is None or not hmac.compare_digest(presented.encode(), self._token.encode()):
                raise _ApiError(401, "INVALID_TOKEN", "the access token is not valid")
            return
        parsed = signing.parse_authorization(authorization)
        if parsed is None:
            raise _ApiError(401, "AUTHFAILURE", "the Authorization header is not ZC2-HMAC-SHA256 or Bearer")
        if parsed.signed_headers != signing.SIGNED_HEADERS:
            raise _ApiError(401, "AUTHFAILURE", f"SignedHeaders must be {signing.SIGNED_HEADERS}")
        method = headers.get("X-ZC-Signature-Method")
        if method != signing.ALGORITHM:
            raise _ApiError(401, "AUTHFAILURE", f"X-ZC-Signature-Method must be {signing.ALGORITHM}")
        timestamp = (headers.get("X-ZC-Timestamp") or "").strip()
        if not timestamp.isdigit():
            raise _ApiError(401, "AUTHFAILURE", "X-ZC-Timestamp is missing or not Unix seconds")
        host = headers.get("Host")
        if not host:
            raise _ApiError(401, "AUTHFAILURE", "the Host header is missing")
        if (
            self._key_id is None
            or self._key_secret is None
            or not hmac.compare_digest(parsed.access_key_id.encode(), self._key_id.encode())
        ):
            raise _ApiError(401, "INVALID_ACCESS_KEY_ID", "the access key id is not known")
        if abs(time.time() - int(timestamp)) > self.max_skew_seconds:
            raise _ApiError(401, "SIGNATURE_EXPIRED", "X-ZC-Timestamp is too far from the server's clock")
        content_type = headers.get("Content-Type") or ""
        if not signing.verify(self._key_secret, timestamp, host, body, parsed.signature, content_type):
            raise _ApiError(401, "INVALID_SIGNATURE", "the request signature does not match")

    @staticmethod
    def _check_headers(headers: Message, action: str | None) -> None:
        """Refuse requests for another service, an unknown version or action, or a body that is not JSON."""
        if headers.get("X-ZC-Service") != SERVICE:
            raise _ApiError(400, "INVALID_SERVICE", f"X-ZC-Service must be {SERVICE!r}")
        version = headers.get("X-ZC-Version")
        if version not in SUPPORTED_VERSIONS:
            raise _ApiError(400, "INVALID_VERSION", f"X-ZC-Version {version!r} is not supported")
        if action not in ACTIONS:
            raise _ApiError(400, "INVALID_ACTION", f"action {action!r} is not supported")
        media_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise _ApiError(400, "INVALID_CONTENT_TYPE", "Content-Type must be application/json")

    def _take_fault(self, action: str | None) -> Fault | None:
        """Consume one use of the first fault that applies to action."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(action):
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._faults[index]
                    return fault
        return None

    def _hang(self, seconds: float | None) -> None:
        """Delay a reply; stop() cuts the wait short."""
        if seconds:
            self._stopping.wait(seconds)

    @staticmethod
    def _fault_reply(fault: Fault, request_id: str) -> _Reply:
        """Build the reply a fault scripts."""
        status = fault.status if fault.status is not None else 200
        if fault.body is not None:
            headers = {"Content-Type": "application/json", **fault.headers}
            return _Reply(status, fault.body.encode("utf-8"), headers)
        payload = {"requestId": request_id, "code": fault.code, "message": fault.message}
        return _Reply(status, _json_bytes(payload), dict(fault.headers))

    def _record(
        self,
        action: str | None,
        instance_ids: tuple[str, ...],
        params: dict[str, Any],
        status: int,
        request_id: str,
        code: str | None,
    ) -> None:
        """Append a call to the log."""
        call = SimulatedCall(action, instance_ids, status, request_id, code, time.time(), params)
        with self._lock:
            self._calls.append(call)
        log.debug("simulator %s %s -> %d %s", action, ",".join(instance_ids), status, code or "")

    def _run(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Carry out an authenticated action and return the `response` fields."""
        if action == "StartInstances":
            self._transition(params, "STOPPED", "BOOTING", "RUNNING")
            return {}
        if action == "StopInstances":
            self._transition(params, "RUNNING", "STOPPING", "STOPPED")
            return {}
        rows, total = self._describe(params)
        if action == "DescribeInstancesStatus":
            data = [{"instanceId": r.instance_id, "instanceStatus": r.status} for r in rows]
        else:
            data = [r.describe() for r in rows]
        return {"totalCount": total, "dataSet": data}

    def _transition(self, params: dict[str, Any], source: str, during: str, target: str) -> None:
        """Move every listed instance from source via during to target, or refuse the whole batch."""
        ids = _id_list(params, required=True)
        assert ids is not None
        unique = list(dict.fromkeys(ids))
        if not 1 <= len(unique) <= MAX_BATCH:
            raise _ApiError(
                400, "INVALID_PARAMETER_VALUE", f"instanceIds must hold 1 to {MAX_BATCH} ids, got {len(unique)}"
            )
        now = time.monotonic()
        with self._lock:
            missing = [i for i in unique if i not in self._instances]
            if missing:
                raise _ApiError(404, "INVALID_INSTANCE_NOT_FOUND", f"instance(s) not found: {', '.join(missing)}")
            instances = [self._instances[i] for i in unique]
            for instance in instances:
                instance.settle(now)
            recycled = [i.instance_id for i in instances if i.status == "RECYCLE"]
            if recycled:
                raise _ApiError(
                    403, "OPERATION_DENIED_INSTANCE_RECYCLED", f"instance(s) in the recycle bin: {', '.join(recycled)}"
                )
            wrong = [f"{i.instance_id} is {i.status}" for i in instances if i.status != source]
            if wrong:
                code = (
                    "OPERATION_DENIED_INSTANCE_NOT_STOPPED"
                    if source == "STOPPED"
                    else "OPERATION_DENIED_INSTANCE_NOT_RUNNING"
                )
                raise _ApiError(403, code, f"only {source} instances allowed: {'; '.join(wrong)}")
            for instance in instances:
                instance.status = during
                instance.pending = (target, now + self._boot_seconds)

    def _describe(self, params: dict[str, Any]) -> tuple[list[_Instance], int]:
        """Return the requested page of matching instances and how many match in all."""
        ids = _id_list(params, required=False)
        page_size = _int_param(params, "pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        page_num = _int_param(params, "pageNum", 1, 1, 1_000_000)
        wanted = set(ids) if ids is not None else None
        now = time.monotonic()
        with self._lock:
            if wanted is None:
                matching = list(self._instances.values())
            else:
                # Look the ids up rather than scan: a demo may hold thousands of instances.
                found = (self._instances[i] for i in wanted if i in self._instances)
                matching = sorted(found, key=lambda instance: instance.index)
            for instance in matching:
                instance.settle(now)
            start = (page_num - 1) * page_size
            page = [_Instance(**i.__dict__) for i in matching[start : start + page_size]]
        return page, len(matching)

    # --- the control API --------------------------------------------------------------------------------------

    def handle_control(self, method: str, path: str, body: bytes) -> _Reply:
        """Answer one request under /_simulator/."""
        try:
            payload = self._control(method, path[len(CONTROL_PREFIX) :].strip("/"), body)
        except _ControlError as error:
            return _Reply(error.status, _json_bytes({"error": str(error)}))
        return _Reply(200, _json_bytes(payload))

    def _control(self, method: str, route: str, body: bytes) -> dict[str, Any]:
        """Dispatch a control request; raise _ControlError for a bad one."""
        if route == "health" and method == "GET":
            return {"ok": True}
        if route == "instances" and method == "GET":
            return {"instances": self._summaries()}
        if route == "instances" and method == "POST":
            data = _control_json(body)
            specs = data.get("instances", [data]) if isinstance(data, dict) else None
            if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
                raise _ControlError(400, "body must be an instance object or {'instances': [objects]}")
            return {"instances": [self._upsert(spec) for spec in specs]}
        if route.startswith("instances/") and method == "DELETE":
            try:
                self.remove_instance(unquote(route[len("instances/") :]))
            except KeyError:
                raise _ControlError(404, "no such instance") from None
            return {"ok": True}
        if route == "calls" and method == "GET":
            return {"calls": [call.to_json() for call in self.calls]}
        if route == "calls" and method == "DELETE":
            self.clear_calls()
            return {"ok": True}
        if route == "faults" and method == "GET":
            return {"faults": [fault.to_json() for fault in self.faults]}
        if route == "faults" and method == "POST":
            data = _control_json(body)
            if not isinstance(data, dict) or "action" not in data:
                raise _ControlError(400, "body must be an object with at least 'action'")
            try:
                self.fail_next(**data)
            except (TypeError, ValueError) as exc:
                raise _ControlError(400, f"bad fault: {exc}") from None
            return {"faults": len(self.faults)}
        if route == "faults" and method == "DELETE":
            self.reset_faults()
            return {"ok": True}
        if route == "settings" and method == "GET":
            return {"boot_seconds": self.boot_seconds}
        if route == "settings" and method == "POST":
            data = _control_json(body)
            value = data.get("boot_seconds") if isinstance(data, dict) else None
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise _ControlError(400, "body must be {'boot_seconds': <non-negative number>}")
            self.boot_seconds = value
            return {"boot_seconds": self.boot_seconds}
        raise _ControlError(404, f"no control endpoint {method} {CONTROL_PREFIX}{route}")

    def _upsert(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Add or update one instance from a control request; return its view."""
        instance_id = spec.get("instanceId")
        for key, value in (("instanceId", instance_id), *((k, spec.get(k)) for k in ("status", "name", "zone"))):
            if value is not None and (not isinstance(value, str) or not value):
                raise _ControlError(400, f"{key} must be a non-empty string")
        if instance_id is None:
            raise _ControlError(400, "instanceId is required")
        with self._lock:
            exists = instance_id in self._instances
        if not exists:
            self.add_instance(
                instance_id, spec.get("status") or "STOPPED", name=spec.get("name"), zone=spec.get("zone") or "SEL-A"
            )
        else:
            with self._lock:
                instance = self._instances[instance_id]
                if spec.get("name"):
                    instance.name = spec["name"]
                if spec.get("zone"):
                    instance.zone = spec["zone"]
            if spec.get("status"):
                self.set_status(instance_id, spec["status"])
        return next(s for s in self._summaries() if s["instanceId"] == instance_id)


class _ControlError(Exception):
    """A refused control request."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _control_json(body: bytes) -> Any:
    """Parse a control request body."""
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise _ControlError(400, "body is not JSON") from None


def _parse_params(body: bytes) -> dict[str, Any]:
    """Parse an API body, which must be a JSON object."""
    try:
        params = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError):
        raise _ApiError(400, "INVALID_PARAMETER", "the request body is not JSON") from None
    if not isinstance(params, dict):
        raise _ApiError(400, "INVALID_PARAMETER", "the request body must be a JSON object")
    return params


def _id_list(params: dict[str, Any], *, required: bool) -> list[str] | None:
    """Return instanceIds as a list of strings; None when absent and optional."""
    ids = params.get("instanceIds")
    if ids is None:
        if required:
            raise _ApiError(400, "INVALID_PARAMETER_VALUE", "instanceIds is required")
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise _ApiError(400, "INVALID_PARAMETER_VALUE", "instanceIds must be a list of ids")
    return ids


def _int_param(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    """Return an integer parameter within [low, high]."""
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _ApiError(400, "INVALID_PARAMETER_VALUE", f"{name} must be an integer from {low} to {high}")
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


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that does not wait for hanging handlers and can drop open connections."""

    daemon_threads = True
    # A hanging (scripted) reply must not block stop(); the threads are daemons and get woken anyway.
    block_on_close = False
    simulator: ZenlayerSimulator

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._stop_requested = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        try:
            super().__init__(address, handler)
        except BaseException:
            self._wake_reader.close()
            self._wake_writer.close()
            raise

    def serve_until_stopped(self) -> None:
        """Accept connections until wake() is called; unlike serve_forever, stopping needs no poll interval."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._stop_requested:
                for key, _ in selector.select():
                    if key.fileobj is self.socket and not self._stop_requested:
                        self._handle_request_noblock()

    def wake(self) -> None:
        """Make serve_until_stopped return promptly."""
        self._stop_requested = True
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def track(self, connection: socket.socket, *, add: bool) -> None:
        """Remember or forget an open connection."""
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut down every keep-alive connection so idle handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Server6(_Server):
    """The same server on IPv6."""

    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """Routes HTTP requests to the simulator."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each reply would wait for a delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        """Read the body, route the request and write the reply."""
        simulator = self.server.simulator
        path = urlsplit(self.path).path
        body = self._read_body()
        if body is None:
            return
        if path == API_PATH and self.command == "POST":
            reply = simulator.handle_api(self.headers, body)
        elif path.startswith(CONTROL_PREFIX):
            reply = simulator.handle_control(self.command, path, body)
        else:
            payload = {"requestId": str(uuid.uuid4()), "code": "NOT_FOUND", "message": f"no route {path}"}
            reply = _Reply(404, _json_bytes(payload))
        self._write(reply)

    def _read_body(self) -> bytes | None:
        """Read exactly Content-Length bytes; answer 411/413 and return None when that is impossible."""
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                self._write(_error_reply(411, "MISSING_CONTENT_LENGTH", "send the body with Content-Length"))
                return None
            return b""
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._write(_error_reply(413, "REQUEST_TOO_LARGE", f"body must be at most {MAX_BODY_BYTES} bytes"))
            return None
        return self.rfile.read(length)

    def _write(self, reply: _Reply) -> None:
        """Send a reply; a client that already hung up is not an error."""
        try:
            self.send_response(reply.status)
            headers = {"Content-Type": "application/json", **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("simulator %s " + format, self.address_string(), *args)


def _error_reply(status: int, code: str, message: str) -> _Reply:
    """Build a Zenlayer error envelope reply."""
    return _Reply(status, _json_bytes({"requestId": str(uuid.uuid4()), "code": code, "message": message}))


def parse_instance_specs(specs: list[str]) -> dict[str, str]:
    """Turn `ID[:STATUS]` command-line values into {id: status}; ValueError names a bad one."""
    instances: dict[str, str] = {}
    for spec in specs:
        instance_id, _, status = spec.partition(":")
        status = (status or "STOPPED").strip().upper()
        instance_id = instance_id.strip()
        if not instance_id:
            raise ValueError(f"--instance {spec!r}: the id is empty")
        if status not in KNOWN_STATUSES:
            raise ValueError(f"--instance {spec!r}: unknown status {status}; use one of {', '.join(KNOWN_STATUSES)}")
        instances[instance_id] = status
    return instances


def main(args: argparse.Namespace, settings: Settings) -> int:
    """Run `vm-bot simulator` until SIGINT or SIGTERM; return the exit code."""
    key_pair = settings.zenlayer_access_key_id and settings.zenlayer_access_key_secret
    if not key_pair and settings.zenlayer_token is None:
        print(
            "vm-bot simulator: no credentials to check requests against. Set ZENLAYER_ACCESS_KEY_ID and "
            "ZENLAYER_ACCESS_KEY_SECRET (and/or ZENLAYER_TOKEN) to the values the bot will use; "
            "an auth-less simulator would hide signing bugs.",
            file=sys.stderr,
        )
        return 2
    try:
        instances = parse_instance_specs(list(args.instance)) or dict(DEFAULT_INSTANCES)
        simulator = ZenlayerSimulator(
            args.host,
            args.port,
            boot_seconds=args.boot_seconds,
            access_key_id=settings.zenlayer_access_key_id,
            access_key_secret=settings.zenlayer_access_key_secret,
            token=settings.zenlayer_token,
            instances=instances,
        )
    except ValueError as exc:
        print(f"vm-bot simulator: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop)
    try:
        try:
            simulator.start()
        except OSError as exc:
            print(f"vm-bot simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 2
        print(f"vm-bot simulator listening on {simulator.url}", flush=True)
        log.info(
            "serving %s; auth: %s",
            ", ".join(f"{i}={s}" for i, s in simulator.statuses().items()),
            " and ".join(
                m for m, on in (("key pair", settings.zenlayer_access_key_id), ("token", settings.zenlayer_token)) if on
            ),
        )
        # Wake now and then so a signal is noticed even where a blocking wait would not be interrupted.
        while not stop.wait(0.5):
            pass
        log.info("simulator stopping")
        return 0
    finally:
        simulator.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
