"""The group sync of SQLite's log (sluice.db.wal): a durable commit waits for a sync that began
after it was written, and commits written meanwhile share the next sync.

The sync itself is real (fdatasync of a real file); it is wrapped to hold it until the test lets
it go, since the order of commits and syncs cannot be arranged otherwise.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from sluice.db.wal import WalSync


def test_commits_written_during_a_sync_wait_for_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "db-wal"
    log.write_bytes(b"frames")
    started: list[int] = []  # how many commits were written when each sync began
    release = threading.Event()
    real_sync = WalSync._sync_file

    def held_sync(syncer: WalSync) -> None:
        started.append(syncer.last_written)
        release.wait(10)
        real_sync(syncer)

    monkeypatch.setattr(WalSync, "_sync_file", held_sync)
    syncer = WalSync(str(log))

    async def scenario() -> list[str]:
        done: list[str] = []

        async def durable(name: str, commit: int) -> None:
            await syncer.durable(commit)
            done.append(name)

        first = asyncio.create_task(durable("first", syncer.written(True)))
        await asyncio.sleep(0.05)  # the first sync has begun, held
        syncer.written(False)  # job progress: nobody waits for it, the next sync covers it
        second = asyncio.create_task(durable("second", syncer.written(True)))
        third = asyncio.create_task(durable("third", syncer.written(True)))
        await asyncio.sleep(0.05)
        assert done == []
        release.set()
        await asyncio.gather(first, second, third)
        return done

    try:
        assert asyncio.run(scenario()) == ["first", "second", "third"]
        # Two syncs for four commits: the last three were written after the first sync began, so
        # it could not cover them; one more covered them all.
        assert started == [1, 4]
    finally:
        syncer.close()


def test_a_failed_sync_fails_its_waiters_and_the_next_one_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "db-wal"
    log.write_bytes(b"frames")
    failures = [OSError(5, "Input/output error")]
    real_sync = WalSync._sync_file

    def failing_once(syncer: WalSync) -> None:
        if failures:
            raise failures.pop()
        real_sync(syncer)

    monkeypatch.setattr(WalSync, "_sync_file", failing_once)
    syncer = WalSync(str(log))

    async def scenario() -> None:
        commit = syncer.written(True)
        with pytest.raises(OSError, match="Input/output error"):
            await syncer.durable(commit)
        await syncer.durable(commit)  # the disk recovered: a new sync

    try:
        asyncio.run(scenario())
    finally:
        syncer.close()


def test_a_log_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    """While a server's connections are open SQLite keeps its log: a missing one means the path
    is not the database's, and a commit must not be reported durable."""
    syncer = WalSync(str(tmp_path / "gone-wal"))
    try:
        with pytest.raises(FileNotFoundError):
            asyncio.run(syncer.durable(syncer.written(True)))
    finally:
        syncer.close()


def test_a_new_log_file_is_synced_through_a_new_descriptor(tmp_path: Path) -> None:
    log = tmp_path / "db-wal"
    log.write_bytes(b"old log")

    async def scenario(syncer: WalSync) -> None:
        await syncer.durable(syncer.written(True))
        replacement = tmp_path / "new-wal"
        replacement.write_bytes(b"new log")
        replacement.replace(log)  # SQLite removed the old log and made another
        await syncer.durable(syncer.written(True))

    syncer = WalSync(str(log))
    try:
        asyncio.run(scenario(syncer))
        assert syncer._descriptor is not None
        assert Path(f"/proc/self/fd/{syncer._descriptor}").stat().st_ino == log.stat().st_ino
    finally:
        syncer.close()
