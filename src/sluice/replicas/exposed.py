"""Exposed services (OSCAR's `expose`): the service's script is itself an HTTP server (a DEEPaaS
model API, a notebook, a dashboard). Sluice keeps copies of it running, each on a local port,
health-checked before it takes traffic and restarted, with a growing pause, when it dies; the API
proxies `/system/services/{name}/exposed/...` to them.

The copies follow the load, between `min_scale` and `max_scale`. Each proxied request holds a
lease on a copy from its start to its answer's last byte, and goes to the healthy copy with the
fewest requests in progress (taking turns among equals). The service wants enough copies for the
busiest moment of the last `idle_timeout` seconds at `target_in_flight` requests each: more load
adds copies at once; less load removes them only once it has lasted that whole window, and only
copies with nothing in progress. With `min_scale: 0` the last copy stops too, and a request that
then finds none waits for the copy it starts.

The port: each copy gets a free port in `$PORT` and must listen there. OSCAR's `api_port` (a fixed
port) is not used: on one host a fixed port could be another service's, and its callers would
reach that service's server.

    runner = ExposedService(name, launch, ExposeScaling(1, 3, target_in_flight=4, idle_timeout=60))
    runner.start()                        # min copies; health checks in the background
    lease = await runner.acquire()        # a healthy copy (Overloaded if there is none)
    ...                                   # proxy to lease.base_url
    lease.release()                       # after the answer's last byte
    await runner.stop()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from sluice.children import DEVNULL, STDOUT, Child, start_child
from sluice.errors import Overloaded, SluiceError
from sluice.replicas.process import ContainerCommands
from sluice.spec.service import Expose

log = logging.getLogger("sluice.exposed")
HEALTH_INTERVAL = 0.2  # while starting
MAX_RESTART_DELAY = 60.0
STOP_GRACE = 5.0
WINDOW_SLICES = 20  # the load window keeps one peak per slice: memory does not grow with traffic
KEPT_DECISIONS = 20


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


@dataclass(frozen=True)
class ExposeScaling:
    min_copies: int
    max_copies: int
    target_in_flight: int  # requests in progress per copy the service is sized for
    idle_timeout: float  # how long lower load must last before copies stop

    @classmethod
    def of(cls, expose: Expose) -> ExposeScaling:
        """OSCAR's bounds made consistent: at most `max_scale` (at least one), at least `min_scale`."""
        most = max(1, expose.max_scale)
        return cls(min(expose.min_scale, most), most, expose.target_in_flight, expose.idle_timeout)

    @property
    def period(self) -> float:
        """How often the load is sampled and the copies adjusted."""
        return min(1.0, max(0.05, self.idle_timeout / 10))

    def as_dict(self) -> dict[str, Any]:
        return {
            "min_scale": self.min_copies,
            "max_scale": self.max_copies,
            "target_in_flight": self.target_in_flight,
            "idle_timeout": self.idle_timeout,
        }


def wanted_copies(scaling: ExposeScaling, peak_in_flight: int) -> int:
    """Copies for `peak_in_flight` requests at `target_in_flight` each, within the bounds."""
    wanted = math.ceil(peak_in_flight / scaling.target_in_flight)
    return max(scaling.min_copies, min(scaling.max_copies, wanted))


class LoadWindow:
    """The most requests in progress at once over the last `span` seconds (and up to a slice more)."""

    def __init__(self, span: float, slices: int = WINDOW_SLICES) -> None:
        self.span = span
        self.width = span / slices
        self._peaks: collections.deque[list[float]] = collections.deque()  # [slice start, peak]

    def record(self, now: float, in_flight: int) -> None:
        start = now - now % self.width
        if self._peaks and self._peaks[-1][0] == start:
            self._peaks[-1][1] = max(self._peaks[-1][1], in_flight)
        else:
            self._peaks.append([start, in_flight])

    def peak(self, now: float) -> int:
        while self._peaks and self._peaks[0][0] + self.width <= now - self.span:
            self._peaks.popleft()
        return int(max((peak for _, peak in self._peaks), default=0))


