"""Measure the requests/second the Zenlayer client sustains against the simulator on loopback.

Run: ``python benchmarks/zenlayer_client.py [--requests 2000] [--max-seconds 10] [--threads 1]``. Every phase
stops after --requests calls or --max-seconds, whichever comes first; nothing leaves 127.0.0.1. The numbers
include the simulator's own work (it shares the machine and, being Python, the GIL-bound CPU), so they are a
floor for the client, not a prediction of Zenlayer's latency.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from bot.devtools.zenlayer_simulator import ZenlayerSimulator
from bot.zenlayer.client import ZenlayerClient


def run_phase(
    name: str, call: Callable[[int], object], *, requests: int, max_seconds: float, threads: int
) -> dict[str, float]:
    """Call call(n) for n = 0, 1, ... from `threads` workers until the count or the time runs out; print a line."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        local: list[float] = []
        while time.monotonic() < deadline:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            started = time.perf_counter()
            call(n)
            local.append(time.perf_counter() - started)
        with lock:
            latencies.extend(local)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()
    elapsed = time.perf_counter() - started
    done = len(latencies)
    ordered = sorted(latencies)
    result = {
        "requests": done,
        "seconds": elapsed,
        "rps": done / elapsed if elapsed else 0.0,
        "p50_ms": statistics.median(ordered) * 1000 if ordered else 0.0,
        "p99_ms": ordered[min(done - 1, int(done * 0.99))] * 1000 if ordered else 0.0,
    }
    print(
        f"{name:<34} {done:>6} requests in {elapsed:6.2f} s  {result['rps']:8.0f} req/s  "
        f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms",
        flush=True,
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Start a simulator on loopback, run each phase, print the rates; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="calls per phase at most (default 2000)")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="seconds per phase at most (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="concurrent callers sharing one client (default 1)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.threads < 1 or args.max_seconds <= 0:
        parser.error("--requests and --threads must be at least 1, --max-seconds positive")

    key_id, secret = "AKIDBENCH", secrets.token_urlsafe(24)
    start_ids = [f"bench-{n:06d}" for n in range(args.requests)]
    instances = dict.fromkeys(start_ids, "STOPPED")
    with (
        # Long boots: started instances stay BOOTING, so the describe phases read a stable state.
        ZenlayerSimulator(
            boot_seconds=3600, access_key_id=key_id, access_key_secret=secret, instances=instances
        ) as sim,
        ZenlayerClient(sim.url, access_key_id=key_id, access_key_secret=secret, timeout=10) as client,
    ):
        print(f"simulator {sim.url}; {args.threads} thread(s); at most {args.requests} calls or {args.max_seconds:g} s")
        hundred = start_ids[:100]
        run_phase(
            "DescribeInstancesStatus (1 id)",
            lambda n: client.describe_instances_status([start_ids[n % len(start_ids)]]),
            requests=args.requests,
            max_seconds=args.max_seconds,
            threads=args.threads,
        )
        run_phase(
            "DescribeInstancesStatus (100 ids)",
            lambda n: client.describe_instances_status(hundred),
            requests=args.requests,
            max_seconds=args.max_seconds,
            threads=args.threads,
        )
        run_phase(
            "StartInstances (1 id)",
            lambda n: client.start_instances([start_ids[n]]),
            requests=args.requests,
            max_seconds=args.max_seconds,
            threads=args.threads,
        )
        failures = sum(1 for call in sim.calls if call.http_status != 200)
        print(f"simulator answered {len(sim.calls)} calls, {failures} not 200")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
