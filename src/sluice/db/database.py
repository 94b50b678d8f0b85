"""The database handle: SQLAlchemy engines, migrations at start, and where each transaction runs.

PostgreSQL: a small pool of threads runs every transaction (psycopg lets the GIL go while it waits
for the server).

SQLite (the embedded default) has one writer at a time and short transactions, so they run on the
event loop itself. From a thread beside the loop the same statements cost about three times their
CPU: every SQLite call lets the GIL go and takes it back, a hand-over with the loop each time
(docs/benchmarks.md). What keeps the loop from waiting on the disk or on a lock:

- commits are written without a sync (`synchronous=NORMAL`); `call` then waits, off the loop, for an
  fdatasync of the write-ahead log shared by every commit made before it (`wal.py`);
- checkpoints (the log copied into the database file, with syncs) run in a thread;
- a transaction that finds the database locked (by another process, or by work in the thread) is
  run again in the thread, which waits for the lock;
- work that may touch many rows (`call_bulk`) runs in the thread from the start.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError

from sluice.db.wal import WalSync

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"
# Commits on the loop between two checkpoints (SQLite's own default is every 1,000 log pages).
CHECKPOINT_EVERY = 1000
# A checkpoint beside commits rarely catches up with them, and the log is started afresh only
# after one did: past this size, the next checkpoint holds writers back until it is done.
WAL_RESTART_BYTES = 32 * 1024 * 1024
SQLITE_BUSY, SQLITE_LOCKED = 5, 6
log = logging.getLogger("sluice.db")


def make_engine(
    url: str, *, synchronous: str = "FULL", busy_timeout: float = 30.0, autocheckpoint: bool = True
) -> Engine:
    """An engine for `url`. On SQLite, `synchronous` sets when a commit is synced to disk,
    `busy_timeout` how long a statement waits for a lock (0: it fails at once), and
    `autocheckpoint=False` leaves checkpoints to the caller."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            # A log that grew in a burst is cut back to this when it starts afresh.
            cursor.execute(f"PRAGMA journal_size_limit={WAL_RESTART_BYTES}")
            if not autocheckpoint:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
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
    """`call(fn, *args)` runs `fn(connection, *args)` in a transaction and returns its result."""

    def __init__(self, url: str) -> None:
        self.url = url
        # FULL: a commit survives power loss, not only a crash of the process. Used by threads:
        # migrations, bulk work, and transactions that found SQLite locked.
        self.engine = make_engine(url, synchronous="FULL")
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._threads = ThreadPoolExecutor(
            max_workers=1 if self.is_sqlite else 6, thread_name_prefix="sluice-db"
        )
        self._on_loop: Engine | None = None
        self._loop_conn: Connection | None = None
        self._loop_lock = threading.Lock()
        self._wal: WalSync | None = None
        self._checkpoint: Future[None] | None = None
        self._since_checkpoint = 0
        if self.is_sqlite:
            self._on_loop = make_engine(url, synchronous="NORMAL", busy_timeout=0, autocheckpoint=False)
            database = self.engine.url.database
            if database and database != ":memory:":
                self._wal = WalSync(database + "-wal")

    def migrate(self) -> None:
        migrate(self.engine)

    def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn` in a durable transaction, in the calling thread (no event loop needed)."""
        with self.engine.begin() as connection:
            return fn(connection, *args, **kwargs)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, ...)` in a transaction whose commit is durable before this returns."""
        if self._on_loop is None:
            return await self._in_thread(fn, *args, **kwargs)
        ran = self._run_on_loop(fn, args, kwargs)
        if ran is None:  # locked: the thread waits for the lock, and its commit is durable
            return await self._in_thread(fn, *args, **kwargs)
        result, commit = ran
        if commit and self._wal is not None:
            await self._wal.durable(commit)
        return result

    async def call_relaxed(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like `call`, for job progress (claims, leases, results) that is safe to redo.

        On SQLite this commit is not synced on its own: it survives a crash of the process, and
        the next durable commit syncs it. A power cut may roll it back, which only runs a job
        again, and outputs are written under the same names again.
        """
        if self._on_loop is None:
            return await self._in_thread(fn, *args, **kwargs)
        ran = self._run_on_loop(fn, args, kwargs)
        if ran is None:
            return await self._in_thread(fn, *args, **kwargs)
        return ran[0]

    async def call_bulk(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like `call`, for work that may read or change many rows (listings, mass deletions):
        in a thread on every database, so the event loop goes on meanwhile."""
        return await self._in_thread(fn, *args, **kwargs)

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        task = functools.partial(self.run_sync, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._threads, task)

    def _run_on_loop(self, fn: Callable[..., T], args: Any, kwargs: Any) -> tuple[T, int] | None:
        """`fn` in a transaction on the calling thread: (its result, the number of its commit
        for `WalSync.durable`, 0 if it changed nothing), or None if SQLite was locked (rolled back)."""
        # A lock that is free but for tests driving an app from two threads with two loops.
        with self._loop_lock:
            connection = self._loop_connection()
            try:
                with connection.begin():
                    sqlite = connection.connection.driver_connection
                    changes = sqlite.total_changes
                    result = fn(connection, *args, **kwargs)
                    changed = sqlite.total_changes != changes
            except (OperationalError, sqlite3.OperationalError) as exc:
                if _is_locked(exc):
                    return None
                raise
        if not changed:
            return result, 0
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._start_checkpoint()
        return result, self._wal.written() if self._wal is not None else 0

    def _loop_connection(self) -> Connection:
        """The loop's own connection, kept open (a pool's checkout and return per transaction
        cost as much as a small statement), opened again if an error invalidated it."""
        assert self._on_loop is not None
        connection = self._loop_conn
        if connection is None or connection.closed or connection.invalidated:
            if connection is not None:
                connection.close()
            connection = self._loop_conn = self._on_loop.connect()
        return connection

    def _start_checkpoint(self) -> None:
        """Copy the log into the database file, in the thread: the loop's connection never
        checkpoints (a checkpoint syncs the disk)."""
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._since_checkpoint = 0
        self._checkpoint = self._threads.submit(self._checkpoint_now)

    def _checkpoint_now(self) -> None:
        """PASSIVE: writers go on meanwhile. RESTART once the log is large: the loop's commits
        find the database locked and wait in the thread until the log can start afresh."""
        try:
            large = self._wal is not None and _size(self._wal.path) > WAL_RESTART_BYTES
            with self.engine.connect() as connection:
                connection.exec_driver_sql(f"PRAGMA wal_checkpoint({'RESTART' if large else 'PASSIVE'})")
        except Exception:  # the next one copies what this one did not
            log.exception("checkpointing the SQLite log failed")

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        if self._wal is not None:
            self._wal.close()
        self.engine.dispose()
        if self._on_loop is not None:
            with self._loop_lock:
                if self._loop_conn is not None:
                    self._loop_conn.close()
            self._on_loop.dispose()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def _is_locked(exc: Exception) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, raised through SQLAlchemy or by sqlite3 itself (the queue's
    hot statements run on the driver directly)."""
    code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)


__all__ = ["Connection", "Database", "make_engine", "migrate"]
