"""SQLite transactions on the event loop (sluice.db.sqlite, sluice.db.database), on a real
database file: where they run, that nothing is answered before it is on the disk, what happens
when the database is locked, and that the log is checkpointed and kept small."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from sluice.db import jobs as q
from sluice.db import sqlite as sqlite_module
from sluice.db.database import Database
from sluice.db.wal import WalSync
from sluice.engine.acceptor import Acceptor

NOW = 1_700_000_000.0


def sqlite_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'sluice.db'}")
    db.migrate()
    return db


def new_job(index: int, padding: str = "") -> q.NewJob:
    return q.NewJob(service="svc", max_retries=0, bucket="in", key=f"k{index}{padding}", etag="e")


def count_jobs(connection: Connection) -> int:
    return connection.execute(text("SELECT count(*) FROM jobs")).scalar_one()


class HeldSyncs:
    """WalSync's fdatasync of the log, held until `release`: what a slow disk does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = threading.Event()
        self._release = threading.Event()
        real = WalSync._sync_file

        def held(syncer: WalSync) -> None:
            self.started.set()
            self._release.wait(10)
            real(syncer)

        monkeypatch.setattr(WalSync, "_sync_file", held)

    def release(self) -> None:
        self._release.set()


def test_transactions_run_on_the_loop_and_bulk_work_beside_it(tmp_path: Path) -> None:
    db = sqlite_db(tmp_path)

    async def scenario() -> tuple[int, int, int, int]:
        here = threading.get_ident()
        # The first write of a server goes to the thread (the log may start afresh there).
        await db.call(q.enqueue_many, [new_job(0)], NOW)
        durable = await db.call(lambda c: (q.enqueue_many(c, [new_job(1)], NOW), threading.get_ident())[1])
        relaxed = await db.call_relaxed(lambda c: threading.get_ident())
        bulk = await db.call_bulk(lambda c: threading.get_ident())
        return here, durable, relaxed, bulk

    try:
        here, durable, relaxed, bulk = asyncio.run(scenario())
        assert durable == relaxed == here  # no thread hop
        assert bulk != here
        assert db.run_sync(count_jobs) == 2
    finally:
        db.close()


def test_nothing_is_answered_before_the_log_is_on_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable write waits for the log's sync; so does a read that may have seen a durable
    commit not yet synced: answering from it could report what a power cut undoes. Relaxed
    commits (job progress, safe to redo) make nobody wait."""
    db = sqlite_db(tmp_path)
    asyncio.run(db.call(q.enqueue_many, [new_job(0)], NOW))  # the first write, in the thread
    held = HeldSyncs(monkeypatch)

    async def scenario() -> None:
        await db.call_relaxed(q.enqueue_many, [new_job(1)], NOW)  # relaxed: no sync awaited
        # Only a relaxed commit unsynced: no wait (the held sync would hold it for 10 s).
        assert await asyncio.wait_for(db.call(count_jobs), 2) == 2
        write = asyncio.create_task(db.call(q.enqueue_many, [new_job(2)], NOW))
        read = asyncio.create_task(db.call(count_jobs))
        bulk_read = asyncio.create_task(db.call_bulk(count_jobs))
        await asyncio.get_running_loop().run_in_executor(None, held.started.wait, 10)
        await asyncio.sleep(0.1)
        assert not write.done() and not read.done() and not bulk_read.done()
        held.release()
        assert [a.created for a in await write] == [True]
        assert await read == 3
        assert await bulk_read == 3

    try:
        asyncio.run(scenario())
    finally:
        held.release()
        db.close()


def test_a_read_handed_to_the_thread_waits_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a checkpoint (or on a locked database) transactions run in the thread; a read there
    may see the same unsynced durable commit, and must wait for it as on the loop."""
    db = sqlite_db(tmp_path)
    asyncio.run(db.call(q.enqueue_many, [new_job(0)], NOW))  # the first write, in the thread
    held = HeldSyncs(monkeypatch)

    async def scenario() -> None:
        write = asyncio.create_task(db.call(q.enqueue_many, [new_job(1)], NOW))
        await asyncio.get_running_loop().run_in_executor(None, held.started.wait, 10)
        assert db._loop is not None
        db._loop.handing_off = True  # as right after a checkpoint
        read = asyncio.create_task(db.call(count_jobs))
        await asyncio.sleep(0.2)
        assert not write.done() and not read.done()
        held.release()
        await write
        assert await read == 2

    try:
        asyncio.run(scenario())
    finally:
        held.release()
        db.close()


