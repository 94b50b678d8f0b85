"""SQLite transactions on the event loop (sluice.db.database), on a real database file: where they
run, what happens when the database is locked, and that the log is checkpointed and kept small."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from sluice.db import database as database_module
from sluice.db import jobs as q
from sluice.db.database import Database

NOW = 1_700_000_000.0


def sqlite_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'sluice.db'}")
    db.migrate()
    return db


def new_job(index: int, padding: str = "") -> q.NewJob:
    return q.NewJob(service="svc", max_retries=0, bucket="in", key=f"k{index}{padding}", etag="e")


def count_jobs(connection: Connection) -> int:
    return connection.execute(text("SELECT count(*) FROM jobs")).scalar_one()


def test_transactions_run_on_the_loop_and_bulk_work_beside_it(tmp_path: Path) -> None:
    db = sqlite_db(tmp_path)

    async def scenario() -> tuple[int, int, int, int]:
        here = threading.get_ident()
        durable = await db.call(lambda c: (q.enqueue_many(c, [new_job(1)], NOW), threading.get_ident())[1])
        relaxed = await db.call_relaxed(lambda c: threading.get_ident())
        bulk = await db.call_bulk(lambda c: threading.get_ident())
        return here, durable, relaxed, bulk

    try:
        here, durable, relaxed, bulk = asyncio.run(scenario())
        assert durable == relaxed == here  # no thread hop
        assert bulk != here
        assert db.run_sync(count_jobs) == 1
    finally:
        db.close()


def test_a_locked_database_does_not_stall_the_loop(tmp_path: Path) -> None:
    """Another connection (another process, say) holds the write lock. A transaction on the loop
    must hand itself to the thread and wait there: the loop goes on, here to release the lock.
    Were the loop blocked waiting for the lock, the release could never run (the test would
    time out)."""
    db = sqlite_db(tmp_path)
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
        assert db.run_sync(count_jobs) == 1
        assert db.run_sync(lambda c: c.execute(text("SELECT name FROM services")).scalars().all()) == ["x"]
    finally:
        other.close()
        db.close()


def test_the_log_is_checkpointed_and_kept_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's connection never checkpoints; the thread does, every CHECKPOINT_EVERY commits,
    and restarts a log grown past WAL_RESTART_BYTES. Without that, these commits would leave a
    log of about 20 MB."""
    monkeypatch.setattr(database_module, "CHECKPOINT_EVERY", 20)
    monkeypatch.setattr(database_module, "WAL_RESTART_BYTES", 256 * 1024)
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
        wal = tmp_path / "sluice.db-wal"
        assert os.path.getsize(wal) < 10 * 256 * 1024
    finally:
        db.close()
