"""The simulated cloud: instances and their transitions, on top of the scripted faults and the call log."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.devtools.zenlayer_simulator.instances import (
    DEFAULT_GROUP_NAME,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_INSTANCES,
    DEFAULT_ZONE,
    GENERATED_ID_PREFIX,
    KNOWN_STATUSES,
    Filters,
    Instance,
    as_tags,
    opaque_id,
    resource_group_id,
)
from bot.devtools.zenlayer_simulator.replies import ApiError
from bot.devtools.zenlayer_simulator.script import CallScript, Fault, SimulatedCall

# Re-exported: scripts and tests import these from here.
__all__ = [
    "DEFAULT_GROUP_NAME",
    "DEFAULT_INSTANCES",
    "DEFAULT_ZONE",
    "GENERATED_ID_PREFIX",
    "KNOWN_STATUSES",
    "MAX_BATCH",
    "POWER_ACTIONS",
    "TIMINGS",
    "Fault",
    "Filters",
    "Instance",
    "PowerAction",
    "SimulatedCall",
    "SimulatedCloud",
    "resource_group_id",
]

MAX_BATCH = 100
# How long each passing status lasts, in seconds: the SimulatedCloud attributes a PowerAction names.
TIMINGS = ("boot_seconds", "stop_seconds", "reboot_seconds")
RECYCLED = "RECYCLE"


@dataclass(frozen=True)
class PowerAction:
    """A state-changing call: the one status it accepts, the status it passes through, and where it ends."""

    source: str
    during: str
    target: str
    refusal: str  # the 403 code for an instance in any other status
    timing: str  # which of TIMINGS says how long `during` lasts


POWER_ACTIONS: Mapping[str, PowerAction] = {
    "StartInstances": PowerAction(
        "STOPPED", "BOOTING", "RUNNING", "OPERATION_DENIED_INSTANCE_NOT_STOPPED", "boot_seconds"
    ),
    "StopInstances": PowerAction(
        "RUNNING", "STOPPING", "STOPPED", "OPERATION_DENIED_INSTANCE_NOT_RUNNING", "stop_seconds"
    ),
    "RebootInstances": PowerAction(
        "RUNNING", "REBOOT", "RUNNING", "OPERATION_DENIED_INSTANCE_STATUS", "reboot_seconds"
    ),
}


class SimulatedCloud(CallScript):
    """Instances moving through their states (computed lazily from a monotonic clock), faults and calls."""

    def __init__(
        self,
        *,
        boot_seconds: float = 5.0,
        stop_seconds: float = 5.0,
        reboot_seconds: float = 5.0,
        instances: Mapping[str, str | Mapping[str, Any]] | None = None,
        max_recorded_calls: int = 100_000,
    ):
        super().__init__(max_recorded_calls=max_recorded_calls)
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}  # TIMINGS, set through their properties
        self.boot_seconds, self.stop_seconds, self.reboot_seconds = boot_seconds, stop_seconds, reboot_seconds
        self._instances: dict[str, Instance] = {}
        self._next_index = 0
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
        """How long BOOTING lasts after a start; a change applies to later starts."""
        return self._timing("boot_seconds")

    @boot_seconds.setter
    def boot_seconds(self, value: float) -> None:
        self._set_timing("boot_seconds", value)

    @property
    def stop_seconds(self) -> float:
        """How long STOPPING lasts after a stop; a change applies to later stops."""
        return self._timing("stop_seconds")

    @stop_seconds.setter
    def stop_seconds(self, value: float) -> None:
        self._set_timing("stop_seconds", value)

    @property
    def reboot_seconds(self) -> float:
        """How long REBOOT lasts after a reboot; a change applies to later reboots."""
        return self._timing("reboot_seconds")

    @reboot_seconds.setter
    def reboot_seconds(self, value: float) -> None:
        self._set_timing("reboot_seconds", value)

    def _timing(self, name: str) -> float:
        """Read one of TIMINGS."""
        with self._lock:
            return self._seconds[name]

    def _set_timing(self, name: str, value: float) -> None:
        """Change one of TIMINGS; ValueError when negative or not a number."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ValueError(f"{name} must be a non-negative number")
        with self._lock:
            self._seconds[name] = float(value)

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

    def change(self, action: str, ids: list[str]) -> None:
        """Carry out a POWER_ACTIONS action on every listed instance, or refuse the whole batch with an ApiError."""
        power = POWER_ACTIONS[action]
        unique = list(dict.fromkeys(ids))
        if not 1 <= len(unique) <= MAX_BATCH:
            raise ApiError(
                400, "INVALID_PARAMETER_VALUE", f"instanceIds must hold 1 to {MAX_BATCH} ids, got {len(unique)}"
            )
        now = time.monotonic()
        with self._lock:
            instances = self._existing(unique, now)
            recycled = [i.instance_id for i in instances if i.status == RECYCLED]
            if recycled:
                raise ApiError(
                    403, "OPERATION_DENIED_INSTANCE_RECYCLED", f"instance(s) in the recycle bin: {', '.join(recycled)}"
                )
            wrong = [f"{i.instance_id} is {i.status}" for i in instances if i.status != power.source]
            if wrong:
                raise ApiError(403, power.refusal, f"only {power.source} instances allowed: {'; '.join(wrong)}")
            for instance in instances:
                instance.status = power.during
                instance.pending = (power.target, now + self._seconds[power.timing])

    def _existing(self, ids: list[str], now: float) -> list[Instance]:
        """Return the instances, settled; ApiError 404 naming the ids that do not exist. Call under the lock."""
        missing = [i for i in ids if i not in self._instances]
        if missing:
            raise ApiError(404, "INVALID_INSTANCE_NOT_FOUND", f"instance(s) not found: {', '.join(missing)}")
        instances = [self._instances[i] for i in ids]
        for instance in instances:
            instance.settle(now)
        return instances

    # --- behind the bot's back: what someone in Zenlayer's console does (no API call is recorded) ---------------

    def console_start(self, *instance_ids: str) -> None:
        """Start instances as the console would: same rules and timing as StartInstances (ApiError when refused)."""
        self.change("StartInstances", list(instance_ids))

    def console_stop(self, *instance_ids: str) -> None:
        """Stop instances as the console would: same rules and timing as StopInstances (ApiError when refused)."""
        self.change("StopInstances", list(instance_ids))

    def console_reboot(self, *instance_ids: str) -> None:
        """Reboot instances as the console would: same rules and timing as RebootInstances (ApiError when refused)."""
        self.change("RebootInstances", list(instance_ids))

    def console_recycle(self, *instance_ids: str) -> None:
        """Move instances to the recycle bin at once (RECYCLE: still listed, every action refused as recycled)."""
        with self._lock:
            for instance in self._existing(list(dict.fromkeys(instance_ids)), time.monotonic()):
                instance.status = RECYCLED
                instance.pending = None

    def console_release(self, *instance_ids: str) -> None:
        """Release instances for good, at once: from then on Describe* leaves them out and actions get 404."""
        with self._lock:
            for instance in self._existing(list(dict.fromkeys(instance_ids)), time.monotonic()):
                del self._instances[instance.instance_id]

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
