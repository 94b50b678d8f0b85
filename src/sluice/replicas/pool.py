"""The replicas of one handler service, scaled with the load.

A call takes a ready replica with a free slot (`concurrency` calls each; a batch's `max_size`
with batching). With none free, it waits in a bounded line (`max_waiting`, beyond it 503) and
the pool starts replicas, up to `max_scale`, for the calls in flight and waiting. A replica
with no call for `idle_timeout` seconds stops while more than `min_scale` run; with
`min_scale: 0` the last one stops too (scale to zero) and the next call waits for a cold start.
A replica still starting is never reaped. A call past its timeout answers 504 and its replica
is killed and replaced; a replica that dies fails its calls with 502 and is replaced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sluice.errors import InvocationFailed, InvocationTimeout, Overloaded
from sluice.metrics import Metrics
from sluice.replicas.process import (
    DEAD,
    READY,
    STARTING,
    Answer,
    Call,
    HandlerFailed,
    Launch,
    ReplicaGone,
    ReplicaProcess,
    Spare,
)

log = logging.getLogger("sluice.replicas")
MAX_RESTART_DELAY = 60.0
MAX_LOG = 16 * 1024 * 1024
KEPT_LOG = 1024 * 1024
OUTCOMES = ("ok", "handler_error", "timeout", "replica_failed", "overloaded", "cancelled")


@dataclass(frozen=True)
class Scaling:
    min_scale: int
    max_scale: int
    concurrency: int
    idle_timeout: float
    max_waiting: int
    timeout: float  # per call, waiting for a replica included
    start_timeout: float  # for a replica to start and its init to return


@dataclass(frozen=True)
class Timing:
    queue_wait: float  # seconds waiting for a free replica (a cold start included)
    handler: float  # seconds from sending the call to the replica to its answer


@dataclass
class Stats:
    calls: int = 0
    failures: int = 0
    cold_starts: int = 0
    last_cold_start_seconds: float | None = None
    last_error: str | None = None


class HandlerError(InvocationFailed):
    """The handler refused or failed a call: its own status (4xx, 500) and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status


class SpareSource(Protocol):
    """Replicas started ahead of need (interpreter up, Sluice's imports done)."""

    def take(self) -> Spare | None:
        """A spare for a cold start, if one is ready."""

    def replace(self) -> None:
        """Start the next spare. Called once the cold start that took one is over: the two
        compete for the CPU otherwise (the digits model's imports took 30-40% longer beside a
        spare's start on 2 cores)."""