def test_the_acceptor_syncs_the_files_before_it_commits_their_jobs(tmp_path: Path) -> None:
    """No job may name an upload a power cut could still lose: while the files' sync is held,
    their jobs are not in the database, and the uploads are not answered."""
    db = sqlite_db(tmp_path)
    release = threading.Event()
    synced: list[list[str]] = []

    def make_durable(paths: list[str]) -> None:
        release.wait(10)
        synced.append(paths)

    acceptor = Acceptor(db, on_commit=lambda: None, make_durable=make_durable)

    async def scenario() -> None:
        upload = asyncio.create_task(acceptor.enqueue([new_job(1)], sync_first=["/data/in/k1"]))
        no_jobs = asyncio.create_task(acceptor.enqueue([], sync_first=["/data/other/x"]))
        await asyncio.sleep(0.2)
        assert not upload.done() and not no_jobs.done()
        assert await db.call_bulk(count_jobs) == 0
        release.set()
        assert [a.created for a in await upload] == [True]
        assert await no_jobs == []  # a file no service watches is synced all the same

    try:
        asyncio.run(scenario())
        assert sorted(path for batch in synced for path in batch) == ["/data/in/k1", "/data/other/x"]
        assert db.run_sync(count_jobs) == 1
    finally:
        release.set()
        db.close()


def test_a_locked_database_does_not_stall_the_loop(tmp_path: Path) -> None:
    """Another connection (another process, say) holds the write lock. A transaction on the loop
    must hand itself to the thread and wait there: the loop goes on, here to release the lock.
    Were the loop blocked waiting for the lock, the release could never run (the test would
    time out)."""
    db = sqlite_db(tmp_path)
    asyncio.run(db.call(q.enqueue_many, [new_job(0)], NOW))  # the first write, in the thread
    other = sqlite3.connect(tmp_path / "sluice.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the write lock
    other.execute(
        "INSERT INTO services (name, definition, token, owner, created_at, updated_at) "
        "VALUES ('x', '{}', 't', 'o', 0, 0)"
    )

    async def scenario() -> list[q.Accepted]:
        enqueue = asyncio.create_task(db.call(q.enqueue_many, [new_job(1)], NOW))
        await asyncio.sleep(0.2)
        assert not enqueue.done()  # waiting for the lock, off the loop
        other.execute("COMMIT")
        return await enqueue

    try:
        accepted = asyncio.run(scenario())
        assert [a.created for a in accepted] == [True]
        assert db.run_sync(count_jobs) == 2
        assert db.run_sync(lambda c: c.execute(text("SELECT name FROM services")).scalars().all()) == ["x"]
    finally:
        other.close()
        db.close()


def test_a_read_and_a_write_see_one_snapshot(tmp_path: Path) -> None:
    """A transaction that reads, then writes what it read, while another connection commits in
    between: the write must not act on the stale read (it is run again, and sees the commit)."""
    db = sqlite_db(tmp_path)
    asyncio.run(db.call(q.enqueue_many, [new_job(0)], NOW))
    other = sqlite3.connect(tmp_path / "sluice.db", isolation_level=None, check_same_thread=False)
    seen: list[int] = []

    def read_then_write(connection: Connection) -> None:
        count = count_jobs(connection)
        seen.append(count)
        if len(seen) == 1:  # another writer commits between this read and the write below
            other.execute(
                "INSERT INTO jobs (id, service, status, attempts, failures, max_retries, run_after, "
                "created_at) VALUES ('other', 'svc', 'queued', 0, 0, 0, 0, 0)"
            )
        connection.execute(text("UPDATE jobs SET max_retries = :n"), {"n": count})

    try:
        asyncio.run(db.call(read_then_write))
        assert seen == [1, 2]  # the first attempt lost the race and was run again
        assert db.run_sync(lambda c: c.execute(text("SELECT DISTINCT max_retries FROM jobs")).all()) == [(2,)]
    finally:
        other.close()
        db.close()


def test_the_log_is_checkpointed_and_kept_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's connection never checkpoints; the thread does, every CHECKPOINT_EVERY commits,
    and restarts a log grown past WAL_RESTART_BYTES. Without that, these commits leave a log of
    about 96 MB; with it, a few times the limit at most (commits go on while it checkpoints)."""
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY", 20)
    monkeypatch.setattr(sqlite_module, "WAL_RESTART_BYTES", 256 * 1024)
    db = sqlite_db(tmp_path)
    padding = "x" * 1000

    async def scenario() -> None:
        for index in range(2000):
            await db.call_relaxed(q.enqueue_many, [new_job(index, padding)], NOW)
            if index % 100 == 0:
                await asyncio.sleep(0.01)  # a moment for the checkpoint's thread, as a server has

    try:
        asyncio.run(scenario())
        assert db.run_sync(count_jobs) == 2000
        assert os.path.getsize(tmp_path / "sluice.db-wal") < 32 * 256 * 1024
    finally:
        db.close()
