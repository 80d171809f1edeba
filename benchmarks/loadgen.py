"""A load generator in its own process, so measuring never competes with the fakes for the benchmark's GIL.

It reads one JSON job per line on stdin: ``{"port": N, "requests": [raw HTTP request, base64], "timeout": s}``,
opens one connection per request from as many threads, releases them together, and writes one JSON line back:
``{"results": [[seconds, status, body], ...]}`` (status 0 when there was no answer). Only 127.0.0.1 is used.
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def exchange(port: int, request: bytes, barrier: threading.Barrier, timeout: float) -> tuple[float, int, str]:
    """Send one request on a new connection once every thread is ready; return its time, status and body."""
    barrier.wait()
    started = time.perf_counter()
    chunks: list[bytes] = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return time.perf_counter() - started, 0, ""
    elapsed = time.perf_counter() - started
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return elapsed, status, body.decode("utf-8", "replace")


def run(job: dict[str, object]) -> list[tuple[float, int, str]]:
    """Fire every request of a job at once and return the results in order."""
    requests = [base64.b64decode(r) for r in job["requests"]]  # type: ignore[attr-defined]
    port, timeout = int(job["port"]), float(job.get("timeout", 30))  # type: ignore[arg-type]
    barrier = threading.Barrier(len(requests))
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(exchange, port, r, barrier, timeout) for r in requests]
        return [f.result() for f in futures]


def main() -> int:
    """Answer jobs until stdin closes."""
    for line in sys.stdin:
        if line.strip():
            print(json.dumps({"results": run(json.loads(line))}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
