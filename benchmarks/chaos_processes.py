"""The chaos check's processes: `vm-bot run` replicas (killed and restarted), `vm-bot simulator`, and a throwaway
PostgreSQL database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from chaos_faults import restartable_cluster
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.devtools.support import Credentials, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS = Credentials.fresh("chaos")
SIGNING_SECRET = CREDENTIALS.slack_signing_secret


@dataclass
class Replica:
    """One `vm-bot run` process, restartable under the same REPLICA_ID and port."""

    name: str
    port: int
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)  # the killer and the runs' kills share replicas

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.lock:
            if self.process is not None and self.process.poll() is None:
                return
            self.starts += 1
            with (self.log_dir / f"{self.name}.{self.starts}.log").open("w") as log:
                command = [sys.executable, "-m", "bot", "run"]
                self.process = subprocess.Popen(command, env=self.env, cwd=self.log_dir, stdout=log, stderr=log)  # noqa: S603

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> bool:
        """SIGKILL the process; True when it was running."""
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                return False
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of this process's latest log."""
        return (self.log_dir / f"{self.name}.{self.starts}.log").read_text()[-chars:]


def replica_env(
    n: int, *, slack_url: str, zenlayer_url: str, database_url: str, settings: Mapping[str, str]
) -> dict[str, str]:
    """The environment of replica n (from 0), with the mode's settings."""
    return {
        **os.environ,
        "SLACK_BOT_TOKEN": CREDENTIALS.slack_bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_APP_TOKEN": "",
        "SLACK_API_URL": slack_url,
        "ZENLAYER_ACCESS_KEY_ID": CREDENTIALS.zenlayer_access_key_id,
        "ZENLAYER_ACCESS_KEY_SECRET": CREDENTIALS.zenlayer_access_key_secret,
        "ZENLAYER_TOKEN": "",
        "ZENLAYER_API_URL": zenlayer_url,
        "DATABASE_URL": database_url,
        "START_TIMEOUT_SECONDS": "120",
        "REPLICA_ID": f"replica-{n + 1}",
        "HOST": "127.0.0.1",
        "COMMANDS_PER_MINUTE": "0",  # three users drive all the traffic on purpose
        **settings,
    }


def wait_serving(replica: Replica, timeout: float = 60) -> None:
    """Wait until a replica serves; on failure show the end of its log."""
    try:
        wait_until(replica.healthy, timeout, f"{replica.name} to serve")
    except AssertionError:
        print(f"chaos: {replica.name} did not serve; its log ends:", file=sys.stderr)
        print(replica.log_tail(), file=sys.stderr)
        raise


class Simulator:
    """`vm-bot simulator` as a process, with its control API."""

    def __init__(self, instances: list[str], boot: float, stop: float, log_dir: Path):
        self.port = free_port()
        env = {
            **os.environ,
            "ZENLAYER_ACCESS_KEY_ID": CREDENTIALS.zenlayer_access_key_id,
            "ZENLAYER_ACCESS_KEY_SECRET": CREDENTIALS.zenlayer_access_key_secret,
        }
        args = [sys.executable, "-m", "bot", "simulator", "--port", str(self.port)]
        args += ["--boot-seconds", str(boot), "--stop-seconds", str(stop)]
        for instance in instances:
            args += ["--instance", f"{instance}:STOPPED"]
        with (log_dir / "simulator.log").open("w") as log:
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=log)  # noqa: S603
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._healthy, 20, "the simulator")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/_simulator/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def fault(self, spec: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/_simulator/faults", json=spec, timeout=10).raise_for_status()

    def calls(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_simulator/calls", timeout=10).json()["calls"])

    def statuses(self) -> dict[str, str]:
        """Every instance's status now."""
        rows = httpx.get(f"{self.url}/_simulator/instances", timeout=10).json()["instances"]
        return {row["instanceId"]: row["instanceStatus"] for row in rows}

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@contextmanager
def postgres_url() -> Iterator[tuple[str | None, str | None]]:
    """Yield the URL of a fresh PostgreSQL database, on the CI cluster or a throwaway one (None: no server here),
    and the directory of that cluster when .ci/postgres.sh made it (so it may be restarted)."""
    base_url = os.environ.get("VM_BOT_TEST_POSTGRES_URL", "").strip()
    cluster_dir = os.environ.get("VM_BOT_TEST_POSTGRES_DIR", "").strip() or None
    with ExitStack() as stack:
        if not base_url:
            out = subprocess.run(  # noqa: S603 — the repo's own script
                [str(ROOT / ".ci/postgres.sh")], capture_output=True, text=True, check=True
            ).stdout
            found = dict(re.findall(r"export (\w+)='([^']*)'", out))
            if "VM_BOT_TEST_POSTGRES_URL" not in found:
                yield None, None  # .ci/postgres.sh prints nothing where no server binaries are installed
                return
            base_url = found["VM_BOT_TEST_POSTGRES_URL"]
            cluster_dir = found["VM_BOT_TEST_POSTGRES_DIR"]
            stack.callback(
                subprocess.run, [str(ROOT / ".ci/postgres.sh"), "stop", found["VM_BOT_TEST_POSTGRES_DIR"]], check=False
            )
        base = make_url(base_url)
        if base.drivername == "postgresql":
            base = base.set(drivername="postgresql+psycopg")
        name = f"chaos_{uuid.uuid4().hex[:10]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # it may restart
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = base.set(database=name).render_as_string(hide_password=False)
            yield url, restartable_cluster(url, cluster_dir)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
