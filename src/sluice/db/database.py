"""The database handle: one SQLAlchemy engine, migrations at start, blocking work off the event loop.

SQLite (the embedded default) allows one writer at a time, so all its work runs on one thread; that
also makes group commits natural. PostgreSQL gets a small pool of threads.
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
from sqlalchemy import Connection, Engine, create_engine, event

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, *, synchronous: str = "FULL") -> Engine:
    """An engine for `url`. On SQLite, `synchronous` sets when a commit is synced to disk."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
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
    """Runs blocking SQLAlchemy work in threads; `call(fn, *args)` gives fn a Connection in a transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        # FULL: a commit survives power loss, not only a crash of the process.
        self.engine = make_engine(url, synchronous="FULL")
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        # Job progress commits without waiting for the disk (see `call_relaxed`): a second
        # connection set up that way, used from the same single thread as the first.
        self._relaxed = make_engine(url, synchronous="NORMAL") if self.is_sqlite else self.engine
        self._executor = ThreadPoolExecutor(
            max_workers=1 if self.is_sqlite else 6, thread_name_prefix="sluice-db"
        )

    def migrate(self) -> None:
        migrate(self.engine)

    def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.engine.begin() as connection:
            return fn(connection, *args, **kwargs)

    def _run_relaxed(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._relaxed.begin() as connection:
            return fn(connection, *args, **kwargs)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, ...)` in a transaction whose commit is durable before this returns."""
        loop = asyncio.get_running_loop()
        task = functools.partial(self.run_sync, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, task)

    async def call_relaxed(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like `call`, for job progress (claims, leases, results) that is safe to redo.

        On SQLite this commit is not synced on its own: it survives a crash of the process, and
        the next durable commit syncs it. A power cut may roll it back, which only runs a job
        again, and outputs are written under the same names again.
        """
        loop = asyncio.get_running_loop()
        task = functools.partial(self._run_relaxed, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, task)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()
        self._relaxed.dispose()


__all__ = ["Connection", "Database", "make_engine", "migrate"]
