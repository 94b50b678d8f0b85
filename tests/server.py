"""Run a real `sluice serve` process for end-to-end tests, and drive it with the client and the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sluice.client import Client
from tests.pg import free_port

SLUICE = str(Path(sys.executable).parent / "sluice")
PASSWORD = "test-password"


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = extra_args
        self.env = {**os.environ, "SLUICE_ADMIN_PASSWORD": PASSWORD, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    SLUICE,
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sluice serve exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.endpoint}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"sluice serve not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server and everything it started, as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> Client:
        return Client(self.endpoint, ("oscar", PASSWORD))

    def cli(
        self, *args: str, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "SLUICE_ENDPOINT": self.endpoint, "SLUICE_ADMIN_USER": "oscar"}
        return subprocess.run(
            [SLUICE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
        )


def wait_for_jobs(client: Client, service: str, count: int, timeout: float = 120) -> list[dict]:
    """Poll until `count` jobs of `service` reached a final state; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    jobs: list[dict] = []
    while time.monotonic() < deadline:
        jobs = list(client.jobs(service))
        if sum(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs) >= count:
            return jobs
        time.sleep(0.2)
    states = {}
    for job in jobs:
        states[job["status"]] = states.get(job["status"], 0) + 1
    raise AssertionError(f"{service}: {count} final jobs expected within {timeout}s, have {states}")
