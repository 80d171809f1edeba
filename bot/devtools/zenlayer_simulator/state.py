"""The simulated cloud: instances and their transitions, on top of the scripted faults and the call log."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
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
    "Fault",
    "Filters",
    "Instance",
    "SimulatedCall",
    "SimulatedCloud",
    "resource_group_id",
]

MAX_BATCH = 100


class SimulatedCloud(CallScript):
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
        super().__init__(max_recorded_calls=max_recorded_calls)
        self._boot_seconds = float(boot_seconds)
        self._lock = threading.Lock()
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
