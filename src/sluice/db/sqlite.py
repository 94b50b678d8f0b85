"""SQLite engines, and transactions run on the event loop's own thread.

From a thread beside the loop, the same statements cost about three times their CPU: every
SQLite call lets the GIL go and takes it back, a hand-over with the loop each time
(docs/benchmarks.md). So transactions run on the loop, and what would make the loop wait goes to
a thread instead:

- the disk: commits are written unsynced (`synchronous=NORMAL`), and a caller that needs its
  commit durable awaits one fdatasync of the log that covers every commit before it (`wal.py`);
  checkpoints (which sync) run in the thread, and so does the first write after one, which
  starts the log afresh and syncs its header;
- a lock: the loop's connection never waits for one (`busy_timeout=0`); a transaction that finds
  the database locked, or that read a snapshot another writer overtook, is run again in the
  thread, which waits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event

from sluice.db.wal import WalSync

T = TypeVar("T")
# Commits on the loop between two checkpoints (SQLite's own default is every 1,000 log pages).
CHECKPOINT_EVERY = 1000
# A checkpoint beside commits rarely catches up with them, and the log is started afresh only
# after one did: past this size, the next checkpoint holds writers back until it is done.
WAL_RESTART_BYTES = 32 * 1024 * 1024
SQLITE_BUSY, SQLITE_LOCKED = 5, 6
RETRIES = 50  # a thread's transaction that lost a race with the loop's writes is run again
log = logging.getLogger("sluice.db")


def sqlite_engine(
    url: str, *, synchronous: str = "FULL", busy_timeout: float = 30.0, autocheckpoint: bool = True
) -> Engine:
    """An engine for a SQLite `url`: `synchronous` sets when a commit is synced to disk,
    `busy_timeout` how long a statement waits for a lock (0: it fails at once), and
    `autocheckpoint=False` leaves checkpoints to the caller."""
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # sqlite3 would begin a transaction only at the first write: reads before it would see
        # another snapshot than the write. SQLAlchemy's recipe: BEGIN at the transaction's start.
        dbapi_connection.isolation_level = None
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

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.connection.driver_connection.execute("BEGIN")  # on the driver: cheaper

    return engine


def database_file(engine: Engine) -> str | None:
    """The database's file, absolute; None for an in-memory database or a `file:` URI, which
    this module does not handle (their transactions stay in the thread)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:") or engine.url.query:
        return None
    return os.path.abspath(database)


def run_retrying(engine: Engine, fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, bool]:
    """`fn` in a transaction on `engine`, in the calling thread: (its result, whether it changed
    anything). Run again when it lost a race with another writer (SQLite reports that at once,
    without waiting: a transaction that read cannot wait for a newer snapshot)."""
    for attempt in range(1, RETRIES + 1):
        try:
            with engine.begin() as connection:
                driver = connection.connection.driver_connection
                changes = driver.total_changes
                result = fn(connection, *args, **kwargs)
                return result, driver.total_changes != changes
        except Exception as exc:
            if not is_locked(exc) or attempt == RETRIES:
                raise
            time.sleep(0.001 * attempt)
    raise AssertionError("unreachable")


def is_locked(exc: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (extended codes included: a snapshot another writer
    overtook), raised through SQLAlchemy or by sqlite3 itself (the queue's hot statements run on
    the driver directly)."""
    code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)


class LoopTransactions:
    """Transactions on the calling thread (the event loop's), on one connection kept open (a
    pool's checkout and return cost as much as a small statement); checkpoints in `thread`."""

    def __init__(self, url: str, path: str, durable_engine: Engine, thread: Executor) -> None:
        self._engine = sqlite_engine(url, synchronous="NORMAL", busy_timeout=0, autocheckpoint=False)
        self._durable_engine = durable_engine  # synced at each commit: used by the thread
        self._thread = thread
        self.wal = WalSync(path + "-wal")
        self._connection: Connection | None = None
        # Free but for tests that drive an app from two threads, each with its own loop.
        self._lock = threading.Lock()
        self._checkpoint: Future[None] | None = None
        self._since_checkpoint = 0
        # The first write after a checkpoint starts the log afresh and syncs its header: until
        # a write has run in the thread, transactions go there (at start too: the last run's
        # log may have been checkpointed when it stopped).
        self.handing_off = True

    def run(self, fn: Callable[..., T], args: Any, kwargs: Any, durable: bool) -> tuple[T, int] | None:
        """`fn` in a transaction here: (its result, the number of the commit to wait for before
        answering with it, for `WalSync.durable`: its own, or the last durable one it may have
        read), or None when it must run in the thread instead (the database was locked, or a
        checkpoint just ran): rolled back, nothing done."""
        if self.handing_off:
            return None
        with self._lock:
            connection = self._open()
            try:
                with connection.begin():
                    driver = connection.connection.driver_connection
                    changes = driver.total_changes
                    result = fn(connection, *args, **kwargs)
                    changed = driver.total_changes != changes
            except Exception as exc:
                if is_locked(exc):
                    return None
                raise
        if not changed:  # it may have read commits not yet synced: it waits for them too
            return result, self.wal.last_durable
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._start_checkpoint()
        return result, self.wal.written(durable)

    def ran_in_thread(self, changed: bool) -> None:
        """A transaction handed to the thread ended; one that wrote started the log afresh if
        it was due, and synced it (the thread's commits are durable on their own)."""
        if changed:
            self.handing_off = False
            self._since_checkpoint += 1
            if self._since_checkpoint >= CHECKPOINT_EVERY:
                self._start_checkpoint()

    def _open(self) -> Connection:
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            if connection is not None:
                connection.close()
            connection = self._connection = self._engine.connect()
        return connection

    def _start_checkpoint(self) -> None:
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._since_checkpoint = 0
        self._checkpoint = self._thread.submit(self._checkpoint_now)

    def _checkpoint_now(self) -> None:
        """PASSIVE: writers go on meanwhile. RESTART once the log is large: the loop's commits
        find the database locked and wait in the thread until the log can start afresh."""
        mode = "RESTART" if _size(self.wal.path) > WAL_RESTART_BYTES else "PASSIVE"
        try:
            connection = self._durable_engine.raw_connection()  # no transaction: it runs outside one
            try:
                connection.cursor().execute(f"PRAGMA wal_checkpoint({mode})")
            finally:
                connection.close()
        except Exception:  # the next one copies what this one did not
            log.exception("checkpointing the SQLite log failed")
        finally:
            self.handing_off = True

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
        self._engine.dispose()
        self.wal.close()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0
