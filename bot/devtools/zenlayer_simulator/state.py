"""The simulated cloud: instances and their transitions, scripted faults, and the log of calls answered."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.devtools.zenlayer_simulator.replies import ApiError

log = logging.getLogger(__name__)

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
DEFAULT_INSTANCES: Mapping[str, str] = {"demo-web-1": "STOPPED", "demo-web-2": "STOPPED", "demo-db-1": "STOPPED"}
DEFAULT_GROUP_NAME = "Default Resource Group"
DEFAULT_ZONE = "SEL-A"
# Instance types and their (cpuCount, memory GiB), as DescribeInstances reports them.
INSTANCE_TYPES: Mapping[str, tuple[int, int]] = {"z2a.cpu.1": (2, 4), "z2a.cpu.2": (4, 8), "z2a.mem.1": (2, 16)}
DEFAULT_INSTANCE_TYPE = "z2a.cpu.1"

Tags = tuple[tuple[str, str], ...]
# Keys of `instances` specs that stand for "generate an opaque id" (a spec that names no id).
GENERATED_ID_PREFIX = "\x00generated-"


def opaque_id(seed: str, digits: int = 19) -> str:
    """Return a stable, opaque numeric id like Zenlayer's own (the provider's example is `123123xxx`)."""
    number = int(hashlib.sha256(seed.encode("utf-8")).hexdigest(), 16)
    low = 10 ** (digits - 1)
    return str(low + number % (9 * low))


def resource_group_id(name: str) -> str:
    """Return the simulator's id for a resource group name (stable, so scripts and tests can rely on it)."""
    return opaque_id(f"resource-group:{name}", 16)


def as_tags(value: Mapping[str, str] | Any) -> Tags:
    """Accept tags as {key: value}, [(key, value)] or [{"key", "value"}]; ValueError otherwise."""
    if value is None:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    tags: list[tuple[str, str]] = []
    for item in items:
        pair = (item.get("key"), item.get("value", "")) if isinstance(item, Mapping) else tuple(item)
        if len(pair) != 2 or not isinstance(pair[0], str) or not pair[0] or not isinstance(pair[1], str):
            raise ValueError(f"a tag must be a non-empty key and a string value, got {item!r}")
        tags.append((pair[0], pair[1]))
    return tuple(tags)


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
class Instance:
    """One simulated VM; `pending` is the (status, monotonic time) it reaches next."""

    instance_id: str
    name: str
    zone: str
    status: str
    index: int
    pending: tuple[str, float] | None = None
    group: str = DEFAULT_GROUP_NAME
    tags: Tags = ()
    instance_type: str = DEFAULT_INSTANCE_TYPE

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
            "resourceGroupId": resource_group_id(self.group),
            "resourceGroupName": self.group,
            "tags": {"tags": [{"key": k, "value": v} for k, v in self.tags]},
        }

    def describe(self) -> dict[str, Any]:
        """Return a DescribeInstances dataSet row."""
        octet = self.index % 250 + 2
        cpus, memory = INSTANCE_TYPES.get(self.instance_type, (2, 4))
        return {
            **self.summary(),
            "instanceType": self.instance_type,
            "cpuCount": cpus,
            "memory": memory,
            "imageId": "img-ubuntu-2204",
            "imageName": "Ubuntu 22.04",
            "instanceChargeType": "POSTPAID",
            # Documentation address ranges: nothing real is ever named.
            "publicIpAddresses": [f"198.51.{100 + self.index // 250 % 3}.{octet}"],
            "privateIpAddresses": [f"10.0.{self.index // 250 % 256}.{octet}"],
            "createTime": "2026-01-01T00:00:00Z",
        }


@dataclass(frozen=True)
class Filters:
    """DescribeInstances filters other than instanceIds, as the API documents them."""

    name: str | None = None  # exact, or a prefix when it ends with `*`
    resource_group_id: str | None = None
    zone: str | None = None
    status: str | None = None
    tag_keys: tuple[str, ...] = ()
    tags: Tags = ()

    def admits(self, instance: Instance) -> bool:
        """True when an instance passes every filter given."""
        if self.name is not None:
            if self.name.endswith("*"):
                if not instance.name.startswith(self.name[:-1]):
                    return False
            elif instance.name != self.name:
                return False
        if self.resource_group_id is not None and resource_group_id(instance.group) != self.resource_group_id:
            return False
        if self.zone is not None and instance.zone != self.zone:
            return False
        if self.status is not None and instance.status != self.status:
            return False
        keys = {k for k, _ in instance.tags}
        return all(k in keys for k in self.tag_keys) and all(t in instance.tags for t in self.tags)


