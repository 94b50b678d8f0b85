"""Group sync of SQLite's write-ahead log: one fdatasync makes every commit before it durable.

SQLite commits on the event loop with `synchronous=NORMAL`: the commit is in the log file but not
yet on the disk. A caller that must not answer before its commit is durable awaits `durable()`,
which fdatasyncs the log off the loop. A sync covers every commit written before it began, so
commits made while one sync runs share the next: under load, many uploads pay for one sync
(the group commit of databases), and the loop never waits for the disk.

This is what `synchronous=FULL` does at each commit, done once for a group: a commit is durable
once the log frames holding it are on the disk.

The log is synced through one descriptor kept open: a write error the kernel met meanwhile (say,
while a checkpoint wrote) is reported to every descriptor open at the time, so it cannot be
missed. The log is opened again if SQLite made a new file (its inode changed).
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor


class WalSync:
    def __init__(self, wal_path: str) -> None:
        self.path = wal_path
        # A thread of its own: a sync must not wait behind other work.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-wal-sync")
        self._written = 0  # commits written to the log so far
        self._synced = 0  # of those, how many are known to be on the disk
        self._last_durable = 0  # the last of them whose writer waits for it to be on the disk
        self._sync: asyncio.Task[None] | None = None
        self._descriptor: int | None = None  # used by the sync thread only

    @property
    def last_written(self) -> int:
        """How many commits were written to the log so far."""
        return self._written

    @property
    def last_durable(self) -> int:
        """The last commit made durable on request: a reader waits for it, as it may have seen
        it and must not answer with what a power cut could undo. (Commits that are safe to redo,
        job progress, are not waited for: their readers accept that they may be undone.)"""
        return self._last_durable

    def written(self, durable: bool) -> int:
        """Note one more commit written to the log (`durable`: its writer will wait for it);
        returns its number, for `durable()`."""
        self._written += 1
        if durable:
            self._last_durable = self._written
        return self._written

    async def durable(self, commit: int) -> None:
        """Return once commit number `commit` is on the disk; raises if the sync failed."""
        while self._synced < commit:
            sync = self._sync
            if sync is None or sync.done() or sync.get_loop() is not asyncio.get_running_loop():
                sync = self._sync = asyncio.ensure_future(self._sync_written())
            # Shielded: a waiter cancelled (its request gone) must not cancel the others' sync.
            await asyncio.shield(sync)

    async def _sync_written(self) -> None:
        covered = self._written  # everything written before the sync starts
        await asyncio.get_running_loop().run_in_executor(self._executor, self._sync_file)
        self._synced = max(self._synced, covered)

    def _sync_file(self) -> None:
        """fdatasync the log; raises if it is missing: while the server's connections are open
        SQLite keeps it, so a missing log means a path that is not the database's."""
        current = os.stat(self.path).st_ino
        if self._descriptor is not None and os.fstat(self._descriptor).st_ino != current:
            os.close(self._descriptor)  # a new log: SQLite removed the old one once copied
            self._descriptor = None
        if self._descriptor is None:
            self._descriptor = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        os.fdatasync(self._descriptor)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
