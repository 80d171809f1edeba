"""`vm-bot simulator`: serve the simulator from the command line until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from bot.devtools.zenlayer_simulator.instances import (
    DEFAULT_INSTANCES,
    GENERATED_ID_PREFIX,
    KNOWN_STATUSES,
)
from bot.devtools.zenlayer_simulator.server import ZenlayerSimulator

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)


_SPEC_KEYS = ("name", "group", "zone", "type", "tag", "status")


def parse_instance_specs(specs: list[str]) -> dict[str, str | dict[str, Any]]:
    """Turn `--instance` values into the simulator's instance specs ({id: status} or {id: {...}}).

    An id-less spec gets a placeholder key ("" plus a counter) that ZenlayerSimulator replaces with an opaque id.
    ValueError names a bad value.
    """
    instances: dict[str, str | dict[str, Any]] = {}
    for number, spec in enumerate(specs):
        head, *parts = [part.strip() for part in spec.split(",")]
        if "=" in head:
            head, parts = "", [head, *parts]
        instance_id, _, status = head.partition(":")
        instance_id = instance_id.strip()
        fields: dict[str, Any] = {"status": status.strip() or "STOPPED", "tags": []}
        for part in parts:
            key, equals, value = part.partition("=")
            key = key.strip().lower()
            if not equals or key not in _SPEC_KEYS or not value:
                keys = ", ".join(k + "=" for k in _SPEC_KEYS)
                raise ValueError(f"--instance {spec!r}: {part!r} is not one of {keys}")
            if key == "tag":
                tag_key, tag_equals, tag_value = value.partition("=")
                if not tag_equals or not tag_key:
                    raise ValueError(f"--instance {spec!r}: tag={value!r} must be tag=KEY=VALUE")
                fields["tags"].append((tag_key, tag_value))
            else:
                fields[key] = value
        fields["status"] = fields["status"].upper()
        if not instance_id and not parts:
            raise ValueError(f"--instance {spec!r}: the id is empty")
        if fields["status"] not in KNOWN_STATUSES:
            raise ValueError(
                f"--instance {spec!r}: unknown status {fields['status']}; use one of {', '.join(KNOWN_STATUSES)}"
            )
        if len(fields) == 2 and not fields["tags"] and instance_id:
            instances[instance_id] = fields["status"]  # the plain ID[:STATUS] form
        else:
            instances[instance_id or f"{GENERATED_ID_PREFIX}{number}"] = fields
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
            stop_seconds=args.stop_seconds,
            reboot_seconds=args.reboot_seconds,
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
        for number, handler in previous.items():
            signal.signal(number, handler)
