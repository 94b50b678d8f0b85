"""Group commit for new jobs: many concurrent uploads and events share one transaction.

Each caller awaits its own result, which arrives only after the transaction holding its job has
committed: nothing is acknowledged before it is durable. While one batch commits, the next gathers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from sluice.db import jobs as job_sql
from sluice.db.database import Database
from sluice.db.jobs import Accepted, NewJob

MAX_BATCH = 2000


class Acceptor:
    def __init__(self, db: Database, on_commit: Callable[[], None]) -> None:
        self._db = db
        self._on_commit = on_commit
        self._pending: list[tuple[Sequence[NewJob], asyncio.Future[list[Accepted]]]] = []
        self._flushing = False
        self._flush_task: asyncio.Future[None] | None = None

    async def enqueue(self, new_jobs: Sequence[NewJob]) -> list[Accepted]:
        if not new_jobs:
            return []
        future: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        self._pending.append((new_jobs, future))
        if not self._flushing:
            self._flushing = True
            self._flush_task = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch: list[tuple[Sequence[NewJob], asyncio.Future[list[Accepted]]]] = []
                size = 0
                while self._pending and size < MAX_BATCH:
                    item = self._pending.pop(0)
                    batch.append(item)
                    size += len(item[0])
                rows = [job for new_jobs, _ in batch for job in new_jobs]
                try:
                    accepted = await self._db.call(job_sql.enqueue_many, rows, time.time())
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                offset = 0
                for new_jobs, future in batch:
                    if not future.done():
                        future.set_result(accepted[offset : offset + len(new_jobs)])
                    offset += len(new_jobs)
                self._on_commit()
        finally:
            self._flushing = False
        self._flush_task: asyncio.Future[None] | None = None
