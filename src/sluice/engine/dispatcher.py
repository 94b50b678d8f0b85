"""The worker loop: claim queued jobs, run each through the runtime contract, record how it ended.

Concurrency is bounded by `slots`. A new job wakes the loop at once (no polling delay on this
server); polling every `poll_interval` picks up retries that became due and jobs that other API
servers accepted. Leases are renewed by a heartbeat while jobs run; a job cancelled elsewhere
(its lease can no longer be renewed) is killed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection

from sluice.db import jobs as job_sql
from sluice.db.database import Database
from sluice.db.jobs import FAILED, SUCCEEDED, Job
from sluice.engine.catalog import ServiceCatalog
from sluice.engine.recorder import Operation, Recorder
from sluice.engine.retry import RetryStrategy
from sluice.errors import SluiceError
from sluice.executors.base import Executor
from sluice.executors.slots import Slots
from sluice.metrics import Metrics
from sluice.replicas.manager import ReplicaManager
from sluice.runtime.invocation import InvocationInput, invoke, invoke_handler
from sluice.runtime.workspace import WorkspacePool
from sluice.storage.registry import StorageRouter

log = logging.getLogger("sluice.dispatcher")
PREFETCH = 2


class Dispatcher:
    def __init__(
        self,
        *,
        db: Database,
        catalog: ServiceCatalog,
        storage: StorageRouter,
        executor: Executor,
        replicas: ReplicaManager,
        metrics: Metrics,
        worker_id: str,
        slots: int,
        lease: float,
        default_timeout: float,
        log_limit: int,
        retry: RetryStrategy,
        poll_interval: float = 0.5,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.storage = storage
        self.executor = executor
        self.replicas = replicas
        self.metrics = metrics
        self.worker_id = worker_id
        self.slots = slots
        self.lease = lease
        self.default_timeout = default_timeout
        self.log_limit = log_limit
        self.retry = retry
        self.poll_interval = poll_interval
        self._running: dict[str, asyncio.Task[None]] = {}  # until the outcome is recorded
        # A slot is held only while a script runs; twice as many jobs are claimed, so the next
        # ones stage their input while the current ones run.
        self._slots = Slots(slots) if slots > 0 else None
        self._capacity = slots * PREFETCH
        self._wakeup = asyncio.Event()
        self._recording = 0  # jobs whose outcome waits in the recorder
        # Jobs asked for by claims still in flight (the loop's, the recorder's top-up): neither
        # claims what the other may already be taking.
        self._reserved = 0
        self._top_up_limit = 0
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> int:
        return len(self._running)

    def wake(self) -> None:
        self._wakeup.set()

    def cancel_local(self, job_id: str) -> bool:
        task = self._running.get(job_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def start(self, workspaces: WorkspacePool) -> None:
        self.workspaces = workspaces
        self.recorder = Recorder(self.db, top_up=self)
        # A single-node (SQLite) server owns every job: what was running when it stopped died with it.
        requeued = await self.db.call_relaxed(
            job_sql.requeue_expired, time.time(), everything_running=self.db.is_sqlite
        )
        if requeued:
            log.warning("requeued %d jobs left running by a previous run", requeued)
        self._tasks = [asyncio.create_task(self._sweep(), name="sluice-sweep")]
        if self.slots > 0:  # 0 slots: an API-only server that accepts jobs for others to run
            self._tasks += [
                asyncio.create_task(self._loop(), name="sluice-dispatch"),
                asyncio.create_task(self._heartbeat(), name="sluice-heartbeat"),
            ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        running = list(self._running.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*self._tasks, *running, return_exceptions=True)
        await self.recorder.drain()
        await self.db.call_relaxed(job_sql.release, self.worker_id, time.time())

    async def _loop(self) -> None:
        while True:
            self._wakeup.clear()
            free = self._capacity - len(self._running) - self._reserved
            claimed: list[Job] = []
            # Claim in batches (half the capacity at least) while slots are busy anyway: fewer
            # transactions per job; with nothing running, claim whatever is there at once.
            if free >= max(1, self._capacity // 2) or (free > 0 and not self._running):
                self._reserved += free
                try:
                    claimed = await self.db.call_relaxed(
                        job_sql.claim, self.worker_id, free, time.time(), self.lease
                    )
                except Exception:
                    log.exception("claiming jobs failed; retrying")
                finally:
                    self._reserved -= free
                self._start(claimed)
                if claimed and len(claimed) == free:
                    continue  # there may be more queued: claim again as soon as a slot frees
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.poll_interval)

    def _start(self, claimed: list[Job]) -> None:
        for job in claimed:
            self._running[job.id] = asyncio.create_task(self._execute(job), name=f"job-{job.id}")

    # The recorder's top-up: the jobs that replace finished ones are claimed in the transaction
    # that records how those ended.

    def operation(self) -> Callable[[Connection], list[Job]] | None:
        # Jobs whose outcome is being recorded are about to leave `_running`.
        free = self._capacity - len(self._running) + self._recording - self._reserved
        if free <= 0 or self.slots == 0 or self._stopping:
            return None
        self._top_up_limit = free
        self._reserved += free
        return functools.partial(
            job_sql.claim, worker=self.worker_id, limit=free, now=time.time(), lease=self.lease
        )

    def accept(self, result: list[Job] | None) -> None:
        self._reserved -= self._top_up_limit
        self._top_up_limit = 0
        if result and not self._stopping:  # else `stop` releases them, with every job it holds
            self._start(result)

    async def _execute(self, job: Job) -> None:
        try:
            await self._run_job(job)
        except asyncio.CancelledError:
            pass  # cancelled by request (already recorded) or shutting down (the job is released)
        except Exception as exc:
            log.exception("job %s failed in the platform", job.id)
            await self._record_failure(job, None, "", f"platform error: {exc}")
        finally:
            # A failed job due again at once may already run anew, claimed in the transaction
            # that recorded this run's failure: that newer task keeps the entry.
            if self._running.get(job.id) is asyncio.current_task():
                del self._running[job.id]
            self._wakeup.set()

    async def _run_job(self, job: Job) -> None:
        record = await self.catalog.get(job.service)
        if record is None:
            await self.db.call_relaxed(
                job_sql.finish,
                job.id,
                self.worker_id,
                FAILED,
                time.time(),
                exit_code=None,
                log="",
                error=f"service '{job.service}' no longer exists",
            )
            return
        payload = None if job.key else await self.db.call_relaxed(job_sql.payload_of, job.id)
        trigger = InvocationInput(
            job_id=job.id,
            bucket=job.bucket,
            key=job.key,
            event=job.event,
            payload=payload,
            event_time=datetime.fromtimestamp(job.created_at, UTC),
        )
        workspace = await self.workspaces.acquire(job.service)
        try:
            if record.spec.handler:  # to the service's warm replicas, as its calls go
                result = await invoke_handler(
                    trigger,
                    record.spec,
                    storage=self.storage,
                    workspace=workspace,
                    call=self.replicas.caller(record),
                    slots=self._slots,
                )
            else:
                result = await invoke(
                    trigger,
                    record.spec,
                    record.token,
                    storage=self.storage,
                    executor=self.executor,
                    workspace=workspace,
                    script=self.workspaces.script(record.spec.script),
                    default_timeout=self.default_timeout,
                    log_limit=self.log_limit,
                    slots=self._slots,
                )
        except SluiceError as exc:  # e.g. the input object vanished, a store is unreachable
            self.metrics.jobs.labels(job.service, "failed").inc()
            await self._record_failure(job, None, "", exc.message)
            return
        finally:
            self.workspaces.release(workspace)
        done = result.completed
        self.metrics.jobs.labels(job.service, "succeeded" if result.succeeded else "failed").inc()
        if result.succeeded:
            now = time.time()
            await self._record(
                lambda c: job_sql.finish(
                    c, job.id, self.worker_id, SUCCEEDED, now, exit_code=0, log=done.output
                )
            )
            return
        if done.error:
            reason = done.error
        elif done.timed_out:
            reason = "timed out"
        else:
            reason = f"script exited with code {done.exit_code}"
        await self._record_failure(job, done.exit_code, done.output, reason)

    async def _record_failure(self, job: Job, exit_code: int | None, output: str, error: str) -> None:
        now = time.time()
        retry_at = now + self.retry.delay(job.failures + 1)
        await self._record(
            lambda c: job_sql.fail(
                c, job.id, self.worker_id, now, retry_at, exit_code=exit_code, log=output, error=error
            )
        )

    async def _record(self, operation: Operation) -> None:
        self._recording += 1
        try:
            await self.recorder.record(operation)
        finally:
            self._recording -= 1

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            ids = list(self._running)
            if not ids:
                continue
            try:
                held = await self.db.call_relaxed(
                    job_sql.renew_leases, self.worker_id, ids, time.time() + self.lease
                )
            except Exception:
                log.exception("renewing leases failed")
                continue
            for job_id in ids:
                if job_id not in held:  # cancelled through another server, or the lease was lost
                    self.cancel_local(job_id)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.lease / 2))
            try:
                if await self.db.call_relaxed(job_sql.requeue_expired, time.time()):
                    self.wake()
            except Exception:
                log.exception("requeueing expired jobs failed")