class SimulatedCloud:
    """Instances moving through their states (computed lazily from a monotonic clock), faults and calls."""

    def __init__(
        self,
        *,
        boot_seconds: float = 5.0,
        instances: Mapping[str, str | Mapping[str, Any]] | None = None,
        max_recorded_calls: int = 100_000,
    ):
        if boot_seconds < 0:
            raise ValueError("boot_seconds must not be negative")
        self._boot_seconds = float(boot_seconds)
        self._lock = threading.Lock()
        self._instances: dict[str, Instance] = {}
        self._next_index = 0
        self._calls: deque[SimulatedCall] = deque(maxlen=max_recorded_calls)
        self._faults: list[Fault] = []
        for instance_id, spec in (instances or {}).items():
            if isinstance(spec, str):
                self.add_instance(instance_id, spec)
            else:
                self.add_instance(
                    None if instance_id.startswith(GENERATED_ID_PREFIX) else instance_id,
                    spec.get("status", "STOPPED"),
                    name=spec.get("name"),
                    zone=spec.get("zone", DEFAULT_ZONE),
                    group=spec.get("group"),
                    tags=spec.get("tags"),
                    instance_type=spec.get("type"),
                )

    # --- instances --------------------------------------------------------------------------------------------

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
        self,
        instance_id: str | None,
        status: str = "STOPPED",
        name: str | None = None,
        zone: str = DEFAULT_ZONE,
        *,
        group: str | None = None,
        tags: Mapping[str, str] | Any = None,
        instance_type: str | None = None,
    ) -> str:
        """Add an instance (replacing one with the same id; None: a new opaque id); return its id."""
        if instance_id is not None and (not isinstance(instance_id, str) or not instance_id):
            raise ValueError("instance id must be a non-empty string")
        tag_pairs = as_tags(tags)
        with self._lock:
            if instance_id is None:
                instance_id = opaque_id(f"instance:{self._next_index}:{name or ''}")
            existing = self._instances.get(instance_id)
            index = existing.index if existing else self._next_index
            if existing is None:
                self._next_index += 1
            self._instances[instance_id] = Instance(
                instance_id=instance_id,
                name=name or instance_id,
                zone=zone,
                status=status.upper(),
                index=index,
                group=group or DEFAULT_GROUP_NAME,
                tags=tag_pairs,
                instance_type=instance_type or DEFAULT_INSTANCE_TYPE,
            )
        return instance_id

    def has_instance(self, instance_id: str) -> bool:
        """Return True when the instance exists."""
        with self._lock:
            return instance_id in self._instances

    def rename_instance(
        self,
        instance_id: str,
        *,
        name: str | None,
        zone: str | None,
        group: str | None = None,
        tags: Mapping[str, str] | Any = None,
    ) -> None:
        """Change the name, zone, resource group and/or tags given (tags replace all); KeyError when unknown."""
        tag_pairs = as_tags(tags) if tags is not None else None
        with self._lock:
            instance = self._instances[instance_id]
            if name:
                instance.name = name
            if zone:
                instance.zone = zone
            if group:
                instance.group = group
            if tag_pairs is not None:
                instance.tags = tag_pairs

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
        return {row["instanceId"]: row["instanceStatus"] for row in self.summaries()}

    def summaries(self) -> list[dict[str, Any]]:
        """Return every instance's control view, settling transitions first."""
        now = time.monotonic()
        with self._lock:
            for instance in self._instances.values():
                instance.settle(now)
            return [instance.summary() for instance in self._instances.values()]

    def transition(self, ids: list[str], source: str, during: str, target: str) -> None:
        """Move every listed instance from source via during to target, or refuse the whole batch."""
        unique = list(dict.fromkeys(ids))
        if not 1 <= len(unique) <= MAX_BATCH:
            raise ApiError(
                400, "INVALID_PARAMETER_VALUE", f"instanceIds must hold 1 to {MAX_BATCH} ids, got {len(unique)}"
            )
        now = time.monotonic()
        with self._lock:
            missing = [i for i in unique if i not in self._instances]
            if missing:
                raise ApiError(404, "INVALID_INSTANCE_NOT_FOUND", f"instance(s) not found: {', '.join(missing)}")
            instances = [self._instances[i] for i in unique]
            for instance in instances:
                instance.settle(now)
            recycled = [i.instance_id for i in instances if i.status == "RECYCLE"]
            if recycled:
                raise ApiError(
                    403, "OPERATION_DENIED_INSTANCE_RECYCLED", f"instance(s) in the recycle bin: {', '.join(recycled)}"
                )
            wrong = [f"{i.instance_id} is {i.status}" for i in instances if i.status != source]
            if wrong:
                code = (
                    "OPERATION_DENIED_INSTANCE_NOT_STOPPED"
                    if source == "STOPPED"
                    else "OPERATION_DENIED_INSTANCE_NOT_RUNNING"
                )
                raise ApiError(403, code, f"only {source} instances allowed: {'; '.join(wrong)}")
            for instance in instances:
                instance.status = during
                instance.pending = (target, now + self._boot_seconds)

    def page(
        self, ids: list[str] | None, page_size: int, page_num: int, where: Filters | None = None
    ) -> tuple[list[Instance], int]:
        """Return a page of the instances listed (all when None) that pass the filters, as copies, and the total."""
        wanted = set(ids) if ids is not None else None
        now = time.monotonic()
        with self._lock:
            if wanted is None:
                candidates = list(self._instances.values())
            else:
                # Look the ids up rather than scan: a demo may hold thousands of instances.
                found = (self._instances[i] for i in wanted if i in self._instances)
                candidates = sorted(found, key=lambda instance: instance.index)
            for instance in candidates:
                instance.settle(now)
            matching = [i for i in candidates if where is None or where.admits(i)]
            start = (page_num - 1) * page_size
            page = [Instance(**i.__dict__) for i in matching[start : start + page_size]]
        return page, len(matching)

    # --- calls ------------------------------------------------------------------------------------------------

    @property
    def calls(self) -> list[SimulatedCall]:
        """Requests answered on the API path, oldest first (a copy; only the latest max_recorded_calls kept)."""
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        """Forget the recorded calls."""
        with self._lock:
            self._calls.clear()

    def record(
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

    # --- faults -----------------------------------------------------------------------------------------------

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

    def take_fault(self, action: str | None) -> Fault | None:
        """Consume one use of the first fault that applies to action."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(action):
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._faults[index]
                    return fault
        return None
