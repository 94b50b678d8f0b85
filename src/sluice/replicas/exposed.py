"""Exposed services (OSCAR's `expose`): the service's script is itself an HTTP server (a DEEPaaS
model API, a notebook, a dashboard). Sluice keeps `min_scale` copies of it running (at least
one), each on a local port, health-checked before it takes traffic and restarted, with a growing
pause, when it dies; the API proxies `/system/services/{name}/exposed/...` to them.

The port: each copy gets a free port in `$PORT` and must listen there. OSCAR's `api_port` (a fixed
port) is not used: on one host a fixed port could be another service's, and its callers would
reach that service's server.

    runner = ExposedService(name, launch, copies=1)
    runner.start()                        # starts the copies; health checks in the background
    base_url = runner.pick()              # "http://127.0.0.1:PORT" of a healthy copy, or None
    await runner.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from sluice.errors import SluiceError
from sluice.replicas.process import ContainerCommands

log = logging.getLogger("sluice.exposed")
HEALTH_INTERVAL = 0.2  # while starting
MAX_RESTART_DELAY = 60.0
STOP_GRACE = 5.0


@dataclass(frozen=True)
class ExposedLaunch:
    argv: list[str]  # ["/bin/sh", script]
    env: dict[str, str]
    cwd: Path
    log: Path
    health_path: str
    start_timeout: float
    # In the service's image: given a container name and a port, the engine's command lines (the
    # container publishes the port on 127.0.0.1 and gets it in $PORT).
    container: Callable[[str, int], ContainerCommands] | None = None


class _Copy:
    def __init__(self, launch: ExposedLaunch, port: int) -> None:
        self.launch = launch
        self.port = port
        self.healthy = False
        self.process: asyncio.subprocess.Process | None = None
        self.commands: ContainerCommands | None = None  # when the copy is a container
        self.started_at = time.monotonic()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(self, session: aiohttp.ClientSession) -> int | None:
        """Start, wait until healthy, then until it exits; returns its exit code (None: never healthy)."""
        argv, env = self.launch.argv, {**self.launch.env, "PORT": str(self.port)}
        if self.launch.container is not None:
            self.commands = self.launch.container(f"sluice-exposed-{uuid.uuid4().hex[:12]}", self.port)
            argv, env = self.commands.run, self.commands.env
        with self.launch.log.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=self.launch.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.launch.start_timeout
        while not self.healthy:
            if self.process.returncode is not None or time.monotonic() > deadline:
                await self.stop()
                return None
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                url = self.base_url + self.launch.health_path
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    self.healthy = response.status < 500
            if not self.healthy:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.process.wait(), HEALTH_INTERVAL)
        code = await self.process.wait()
        self.healthy = False
        return code

    async def stop(self) -> None:
        """SIGTERM to the copy's whole process group (a server the script started in the background
        included, also when the script itself has exited), SIGKILL after a grace period."""
        self.healthy = False
        process = self.process
        if process is None:
            return
        commands, self.commands = self.commands, None
        if commands is not None:  # the container outlives its engine client: remove it
            with contextlib.suppress(OSError):
                remover = await asyncio.create_subprocess_exec(
                    *commands.remove, env=commands.env,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                await remover.wait()
            for path in commands.temporary:
                path.unlink(missing_ok=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_GRACE):
                await process.wait()
        except TimeoutError:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


class ExposedService:
    def __init__(self, name: str, launch: ExposedLaunch, copies: int) -> None:
        self.name = name
        self.launch = launch
        self.copies = max(1, copies)
        self._running: list[_Copy] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._turn = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self.restarts = 0
        self.last_error: str | None = None

    def start(self) -> None:
        """Start the copies (in the background: health checks run until each answers)."""
        self._session = aiohttp.ClientSession()
        for index in range(self.copies):
            self._tasks.append(
                asyncio.create_task(self._keep_running(index), name=f"exposed-{self.name}-{index}")
            )

    def pick(self) -> str | None:
        """The base URL of a healthy copy, taking turns; None while none is healthy."""
        healthy = [copy for copy in self._running if copy.healthy]
        if not healthy:
            return None
        return healthy[next(self._turn) % len(healthy)].base_url

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(copy.stop() for copy in self._running), return_exceptions=True)
        self._running.clear()
        if self._session is not None:
            await self._session.close()

    def status(self) -> dict[str, Any]:
        return {
            "copies": self.copies,
            "healthy": sum(copy.healthy for copy in self._running),
            "ports": [copy.port for copy in self._running],
            "restarts": self.restarts,
            "last_error": self.last_error,
        }

    async def _keep_running(self, index: int) -> None:
        failures = 0
        while True:
            port = _free_port()
            copy = _Copy(self.launch, port)
            self._running.append(copy)
            why = None
            try:
                assert self._session is not None
                code = await copy.run(self._session)
            except (OSError, ValueError, SluiceError) as exc:  # could not start: no GPU, no login
                code, why = None, f"copy {index} could not start: {exc}"
            finally:
                with contextlib.suppress(ValueError):
                    self._running.remove(copy)
                await copy.stop()
            if code is None:
                failures += 1
                self.last_error = why or (
                    f"copy {index} did not answer {self.launch.health_path} on port {port} "
                    f"within {self.launch.start_timeout:g} s (see {self.launch.log.name})"
                )
            else:
                self.last_error = f"copy {index} exited with code {code} (see {self.launch.log.name})"
                failures = 0 if time.monotonic() - copy.started_at > MAX_RESTART_DELAY else failures + 1
            self.restarts += 1
            log.warning("exposed service %s: %s; restarting", self.name, self.last_error)
            await asyncio.sleep(min(MAX_RESTART_DELAY, 0.5 * 2 ** max(0, failures - 1)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
