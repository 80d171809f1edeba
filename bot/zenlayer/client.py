"""The Zenlayer VM API client: the VmApi port's calls over the signed endpoint, and reading their replies."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from bot.domain.ports import InstanceInfo, InstancePage, InstanceQuery
from bot.zenlayer.endpoint import VmEndpoint, error_class, is_auth_code
from bot.zenlayer.errors import MalformedResponse

__all__ = ["ZenlayerClient", "error_class", "instance_info", "is_auth_code"]

MAX_CHANGE_BATCH = 100  # ids per StartInstances, StopInstances or RebootInstances
DESCRIBE_BATCH = 100
MAX_PAGE_SIZE = 1000


def _unique(ids: Sequence[str]) -> list[str]:
    """Return ids without duplicates, in first-seen order; refuse a bare string (a classic mistake)."""
    if isinstance(ids, str | bytes):
        raise TypeError("ids must be a sequence of instance ids, not a single string")
    seen: dict[str, None] = {}
    for instance_id in ids:
        if not isinstance(instance_id, str) or not instance_id:
            raise ValueError(f"instance ids must be non-empty strings, got {instance_id!r}")
        seen.setdefault(instance_id, None)
    return list(seen)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    """Yield consecutive slices of at most size items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ZenlayerClient(VmEndpoint):
    """Calls Zenlayer's VM API (Start/Stop/RebootInstances, DescribeInstancesStatus, DescribeInstances)."""

    # --- the VmApi calls -------------------------------------------------------------------------------------

    def start_instances(self, ids: Sequence[str]) -> str:
        """Start 1..100 STOPPED instances in one all-or-nothing call; return Zenlayer's requestId."""
        return self._change("StartInstances", ids)

    def stop_instances(self, ids: Sequence[str]) -> str:
        """Shut down 1..100 RUNNING instances in one all-or-nothing call, never forced; return the requestId."""
        # Zenlayer reads an absent or empty forceShutdown as a FORCED shutdown (power cut): always say false.
        return self._change("StopInstances", ids, forceShutdown=False)

    def reboot_instances(self, ids: Sequence[str]) -> str:
        """Reboot 1..100 RUNNING instances in one all-or-nothing call; return Zenlayer's requestId."""
        return self._change("RebootInstances", ids)

    def describe_instances_status(self, ids: Sequence[str]) -> dict[str, str]:
        """Return {id: status} for the ids Zenlayer knows, asking at most 100 ids per call."""
        result: dict[str, str] = {}
        for row in self._describe("DescribeInstancesStatus", _unique(ids)):
            result[row["instanceId"]] = row["instanceStatus"]
        return result

    def describe_instances(self, ids: Sequence[str]) -> dict[str, InstanceInfo]:
        """Return what Zenlayer says about the ids it knows, asking at most 100 ids per call."""
        return {row["instanceId"]: instance_info(row) for row in self._describe("DescribeInstances", _unique(ids))}

    def list_instances(
        self, query: InstanceQuery, *, page_num: int = 1, page_size: int = MAX_PAGE_SIZE
    ) -> InstancePage:
        """Return one page of DescribeInstances filtered by query, and totalCount."""
        if not 1 <= page_size <= MAX_PAGE_SIZE or page_num < 1:
            raise ValueError(f"page_size must be 1 to {MAX_PAGE_SIZE} and page_num at least 1")
        params: dict[str, Any] = {"pageSize": page_size, "pageNum": page_num}
        for field_name, value in (
            ("instanceName", query.name),
            ("resourceGroupId", query.resource_group_id),
            ("zoneId", query.zone),
            ("instanceStatus", query.status),
        ):
            if value is not None:
                params[field_name] = value
        if query.tags:
            params["tags"] = [{"key": key, "value": value} for key, value in query.tags]
        response, request_id = self._call("DescribeInstances", params)
        rows, total = self._rows("DescribeInstances", response, request_id)
        return InstancePage([instance_info(row) for row in rows], total if total is not None else len(rows))

    # --- plumbing ---------------------------------------------------------------------------------------------

    def _change(self, action: str, ids: Sequence[str], **options: Any) -> str:
        """Send one state-changing action (never repeated unless throttled) for 1..100 ids; return its requestId."""
        unique = _unique(ids)
        if not 1 <= len(unique) <= MAX_CHANGE_BATCH:
            raise ValueError(f"{action} takes 1 to {MAX_CHANGE_BATCH} ids, got {len(unique)}")
        response, envelope_request_id = self._call(action, {"instanceIds": unique, **options})
        request_id = response.get("requestId") or envelope_request_id
        if not isinstance(request_id, str) or not request_id:
            raise MalformedResponse(f"{action} reply has no requestId", action=action, http_status=200)
        return request_id

    def _describe(self, action: str, ids: list[str]) -> Iterator[dict[str, Any]]:
        """Yield validated dataSet rows for ids, batch by batch, following pages if the server caps pageSize."""
        for batch in _chunks(ids, DESCRIBE_BATCH):
            wanted = set(batch)
            page_num = 1
            seen = 0
            # Each batch fits one page; the bound only guards against a server that keeps paging forever.
            while page_num <= len(batch):
                params = {"instanceIds": batch, "pageSize": len(batch), "pageNum": page_num}
                response, request_id = self._call(action, params)
                rows, total = self._rows(action, response, request_id)
                for row in rows:
                    if row["instanceId"] in wanted:
                        yield row
                seen += len(rows)
                if not rows or total is None or seen >= total:
                    break
                page_num += 1

    @staticmethod
    def _rows(action: str, response: dict[str, Any], request_id: str | None) -> tuple[list[dict[str, Any]], int | None]:
        """Check a Describe* reply's shape and return its rows and totalCount."""

        def malformed(why: str) -> MalformedResponse:
            return MalformedResponse(
                f"{action} reply is malformed: {why}", action=action, request_id=request_id, http_status=200
            )

        total = response.get("totalCount")
        if total is not None and (not isinstance(total, int) or isinstance(total, bool)):
            raise malformed("totalCount is not a number")
        data = response.get("dataSet")
        if data is None:
            if total:
                raise malformed("dataSet missing")
            return [], total
        if not isinstance(data, list):
            raise malformed("dataSet is not a list")
        for row in data:
            if not isinstance(row, dict):
                raise malformed("a dataSet row is not an object")
            if not isinstance(row.get("instanceId"), str) or not isinstance(row.get("instanceStatus"), str):
                raise malformed("a dataSet row lacks instanceId or instanceStatus")
        return data, total


