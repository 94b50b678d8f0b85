"""Group commit for new jobs: many concurrent uploads and events share one transaction.

Each caller awaits its own result, which arrives only after the transaction holding its job has
committed: nothing is acknowledged before it is durable. While one batch commits, the next gathers.
Uploaded files are put on the disk first, a batch's together (one thread hop for all of them): a
committed job never names an object a power cut could still lose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sluice.db import jobs as job_sql
from sluice.db.database import Database
from sluice.db.jobs import Accepted, NewJob

MAX_BATCH = 2000


@dataclass
class _Pending:
    new_jobs: Sequence[NewJob]
    files: Sequence[str]  # to put on the disk before the jobs are committed
    future: asyncio.Future[list[Accepted]]


class Acceptor:
    def __init__(
        self,
        db: Database,
        on_commit: Callable[[], None],
        make_durable: Callable[[list[str]], None] | None = None,
    ) -> None:
        """`make_durable(paths)`: puts stored files on the disk (blocking, run in a thread)."""
        self._db = db
        self._on_commit = on_commit
        self._make_durable = make_durable
        self._pending: list[_Pending] = []
        self._flushing = False
        self._flush_task: asyncio.Future[None] | None = None

    async def enqueue(self, new_jobs: Sequence[NewJob], sync_first: Sequence[str] = ()) -> list[Accepted]:
        """Commit `new_jobs` durably; `sync_first`: files on this machine (just stored, maybe
        announcing these jobs) to put on the disk before, even if there are no jobs."""
        if not new_jobs and not sync_first:
            return []
        future: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(new_jobs, sync_first, future))
        if not self._flushing:
            self._flushing = True
            self._flush_task = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch: list[_Pending] = []
                size = 0
                while self._pending and size < MAX_BATCH:
                    item = self._pending.pop(0)
                    batch.append(item)
                    size += len(item.new_jobs) + len(item.files)
                rows = [job for item in batch for job in item.new_jobs]
                files = [path for item in batch for path in item.files]
                try:
                    if files and self._make_durable is not None:  # run_in_executor: no context to copy
                        await asyncio.get_running_loop().run_in_executor(None, self._make_durable, files)
                    accepted = await self._db.call(job_sql.enqueue_many, rows, time.time()) if rows else []
                except Exception as exc:
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                offset = 0
                for item in batch:
                    if not item.future.done():
                        item.future.set_result(accepted[offset : offset + len(item.new_jobs)])
                    offset += len(item.new_jobs)
                if rows:
                    self._on_commit()
        finally:
            self._flushing = False
        self._flush_task: asyncio.Future[None] | None = None
