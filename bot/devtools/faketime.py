"""Running a process with its wall clock off, under libfaketime (Debian's `faketime`): the clock-skew test and the
chaos check run replicas this way.

Every wall-clock read of the process moves (Python's `time.time()` and `datetime.now()`, SQLAlchemy's, slack-sdk's),
monotonic clocks stay as they are (`FAKETIME_DONT_FAKE_MONOTONIC`, as NTP leaves them: faking them instead hangs
Python's timed waits on locks and events, libfaketime issue #390). libfaketime 0.9.10 then breaks one call: Python
3.11+'s `time.sleep` sleeps with `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, …)`, which it passes on shifted,
so every `time.sleep` fails with EINVAL (libfaketime issue #426). A `sitecustomize` on the process's PYTHONPATH puts
a relative sleep (`select`) in its place before any code of ours runs.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from pathlib import Path

SLEEP_SHIM = '''\
"""vm-bot's test runs under libfaketime: time.sleep as a relative wait (see bot/devtools/faketime.py)."""
import select
import time


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        select.select([], [], [], left)


time.sleep = _sleep
'''


def library() -> str | None:
    """Return libfaketime's multi-threaded library, or None where Debian's `faketime` package is not installed."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1") + glob.glob("/usr/lib/faketime/*MT.so.1"))
    return found[0] if found else None


def shim_dir() -> Path:
    """The directory holding the sleep shim as `sitecustomize.py` (written once, named after its content)."""
    digest = hashlib.sha256(SLEEP_SHIM.encode()).hexdigest()[:12]
    directory = Path(tempfile.gettempdir()) / f"vm-bot-faketime-{digest}"
    target = directory / "sitecustomize.py"
    if not target.is_file():
        directory.mkdir(exist_ok=True)
        partial = directory / f".sitecustomize.{os.getpid()}"
        partial.write_text(SLEEP_SHIM)
        partial.replace(target)  # atomic: a process starting meanwhile reads all of it or none
    return directory


def skewed_env(offset: float) -> dict[str, str]:
    """Environment that moves every wall-clock read of a Python process by `offset` seconds (nothing when 0 or
    without libfaketime); to be laid over the process's environment."""
    preload = library()
    if not offset or preload is None:
        return {}
    path = [str(shim_dir()), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        "LD_PRELOAD": preload,
        "FAKETIME": f"{offset:+g}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join(path),
    }
