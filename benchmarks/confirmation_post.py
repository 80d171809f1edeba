"""Measure how a confirmation post that Slack holds back or never answers reaches the user, and what it costs
other channels.

Run: ``python benchmarks/confirmation_post.py [--retry-after 20] [--crowd 17] [--skip-timeout]``.

Everything runs in this process on 127.0.0.1 (Zenlayer simulator, the Slack stand-in, a temporary SQLite database,
the bot served over real HTTP, production settings for the Slack client: 10 s timeout).

1. Floor: --crowd + 1 `/vm start` in a channel Slack does not hold back, then one in another: seconds from that
   last command to its confirmation being posted.
2. Channel A answers chat.postMessage with 429 and Retry-After (--retry-after). One `/vm start` in A, then --crowd
   more there (more than the bot's 16 lookup threads), then one in B. Printed: seconds from A's first command to
   its user being told privately, and from B's command to B's confirmation (target: the floor; ratio printed).
3. A confirmation post that Slack carries out but answers only after the client's timeout: seconds from the
   command to the user being told that the request was withdrawn (the client's timeout, 10 s), and whether a
   click on the posted message started anything (target: no).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ack_latency import USER, in_process_bot

from bot.devtools.slack_driver import SlackDriver, has_buttons
from bot.devtools.slack_web_api import FakeSlackWebApi
from bot.devtools.support import wait_until
from bot.slack import action_ids


def told(fake: FakeSlackWebApi, key: str, contains: str, max_wait: float) -> tuple[float, str]:
    """Wait for a private reply under key containing some text; return the moment it arrived and its text."""

    def arrived() -> tuple[float, str] | None:
        with fake._lock:
            replies = [
                (c.at, str(c.args.get("text", "")))
                for c in fake.calls
                if c.method == "response_url" and c.args.get("_key") == key
            ]
        return next((reply for reply in replies if contains in reply[1]), None)

    return wait_until(arrived, timeout=max_wait, what=f"a reply containing {contains!r}")


def heard(fake: FakeSlackWebApi, key: str, channel: str) -> tuple[float, str] | None:
    """Return when and what a user first heard back: a private reply under key, or a confirmation in channel."""
    with fake._lock:
        heard = [
            (c.at, str(c.args.get("text", "")))
            for c in fake.calls
            if (c.method == "response_url" and c.args.get("_key") == key)
            or (c.method == "chat.postMessage" and c.args.get("channel") == channel and c.status == 200)
        ]
    return min(heard) if heard else None


def confirmations_in(driver: SlackDriver, channel: str, n: int, max_wait: float) -> None:
    """Wait until n confirmations are posted in a channel."""
    wait_until(lambda: len(driver.fake.channel_messages(channel)) >= n, timeout=max_wait, what=f"{n} in {channel}")


def posted_in(driver: SlackDriver, channel: str, max_wait: float) -> float:
    """Wait for a confirmation in channel; return the moment it was posted."""
    driver.wait_confirmation(channel, timeout=max_wait)
    with driver.fake._lock:
        return min(
            c.at
            for c in driver.fake.calls
            if c.method == "chat.postMessage" and c.args.get("channel") == channel and c.status == 200
        )


def held_channel(retry_after: int, crowd: int, max_wait: float) -> list[str]:
    """Parts 1 and 2: the floor, then a 429 on channel A with a crowd of commands there, and B's confirmation."""
    instances = {f"cp-{i:03d}": "STOPPED" for i in range(crowd + 3)} | {
        f"fl-{i:03d}": "STOPPED" for i in range(crowd + 2)
    }
    with in_process_bot(instances, "*", boot_seconds=0.5) as (_, driver, fake, _, _):
        for i in range(crowd + 1):  # the same crowd of commands, in a channel Slack does not hold back
            driver.command(f"start fl-{i:03d}", user=USER, channel="C0CROWD")
        begun = time.monotonic()
        driver.command(f"start fl-{crowd + 1:03d}", user=USER, channel="C0FLOOR")
        floor = posted_in(driver, "C0FLOOR", max_wait) - begun
        confirmations_in(driver, "C0CROWD", crowd + 1, max_wait)

        fake.rate_limit(retry_after, channel="C0HELD", method="chat.postMessage")
        begun = time.monotonic()
        _, first = driver.command("start cp-001", user=USER, channel="C0HELD")
        for i in range(crowd):
            driver.command(f"start cp-{i + 2:03d}", user=USER, channel="C0HELD")
        b_begun = time.monotonic()
        driver.command(f"start cp-{crowd + 2:03d}", user=USER, channel="C0QUIET")
        b_posted = posted_in(driver, "C0QUIET", max_wait) - b_begun
        print(f"floor: /vm start to its confirmation after {crowd + 1} commands elsewhere: {floor:.2f} s", flush=True)
        print(  # before waiting for A, which took Retry-After and more before the fix
            f"channel B while A is held: /vm start to its confirmation {b_posted:.2f} s (ratio to the floor "
            f"{b_posted / floor:.1f})",
            flush=True,
        )
        a_at, a_text = wait_until(lambda: heard(fake, first, "C0HELD"), timeout=max_wait, what="A's user told")
        a_told = a_at - begun
        asked = len([c for c in fake.calls_to("chat.postMessage") if c.args.get("channel") == "C0HELD"])
    return [
        f"channel A under 429 (Retry-After {retry_after} s), {crowd + 1} commands there: A's user heard back after "
        f"{a_told:.2f} s ({a_text[:60]!r}); chat.postMessage calls to A: {asked}",
    ]


def timed_out_post(max_wait: float) -> list[str]:
    """Part 3: a post Slack makes but answers too late for the client."""
    with in_process_bot({"cp-t": "STOPPED"}, "cp-*", boot_seconds=0.5) as (_, driver, fake, sim, _):
        fake.delay_next("chat.postMessage", 12)
        begun = time.monotonic()
        _, key = driver.command("start cp-t", user=USER)
        withdrawn = told(fake, key, "withdrew", max_wait)[0] - begun
        confirmation = driver.wait_confirmation()
        _, click = driver.click(confirmation, action_ids.START, user=USER)
        told(fake, click, "withdrawn", max_wait)
        message = (confirmation.channel, confirmation.ts)
        wait_until(lambda: not has_buttons(fake.messages[message]), timeout=max_wait, what="the message withdrawn")
        starts = [c for c in sim.calls if c.action == "StartInstances"]
    return [
        f"post answered after the client's timeout: user told it was withdrawn after {withdrawn:.2f} s; a click on "
        f"the posted message: refused, message shown withdrawn, StartInstances calls: {len(starts)}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retry-after", type=int, default=20)
    parser.add_argument("--crowd", type=int, default=17, help="commands in the held channel after the first")
    parser.add_argument("--skip-timeout", action="store_true", help="leave out part 3 (about 12 s)")
    parser.add_argument("--max-wait", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    lines = held_channel(args.retry_after, args.crowd, args.max_wait)
    if not args.skip_timeout:
        lines += timed_out_post(args.max_wait)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
