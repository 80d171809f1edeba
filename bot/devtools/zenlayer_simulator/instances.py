"""The simulated instances: what one VM holds, how ids are made up, and DescribeInstances' filters."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