class ReplicaPool:
    def __init__(
        self,
        service: str,
        launch: Launch,
        scaling: Scaling,
        metrics: Metrics | None = None,
        spares: SpareSource | None = None,
    ) -> None:
        self.service = service
        self._spares = spares  # replicas started ahead: a cold start takes one if there is one
        self.metrics = metrics
        self.launch = launch
        self.scaling = scaling
        self.replicas: list[ReplicaProcess] = []
        self.stats = Stats()
        self._waiters: collections.deque[asyncio.Future[ReplicaProcess]] = collections.deque()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._start_failures = 0
        self._observe = _Observer(metrics, service) if metrics is not None else None

    # calls

    async def call(self, call: Call) -> tuple[Answer, Timing]:
        """Answer one call; also says how long it waited for a replica and the replica took.

        Waiting for a replica and the handler's own work are each bounded by the service's
        `timeout`: only a handler that overran its own budget has its replica killed.
        """
        self._ensure_reaper()
        arrived = time.monotonic()
        outcome = "ok"
        try:
            if self._closed:
                raise InvocationFailed(f"service '{self.service}' was changed or removed; call again")
            replica = self._take_free()
            if replica is None:
                replica = await self._wait_for_replica(arrived + self.scaling.timeout)
            sent = time.monotonic()
            self.stats.calls += 1
            try:
                async with asyncio.timeout(self.scaling.timeout):
                    answer = await replica.call(call)
            except (ReplicaGone, HandlerFailed):
                raise
            except BaseException:
                # Timed out or abandoned (a cancelled job): the handler is still busy with the call,
                # and only a kill frees the slot. Before the release, which would hand it on.
                replica.kill()
                raise
            finally:
                self._release(replica)
            done = time.monotonic()
        except TimeoutError:
            outcome = "timeout"
            self.stats.last_error = f"a call ran past the {self.scaling.timeout:g} s timeout"
            raise InvocationTimeout(
                f"service '{self.service}' did not answer within its {self.scaling.timeout:g} s timeout"
            ) from None
        except ReplicaGone as exc:
            outcome = "replica_failed"
            raise InvocationFailed(f"service '{self.service}': {exc}") from None
        except HandlerFailed as exc:
            outcome = "handler_error"
            raise HandlerError(exc.status, exc.message) from None
        except Overloaded:
            outcome = "overloaded"
            raise
        except InvocationTimeout:
            outcome = "timeout"  # no replica became free in time
            raise
        except InvocationFailed:
            outcome = "replica_failed"  # no replica could start
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"  # a job cancelled, the server stopping
            raise
        finally:
            if outcome != "ok":
                self.stats.failures += 1
            if self._observe is not None:
                self._observe.calls(outcome)
        timing = Timing(sent - arrived, done - sent)
        if self._observe is not None:
            self._observe.timing(timing)
        return answer, timing

    def _take_free(self) -> ReplicaProcess | None:
        best = None
        for replica in self.replicas:
            free = replica.state == READY and replica.in_flight < self.scaling.concurrency
            if free and (best is None or replica.in_flight < best.in_flight):
                best = replica
        if best is not None:
            best.in_flight += 1
            best.last_used = time.monotonic()  # taken: not idle, whatever the reaper saw before
        return best

    async def _wait_for_replica(self, deadline: float) -> ReplicaProcess:
        if len(self._waiters) >= self.scaling.max_waiting:
            if self._live() == 0:
                self._start_replica()  # no line to wait in, but the next call finds a replica
            raise Overloaded(
                f"service '{self.service}' is busy: {self._in_flight()} calls running and "
                f"{len(self._waiters)} waiting (the most allowed); retry later"
            )
        waiter: asyncio.Future[ReplicaProcess] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._scale_up()
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                return await waiter
        except BaseException as exc:
            # Given up (timeout, cancellation) in the very turn a replica was handed over: its
            # slot goes back, or it would stay taken for good.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())
            if isinstance(exc, TimeoutError):  # not re-raised as is: no replica of ours to kill
                raise InvocationTimeout(
                    f"service '{self.service}' found no free replica in {self.scaling.timeout:g} s"
                ) from None
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _release(self, replica: ReplicaProcess) -> None:
        replica.in_flight -= 1
        replica.last_used = time.monotonic()
        if replica.state == READY:
            self._hand_over(replica)

    def _hand_over(self, replica: ReplicaProcess) -> None:
        """Give a replica's free slots to the calls waiting longest."""
        while self._waiters and replica.in_flight < self.scaling.concurrency:
            waiter = self._waiters.popleft()
            if not waiter.done():
                replica.in_flight += 1
                replica.last_used = time.monotonic()
                waiter.set_result(replica)

    def _fail_waiters(self, message: str) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(InvocationFailed(f"service '{self.service}': {message}"))

    def _in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)

    # scaling

    def ensure_min(self) -> None:
        """Start replicas until `min_scale` run or start (a warm pool before the first call)."""
        missing = self.scaling.min_scale - self._live()
        for _ in range(max(0, missing)):
            self._start_replica()

    def warm_one(self) -> None:
        """At least one replica running or starting (a readiness probe on a scaled-to-zero service)."""
        self._ensure_reaper()
        if self._live() == 0:
            self._start_replica()

    @property
    def ready(self) -> bool:
        return any(r.state == READY for r in self.replicas)

    def _live(self) -> int:
        return sum(r.state in (STARTING, READY) for r in self.replicas)

    def _scale_up(self) -> None:
        demand = self._in_flight() + len(self._waiters)
        wanted = min(self.scaling.max_scale, math.ceil(demand / self.scaling.concurrency))
        for _ in range(wanted - self._live()):
            self._start_replica()

    def _start_replica(self) -> None:
        if self._closed:
            return
        replica = ReplicaProcess(self.launch, self._replica_exited)
        self.replicas.append(replica)
        asyncio.get_running_loop().create_task(self._bring_up(replica), name=f"start-{self.service}")

    async def _bring_up(self, replica: ReplicaProcess) -> None:
        try:
            spare = self._spares.take() if self._spares and not self.launch.fresh_process else None
            try:
                await replica.start(self.scaling.start_timeout, spare)
            finally:
                if spare is not None and self._spares is not None:
                    self._spares.replace()
        except Exception as exc:
            with contextlib.suppress(ValueError):
                self.replicas.remove(replica)  # whatever failed, it no longer counts as starting
            await replica.abort()
            message = f"a replica could not start: {exc}" if isinstance(exc, ReplicaGone) else None
            if message is None:
                log.exception("service %s: starting a replica failed", self.service)
                message = "a replica could not start (see the server's log)"
            self.stats.last_error = message
            log.warning("service %s: %s", self.service, message)
            if not any(r.state == READY for r in self.replicas):
                self._fail_waiters(message)  # nothing else will serve them
            self._retry_later()
            return
        self._start_failures = 0
        self.stats.cold_starts += 1
        self.stats.last_cold_start_seconds = (replica.ready_at or replica.started_at) - replica.started_at
        if self._observe is not None:
            self._observe.cold_start(self.stats.last_cold_start_seconds)
        if self._closed:
            await replica.stop()
            return
        self._hand_over(replica)

    def _retry_later(self) -> None:
        """After a failed start, keep `min_scale` with a growing pause, not a tight restart loop
        (an init that raises would otherwise run over and over). Calls still start one at once."""
        self._start_failures += 1
        delay = min(MAX_RESTART_DELAY, 0.5 * 2 ** (self._start_failures - 1))
        asyncio.get_running_loop().call_later(delay, self._restart_after_failure)

    def _restart_after_failure(self) -> None:
        if not self._closed:
            self.ensure_min()

    def _replica_exited(self, replica: ReplicaProcess) -> None:
        with contextlib.suppress(ValueError):
            self.replicas.remove(replica)
        if replica.ready_at is None or self._closed:
            return  # a failed start: `_bring_up` schedules what follows
        if replica.error:
            self.stats.last_error = replica.error
            log.warning("service %s: replica %s: %s", self.service, replica.id, replica.error)
        if self._waiters:
            self._scale_up()
        self.ensure_min()

    def _ensure_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(
                self._reap_idle(), name=f"reap-{self.service}"
            )

    async def _reap_idle(self) -> None:
        period = min(1.0, self.scaling.idle_timeout / 4)
        while True:
            await asyncio.sleep(period)
            _trim(self.launch.log)
            idle = sorted(
                (r for r in self.replicas if r.state == READY and r.in_flight == 0),
                key=lambda r: r.last_used,
            )
            for replica in idle:
                if self._live() <= self.scaling.min_scale:
                    break
                # Checked again for each: a stop awaits, and a call may take a replica meanwhile.
                still_idle = replica.state == READY and replica.in_flight == 0
                if still_idle and time.monotonic() - replica.last_used >= self.scaling.idle_timeout:
                    await replica.stop()

    async def close(self, drain: float = 0.0) -> None:
        """Stop every replica; calls still waiting fail. With `drain`, calls being answered get
        up to that many seconds to finish first (a service update must not cut them off)."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        self._fail_waiters("the service was changed or removed")
        deadline = time.monotonic() + drain
        while self._in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.gather(*(r.stop() for r in list(self.replicas)), return_exceptions=True)

    @staticmethod
    def idle_status() -> dict[str, Any]:
        """The status of a service with no pool (stopped): nothing runs."""
        return {"replicas": [], "ready": 0, "starting": 0, "in_flight": 0, "waiting": 0, "calls": 0,
                "failures": 0, "cold_starts": 0, "last_cold_start_seconds": None, "last_error": None,
                "scaling": None}  # fmt: skip

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "replicas": [
                {
                    "id": r.id,
                    "pid": r.pid,
                    "state": r.state,
                    "in_flight": r.in_flight,
                    "idle_seconds": round(now - r.last_used, 3) if r.state == READY else None,
                }
                for r in self.replicas
                if r.state != DEAD
            ],
            "ready": sum(r.state == READY for r in self.replicas),
            "starting": sum(r.state == STARTING for r in self.replicas),
            "in_flight": self._in_flight(),
            "waiting": len(self._waiters),
            "calls": self.stats.calls,
            "failures": self.stats.failures,
            "cold_starts": self.stats.cold_starts,
            "last_cold_start_seconds": self.stats.last_cold_start_seconds,
            "last_error": self.stats.last_error,
            "scaling": {
                "min_scale": self.scaling.min_scale,
                "max_scale": self.scaling.max_scale,
                "concurrency": self.scaling.concurrency,
                "idle_timeout": self.scaling.idle_timeout,
            },
        }


class _Observer:
    """The pool's metric series, looked up once: a label lookup per call costs microseconds."""

    def __init__(self, metrics: Metrics, service: str) -> None:
        self._calls = {outcome: metrics.calls.labels(service, outcome) for outcome in OUTCOMES}
        self._queue_wait = metrics.queue_wait.labels(service)
        self._handler = metrics.handler_time.labels(service)
        self._cold_start = metrics.cold_starts.labels(service)

    def calls(self, outcome: str) -> None:
        self._calls[outcome].inc()

    def timing(self, timing: Timing) -> None:
        self._queue_wait.observe(timing.queue_wait)
        self._handler.observe(timing.handler)

    def cold_start(self, seconds: float) -> None:
        self._cold_start.observe(seconds)


def _trim(log: Path) -> None:
    """Keep the replicas' log under MAX_LOG bytes: past it, only its last KEPT_LOG bytes stay.
    The replicas write with O_APPEND, so their next lines land at the new end."""
    try:
        if log.stat().st_size <= MAX_LOG:
            return
        with log.open("r+b") as handle:
            handle.seek(-KEPT_LOG, os.SEEK_END)
            tail = handle.read()
            handle.seek(0)
            handle.write(b"[sluice] earlier lines removed to keep this log small\n" + tail)
            handle.truncate()
    except OSError:
        pass


def _loop_time(deadline: float) -> float:
    """A time.monotonic() deadline on the event loop's clock (they can differ)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())
