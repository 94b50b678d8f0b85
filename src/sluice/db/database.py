"""The database handle: its engines, migrations at start, and where each transaction runs.

PostgreSQL: a small pool of threads runs every transaction (psycopg lets the GIL go while it waits
for the server). SQLite (the embedded default): on the event loop itself, and in one thread what
would make the loop wait (`sqlite.py` says why and how).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine

from sluice.db.sqlite import LoopTransactions, database_file, run_retrying, sqlite_engine

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for `url` whose commits are durable when they return (SQLite: synced to disk)."""
    if url.startswith("sqlite"):
        return sqlite_engine(url, synchronous="FULL")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=8, max_overflow=4, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Database:
    """`call(fn, *args)` runs `fn(connection, *args)` in a transaction and returns its result."""

    def __init__(self, url: str) -> None:
        self.url = url
        # Durable at each commit: used by threads (migrations, bulk work, what SQLite hands off).
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._threads = ThreadPoolExecutor(
            max_workers=1 if self.is_sqlite else 6, thread_name_prefix="sluice-db"
        )
        path = database_file(self.engine) if self.is_sqlite else None
        self._loop = LoopTransactions(url, path, self.engine, self._threads) if path else None

    def migrate(self) -> None:
        migrate(self.engine)

    def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn` in a durable transaction, in the calling thread (no event loop needed)."""
        if self.is_sqlite:
            return run_retrying(self.engine, fn, *args, **kwargs)[0]
        with self.engine.begin() as connection:
            return fn(connection, *args, **kwargs)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, ...)` in a transaction; it returns once the commit is durable, and
        so is every commit it may have read."""
        return await self._call(fn, args, kwargs, durable=True)

    async def call_relaxed(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like `call`, for job progress (claims, leases, results) that is safe to redo.

        On SQLite this commit is not synced on its own: it survives a crash of the process, and
        the next durable commit syncs it. A power cut may roll it back, which only runs a job
        again, and outputs are written under the same names again.
        """
        return await self._call(fn, args, kwargs, durable=False)

    async def call_bulk(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like `call`, for work that may read or change many rows (listings, mass deletions):
        in a thread on every database, so the event loop goes on meanwhile."""
        return await self._in_thread(fn, args, kwargs, durable=True)

    async def _call(self, fn: Callable[..., T], args: Any, kwargs: Any, *, durable: bool) -> T:
        if self._loop is None:
            return await self._in_thread(fn, args, kwargs)
        ran = self._loop.run(fn, args, kwargs, durable)
        if ran is None:  # handed to the thread: its own commit is durable when it returns
            return await self._in_thread(fn, args, kwargs, durable=durable)
        result, commit = ran
        if durable:
            await self._loop.wal.durable(commit)
        return result

    async def _in_thread(self, fn: Callable[..., T], args: Any, kwargs: Any, *, durable: bool = False) -> T:
        """`fn` in the thread. With `durable`, a transaction there that only read waits, as on
        the loop, for the durable commits it may have seen (one that wrote synced them all)."""
        loop = asyncio.get_running_loop()
        if not self.is_sqlite:
            task = functools.partial(self.run_sync, fn, *args, **kwargs)
            return await loop.run_in_executor(self._threads, task)
        task = functools.partial(run_retrying, self.engine, fn, *args, **kwargs)
        result, changed = await loop.run_in_executor(self._threads, task)
        if self._loop is not None:
            self._loop.ran_in_thread(changed)
            if durable and not changed:
                await self._loop.wal.durable(self._loop.wal.last_durable)
        return result

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        if self._loop is not None:
            self._loop.close()
        self.engine.dispose()


__all__ = ["Connection", "Database", "make_engine", "migrate"]