def _text(value: Any) -> str | None:
    """Return a non-empty string field, or None."""
    return value if isinstance(value, str) and value else None


def _strings(value: Any) -> tuple[str, ...]:
    """Return the strings of a list field (anything else is ignored)."""
    return tuple(v for v in value if isinstance(v, str) and v) if isinstance(value, list) else ()


def _tags(value: Any) -> tuple[tuple[str, str], ...]:
    """Read `tags` as Zenlayer returns it (`{"tags": [{"key", "value"}]}`, the SDK's TagAssociation) or a bare list."""
    items = value.get("tags") if isinstance(value, dict) else value
    if not isinstance(items, list):
        return ()
    tags: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("key"), str) and item["key"]:
            value = item.get("value")
            tags.append((item["key"], value if isinstance(value, str) else ""))
    return tuple(tags)


def instance_info(row: dict[str, Any]) -> InstanceInfo:
    """Turn a validated DescribeInstances row into InstanceInfo, tolerating missing or odd optional fields."""
    return InstanceInfo(
        instance_id=row["instanceId"],
        name=_text(row.get("instanceName")) or "",
        status=row["instanceStatus"],
        zone=_text(row.get("zoneId")),
        resource_group_id=_text(row.get("resourceGroupId")),
        resource_group_name=_text(row.get("resourceGroupName")),
        tags=_tags(row.get("tags")),
        public_ips=_strings(row.get("publicIpAddresses")),
        private_ips=_strings(row.get("privateIpAddresses")),
        instance_type=_text(row.get("instanceType")),
    )
