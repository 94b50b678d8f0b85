"""The reconciler: lists every service's input paths and enqueues objects no event announced.

Events can be lost (a store's webhook down, the platform stopped); listing cannot. An object counts
if it appeared after its service was created (so applying a service does not process a bucket's
history) and its (key, ETag) is not in the idempotency ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from sluice.db import jobs as job_sql
from sluice.errors import SluiceError
from sluice.storage.events import ObjectCreated
from sluice.storage.registry import split_path

if TYPE_CHECKING:
    from sluice.engine.platform import Platform

log = logging.getLogger("sluice.reconciler")
CLOCK_SLACK = 2.0  # seconds: a store's clock may run a little behind ours
ENQUEUE_BATCH = 500


class Reconciler:
    def __init__(self, platform: Platform, interval: float) -> None:
        self.platform = platform
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._loop(), name="sluice-reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("reconciliation failed; trying again next round")
            await asyncio.sleep(self.interval)

    async def run_once(self) -> int:
        """One pass over every input path; returns how many jobs it created."""
        created = 0
        for record in await self.platform.catalog.all():
            for io in record.spec.input:
                try:
                    created += await self._reconcile_path(record, io)
                except SluiceError as exc:
                    log.warning("cannot list %s for service %s: %s", io.path, record.spec.name, exc.message)
        return created

    async def _reconcile_path(self, record, io) -> int:  # type: ignore[no-untyped-def]
        provider = self.platform.storage.for_io(record.spec, io)
        bucket, folder = split_path(io.path)
        prefix = f"{folder}/" if folder else ""
        seen = await self.platform.db.call_bulk(job_sql.seen_versions, record.spec.name, bucket, prefix)
        since = record.created_at - CLOCK_SLACK
        missing: list[ObjectCreated] = []
        created = 0
        async for obj in provider.list(bucket, prefix):
            if obj.last_modified.timestamp() < since or (obj.key, obj.etag) in seen:
                continue
            missing.append(ObjectCreated(bucket, obj.key, obj.etag, obj.size))
            if len(missing) >= ENQUEUE_BATCH:
                created += await self._enqueue(record, missing)
                missing = []
        if missing:
            created += await self._enqueue(record, missing)
        return created

    async def _enqueue(self, record, missing: list[ObjectCreated]) -> int:  # type: ignore[no-untyped-def]
        accepted = await self.platform.announce_to(record, missing)
        fresh = sum(1 for a in accepted if a.created)
        if fresh:
            log.info("reconciler enqueued %d unannounced objects for %s", fresh, record.spec.name)
        return fresh