class _Copy:
    def __init__(self, launch: ExposedLaunch, port: int, on_healthy: Callable[[], None]) -> None:
        self.launch = launch
        self.port = port
        self.healthy = False
        self.in_flight = 0
        self.requests = 0
        self.process: Child | None = None
        self.commands: ContainerCommands | None = None  # when the copy is a container
        self.started_at = time.monotonic()
        self.failure = ""  # why it never became healthy
        self._on_healthy = on_healthy

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "state": "ready" if self.healthy else "starting",
            "in_flight": self.in_flight,
            "requests": self.requests,
        }

    async def run(self, session: aiohttp.ClientSession) -> int | None:
        """Start, wait until healthy, then until it exits; returns its exit code (None: never healthy)."""
        argv, env = self.launch.argv, {**self.launch.env, "PORT": str(self.port)}
        if self.launch.container is not None:
            self.commands = self.launch.container(f"sluice-exposed-{uuid.uuid4().hex[:12]}", self.port)
            argv, env = self.commands.run, self.commands.env
        with self.launch.log.open("ab") as output:
            process = self.process = await start_child(
                *argv,
                env=env,
                cwd=self.launch.cwd,
                stdin=DEVNULL,
                stdout=output,
                stderr=STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.launch.start_timeout
        health = self.launch.health_path
        while not self.healthy:
            if process.returncode is not None:
                self.failure = f"exited with code {process.returncode} before answering {health}"
                await self.stop()
                return None
            if time.monotonic() > deadline:
                self.failure = f"did not answer {health} within {self.launch.start_timeout:g} s"
                await self.stop()
                return None
            self.healthy = await self._answers_health_check(session)
            if self.healthy:
                self._on_healthy()
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(process.wait(), HEALTH_INTERVAL)
        code = await process.wait()
        self.healthy = False
        return code

    async def _answers_health_check(self, session: aiohttp.ClientSession) -> bool:
        # `Connection: close`: the answer's body is not read, and an app kept waiting on the
        # connection for a next request would see it reset (a traceback in its log).
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            url = self.base_url + self.launch.health_path
            timeout = aiohttp.ClientTimeout(total=2)
            async with session.get(url, headers={"Connection": "close"}, timeout=timeout) as response:
                return response.status < 500
        return False

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
                remover = await start_child(
                    *commands.remove, env=commands.env,
                    stdout=DEVNULL, stderr=DEVNULL,
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


class _Slot:
    """A place for one copy: its task keeps a copy running there, a new one when the last died."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.copy: _Copy | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        return self.copy is not None and self.copy.healthy

    @property
    def idle(self) -> bool:
        return self.copy is None or self.copy.in_flight == 0


class Lease:
    """One request's hold on a copy, from its start to its answer's last byte."""

    def __init__(self, service: ExposedService, copy: _Copy) -> None:
        self.base_url = copy.base_url
        self._service: ExposedService | None = service
        self._copy = copy
        copy.in_flight += 1
        copy.requests += 1
        service.in_flight += 1

    def release(self) -> None:
        """Give the copy back; a second call does nothing."""
        if self._service is not None:
            self._copy.in_flight -= 1
            self._service.in_flight -= 1
            self._service = None


def least_busy(copies: Sequence[_Copy], turn: int) -> _Copy | None:
    """The copy with the fewest requests in progress; `turn` picks among equals, so they take turns."""
    if not copies:
        return None
    fewest = min(copy.in_flight for copy in copies)
    tied = [copy for copy in copies if copy.in_flight == fewest]
    return tied[turn % len(tied)]


def slots_to_stop(slots: Sequence[_Slot], count: int) -> list[_Slot]:
    """Up to `count` copies with nothing in progress: those still starting first, then the newest."""
    idle = sorted((slot for slot in slots if slot.idle), key=lambda slot: (slot.healthy, -slot.number))
    return idle[:count]


class ExposedService:
    def __init__(self, name: str, launch: ExposedLaunch, scaling: ExposeScaling) -> None:
        self.name = name
        self.launch = launch
        self.scaling = scaling
        self.in_flight = 0  # requests holding a copy
        self.waiting = 0  # requests waiting for a copy to start (scaled to zero)
        self.restarts = 0
        self.start_failures = 0
        self.scale_ups = 0
        self.scale_downs = 0
        self.last_error: str | None = None
        self.decisions: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEPT_DECISIONS)
        self._slots: list[_Slot] = []
        self._stopping: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count()
        self._turn = itertools.count()
        self._window = LoadWindow(scaling.idle_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._autoscaler: asyncio.Task[None] | None = None
        self._change: asyncio.Future[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Start `min_scale` copies (in the background: health checks run until each answers)."""
        self._session = aiohttp.ClientSession()
        self._change = asyncio.get_running_loop().create_future()
        for _ in range(self.scaling.min_copies):
            self._add_slot()
        self._autoscaler = asyncio.create_task(self._autoscale(), name=f"exposed-{self.name}-scaling")

    def prime(self) -> None:
        """Count one request now, as a call would: a service scaled to zero starts a copy, kept for
        `idle_timeout` if no call comes."""
        self._window.record(time.monotonic(), self.in_flight + 1)
        self._adjust()

    async def acquire(self) -> Lease:
        """A lease on the healthy copy with the fewest requests in progress. With none: with
        `min_scale: 0`, wait for the copy this request starts; otherwise 503 (copies are starting)."""
        if self._closed:
            raise Overloaded(f"service '{self.name}' was changed or stopped; call again", 1)
        self.waiting += 1
        try:
            self._adjust()  # counts this request: a busier service gets more copies at once
            copy = self._pick()
            if copy is None and self.scaling.min_copies > 0:
                raise self._starting()
            if copy is None:
                copy = await self._wait_for_copy()
        finally:
            self.waiting -= 1
        return Lease(self, copy)

    async def stop(self) -> None:
        self._closed = True
        self._notify()
        tasks = [slot.task for slot in self._slots if slot.task is not None]
        tasks += [self._autoscaler] if self._autoscaler else []
        for task in tasks:
            task.cancel()
        # Copies being scaled down are already stopping: a second cancel would cut their clean-up
        # short (no SIGKILL for a copy that ignores SIGTERM, its env-file left behind).
        await asyncio.gather(*tasks, *self._stopping, return_exceptions=True)
        # A copy whose task was cancelled before its own clean-up ran.
        copies = [slot.copy for slot in self._slots if slot.copy is not None]
        await asyncio.gather(*(copy.stop() for copy in copies), return_exceptions=True)
        self._slots.clear()
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def idle_status(scaling: ExposeScaling) -> dict[str, Any]:
        """The status of a service with nothing running (stopped, or not started yet)."""
        return {"copies": 0, "healthy": 0, "starting": 0, "in_flight": 0, "waiting": 0, "replicas": [],
                "ports": [], "scaling": scaling.as_dict(), "scale_ups": 0, "scale_downs": 0,
                "decisions": [], "restarts": 0, "last_error": None}  # fmt: skip

    def status(self) -> dict[str, Any]:
        copies = [slot.copy for slot in self._slots if slot.copy is not None]
        healthy = sum(slot.healthy for slot in self._slots)
        return {
            "copies": len(self._slots),
            "healthy": healthy,
            "starting": len(self._slots) - healthy,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "replicas": [copy.status() for copy in copies],
            "ports": [copy.port for copy in copies],
            "scaling": self.scaling.as_dict(),
            "scale_ups": self.scale_ups,
            "scale_downs": self.scale_downs,
            "decisions": list(self.decisions),
            "restarts": self.restarts,
            "last_error": self.last_error,
        }

    # scaling

    async def _autoscale(self) -> None:
        """Sample the load and adjust the copies every `period`, also while no request arrives."""
        while True:
            await asyncio.sleep(self.scaling.period)
            try:
                self._adjust()
            except Exception:  # the next tick tries again; the copies keep serving meanwhile
                log.exception("exposed service %s: scaling failed", self.name)

    def _adjust(self) -> None:
        """Record the requests in progress now and bring the copies to what the window wants."""
        if self._closed:
            return
        now = time.monotonic()
        self._window.record(now, self.in_flight + self.waiting)
        peak = self._window.peak(now)
        before = len(self._slots)
        target = wanted_copies(self.scaling, peak)
        if target > before:
            for _ in range(target - before):
                self._add_slot()
            self.scale_ups += 1
        elif target < before:
            stopping = slots_to_stop(self._slots, before - target)
            if not stopping:
                return
            for slot in stopping:
                self._stop_slot(slot)
            self.scale_downs += 1
        else:
            return
        self._record_decision(before, peak)

    def _record_decision(self, before: int, peak: int) -> None:
        after = len(self._slots)
        self.decisions.append({
            "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "from": before,
            "to": after,
            "peak_in_flight": peak,
            "in_flight": self.in_flight + self.waiting,
        })  # fmt: skip
        log.info(
            "exposed service %s: %d -> %d copies (at most %d requests in progress in the last %g s)",
            self.name, before, after, peak, self.scaling.idle_timeout,
        )  # fmt: skip

    def _add_slot(self) -> None:
        slot = _Slot(next(self._numbers))
        slot.task = asyncio.create_task(self._keep_running(slot), name=f"exposed-{self.name}-{slot.number}")
        self._slots.append(slot)

    def _stop_slot(self, slot: _Slot) -> None:
        """Take the copy out of rotation now (no request can pick it) and stop it in the background."""
        self._slots.remove(slot)
        if slot.task is not None:
            slot.task.cancel()
            self._stopping.add(slot.task)
            slot.task.add_done_callback(self._stopping.discard)

    # picking a copy

    def _pick(self) -> _Copy | None:
        healthy = [slot.copy for slot in self._slots if slot.healthy and slot.copy is not None]
        return least_busy(healthy, next(self._turn))

    async def _wait_for_copy(self) -> _Copy:
        """Scaled to zero: wait until a copy is healthy; fail at once when a start fails."""
        failures = self.start_failures
        deadline = time.monotonic() + self.launch.start_timeout + STOP_GRACE
        while True:
            copy = self._pick()
            if copy is not None:
                return copy
            if self._closed:
                raise Overloaded(f"service '{self.name}' was changed or stopped; call again", 1)
            if self.start_failures > failures:
                raise Overloaded(f"service '{self.name}' could not start: {self.last_error}", 5)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._change is None:
                raise self._starting()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._change), remaining)

    def _starting(self) -> Overloaded:
        return Overloaded(f"service '{self.name}' is starting: no copy answers its health check yet", 2)

    def _notify(self) -> None:
        """Wake the requests waiting for a copy (one became healthy, or a start failed)."""
        change = self._change
        if change is None:
            return
        self._change = change.get_loop().create_future()
        if not change.done():
            change.set_result(None)

    # keeping a copy running

    async def _keep_running(self, slot: _Slot) -> None:
        failures = 0
        while True:
            port = _free_port()
            copy = slot.copy = _Copy(self.launch, port, self._notify)
            why = None
            try:
                if self._session is None:
                    raise RuntimeError("the exposed service was not started")
                code = await copy.run(self._session)
            except (OSError, ValueError, SluiceError) as exc:  # could not start: no GPU, no login
                code, why = None, f"copy {slot.number} could not start: {exc}"
            finally:
                slot.copy = None
                await copy.stop()
            if code is None:
                failures += 1
                self.start_failures += 1
                self.last_error = why or (
                    f"copy {slot.number} on port {port} {copy.failure} (see {self.launch.log.name})"
                )
            else:
                self.last_error = f"copy {slot.number} exited with code {code} (see {self.launch.log.name})"
                failures = 0 if time.monotonic() - copy.started_at > MAX_RESTART_DELAY else failures + 1
            self.restarts += 1
            self._notify()
            log.warning("exposed service %s: %s; restarting", self.name, self.last_error)
            await asyncio.sleep(min(MAX_RESTART_DELAY, 0.5 * 2 ** max(0, failures - 1)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
