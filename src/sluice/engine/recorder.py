"""Group commit for job progress: the outcomes of many jobs recorded in one transaction.

A job's slot is freed as soon as its process ends; its result is queued here and committed with
the others that finished meanwhile. If a batch fails, its operations are retried one by one so
one bad row cannot lose the others' results.

A `TopUp` adds one more operation to each batch: the dispatcher claims the jobs that replace the
finished ones in the same transaction (one transaction per finished job instead of two).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Connection

from sluice.db.database import Database

log = logging.getLogger("sluice.recorder")
Operation = Callable[[Connection], Any]


class TopUp(Protocol):
    def operation(self) -> Operation | None:
        """What to run after a batch's own operations, in its transaction (None: nothing)."""

    def accept(self, result: Any) -> None:
        """The operation's result once its transaction committed; None if it did not run (the
        batch failed, or was cancelled). Called once for every operation given."""


class Recorder:
    def __init__(self, db: Database, top_up: TopUp | None = None) -> None:
        self._db = db
        self._top_up = top_up
        self._pending: list[tuple[Operation, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def record(self, operation: Operation) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((operation, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush())
        return await future

    async def drain(self) -> None:
        """Wait until everything queued so far is committed (at shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            extra = self._top_up.operation() if self._top_up is not None else None
            extra_result = None
            operations = [op for op, _ in batch]
            try:
                results = await self._db.call_relaxed(
                    _run_all, operations if extra is None else [*operations, extra]
                )
                if extra is not None:
                    extra_result = results.pop()
            except Exception:
                log.exception("recording %d results together failed; recording one by one", len(batch))
                results = []
                for op, future in batch:
                    try:
                        results.append(await self._db.call_relaxed(op))
                    except Exception as exc:
                        if not future.done():
                            future.set_exception(exc)
                        results.append(None)
            finally:
                if extra is not None and self._top_up is not None:
                    self._top_up.accept(extra_result)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _run_all(connection: Connection, operations: list[Operation]) -> list[Any]:
    return [operation(connection) for operation in operations]
