"""Measure how vm-bot's Slack traffic behaves per channel: pacing under a burst, and isolation from a 429.

Run: ``python benchmarks/delivery.py [--sizes 10,50] [--retry-after 20] [--max-wait 400]``.

Everything runs in this process on 127.0.0.1 (Zenlayer simulator, the Slack stand-in, a temporary SQLite database,
the bot served over real HTTP), with POLL_INTERVAL_SECONDS=1 and instances that boot in 2 s.

1. For each size N: N `/vm start` in one channel, then N Start clicks released together. Counted from the first
   click until every final reply is in: chat.postMessage + chat.update calls to that channel, their average rate
   and the most in any 1-second window (Slack allows about 1 per second per channel, with short bursts).
2. Channel A answers every call with 429 and Retry-After (--retry-after) right after its request is clicked; a
   request in channel B is clicked next. Printed: the time from B's click to B's final reply (target: within
   POLL_INTERVAL_SECONDS + 1 s plus the boot time, as if A were quiet), next to the same figure with A quiet.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ack_latency import in_process_bot

from bot.devtools.slack_driver import Confirmation, SlackDriver
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import wait_until
from bot.slack import action_ids

USER = "U0BENCH01"
BOOT_SECONDS = 2.0
FINAL = "instance RUNNING"  # "All 1 instance RUNNING"


def confirmations(driver: SlackDriver, channel: str, n: int, max_wait: float) -> list[Confirmation]:
    """Wait for n confirmations in a channel and return them."""
    wait_until(
        lambda: len([m for m in driver.fake.messages.values() if m.channel == channel and m.thread_ts is None]) >= n,
        timeout=max_wait,
        what=f"{n} confirmations in {channel}",
    )
    return [driver.wait_confirmation(channel, index=i) for i in range(n)]


def finished(driver: SlackDriver, confirmation: Confirmation) -> bool:
    """True once the confirmation's thread holds its final reply."""
    return any(FINAL in t for t in driver.thread_texts(confirmation))


def ask(driver: SlackDriver, channel: str, ids: Sequence[str], max_wait: float) -> list[Confirmation]:
    """Send one `/vm start` per id in a channel; return the confirmations."""
    for instance_id in ids:
        driver.command(f"start {instance_id}", user=USER, channel=channel)
    return confirmations(driver, channel, len(ids), max_wait)


def burst(driver: SlackDriver, fake: FakeSlackWebApi, channel: str, n: int, max_wait: float) -> str:
    """Click n confirmations in one channel at once; return a line with the channel's message rate."""
    posted = ask(driver, channel, [f"dl-{channel}-{i:03d}" for i in range(n)], max_wait)
    started = time.monotonic()
    for confirmation in posted:
        driver.click(confirmation, action_ids.START, user=USER)
    wait_until(lambda: all(finished(driver, c) for c in posted), timeout=max_wait, what="every final reply")
    ended = time.monotonic()
    with fake._lock:
        times = sorted(
            c.at
            for c in fake.calls
            if c.at >= started
            and c.method in ("chat.postMessage", "chat.update")
            and c.args.get("channel") == channel
            and c.status == 200
            and c.response.get("ok")
        )
    window = max(sum(1 for u in times if t <= u < t + 1.0) for t in times) if times else 0
    span = ended - started
    return (
        f"{n:>3} starts in one channel: {len(times)} messages in {span:.1f} s = {len(times) / span:.1f}/s, "
        f"at most {window} in any 1 s (Slack: ~1/s)"
    )


def isolation(driver: SlackDriver, fake: FakeSlackWebApi, retry_after: float, max_wait: float, tag: str) -> float:
    """Click a request in A (held by a 429 when retry_after > 0), then one in B; return B's click-to-final time."""
    a = ask(driver, f"C0A{tag}", [f"dl-a-{tag}"], max_wait)[0]
    b = ask(driver, f"C0B{tag}", [f"dl-b-{tag}"], max_wait)[0]
    driver.click(a, action_ids.START, user=USER)
    if retry_after > 0:
        fake.rate_limit(retry_after, channel=a.channel)
    started = time.monotonic()
    driver.click(b, action_ids.START, user=USER)
    wait_until(lambda: finished(driver, b), timeout=max_wait, what="B's final reply")
    return time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    """Start the fakes and the bot on loopback, run both measurements, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50", help="comma-separated burst sizes (default 10,50)")
    parser.add_argument("--retry-after", type=float, default=20.0, help="Retry-After of channel A's 429 (s)")
    parser.add_argument("--max-wait", type=float, default=400.0, help="seconds to wait for any outcome at most")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or max(sizes) > 200 or args.retry_after <= 0 or args.max_wait <= 0:
        parser.error("--sizes must be 1..200 each; --retry-after and --max-wait positive")
    logging.basicConfig(level=logging.ERROR)

    instances = {f"dl-C0N{n}-{i:03d}": "STOPPED" for n in sizes for i in range(n)}
    instances.update({f"dl-{side}-{tag}": "STOPPED" for side in "ab" for tag in ("quiet", "held")})
    with in_process_bot(instances, "dl-*", boot_seconds=BOOT_SECONDS) as (_running, driver, fake, _sim, settings):
        print(f"POLL_INTERVAL_SECONDS={settings.poll_interval_seconds:g}, instances boot in {BOOT_SECONDS:g} s")
        for n in sizes:
            print(burst(driver, fake, f"C0N{n}", n, args.max_wait))
        quiet = isolation(driver, fake, 0, args.max_wait, "quiet")
        held = isolation(driver, fake, args.retry_after, args.max_wait, "held")
        target = settings.poll_interval_seconds + 1 + BOOT_SECONDS
        print(f"final reply in B, click to reply, A quiet: {quiet:.2f} s (floor, same run)")
        print(
            f"final reply in B, click to reply, A held by 429 Retry-After {args.retry_after:g} s: {held:.2f} s "
            f"(target <= {target:g} s; ratio to floor {held / quiet:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
