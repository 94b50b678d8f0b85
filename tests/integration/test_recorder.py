"""Group commit of job outcomes (sluice.engine.recorder) on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from sqlalchemy import Connection, text

from sluice.db import jobs as q
from sluice.db.database import Database
from sluice.engine.recorder import Operation, Recorder

NOW = 1_700_000_000.0


class ClaimAfterEachBatch:
    """A top-up like the dispatcher's: claim jobs in the transaction that records outcomes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.accepted: list[list[q.Job]] = []

    def operation(self) -> Operation | None:
        return functools.partial(q.claim, worker="w", limit=self.limit, now=NOW, lease=30)

    def accept(self, result: Any) -> None:
        self.accepted.append(result)


def queued(db: Database, count: int) -> list[str]:
    new = [q.NewJob(service="svc", max_retries=0, bucket="in", key=f"k{i}", etag="e") for i in range(count)]
    return [a.job_id for a in db.run_sync(q.enqueue_many, new, NOW)]


def finish(job_id: str) -> Operation:
    return lambda c: q.finish(c, job_id, "w", q.SUCCEEDED, NOW + 1, exit_code=0, log="done")


def test_outcomes_and_the_next_claim_share_a_transaction(db: Database) -> None:
    ids = queued(db, 6)
    running = [job.id for job in db.run_sync(q.claim, "w", 2, NOW, 30)]
    top_up = ClaimAfterEachBatch(limit=2)

    async def scenario() -> list[bool]:
        recorder = Recorder(db, top_up=top_up)
        return list(await asyncio.gather(*(recorder.record(finish(job_id)) for job_id in running)))

    assert asyncio.run(scenario()) == [True, True]
    assert {db.run_sync(q.get, job_id).status for job_id in running} == {q.SUCCEEDED}
    claimed = [job.id for batch in top_up.accepted for job in batch]
    assert len(claimed) == 2 * len(top_up.accepted) and set(claimed) <= set(ids) - set(running)
    assert {db.run_sync(q.get, job_id).status for job_id in claimed} == {q.RUNNING}


def test_a_failing_batch_keeps_the_good_outcomes_and_claims_nothing(db: Database) -> None:
    ids = queued(db, 3)
    running = [job.id for job in db.run_sync(q.claim, "w", 2, NOW, 30)]
    top_up = ClaimAfterEachBatch(limit=1)

    def broken(connection: Connection) -> None:
        connection.execute(text("UPDATE no_such_table SET x = 1"))

    async def scenario() -> list[Any]:
        recorder = Recorder(db, top_up=top_up)
        outcomes = [
            recorder.record(finish(running[0])),
            recorder.record(broken),
            recorder.record(finish(running[1])),
        ]
        return list(await asyncio.gather(*outcomes, return_exceptions=True))

    good, bad, other = asyncio.run(scenario())
    assert good is True and other is True and isinstance(bad, Exception)
    assert {db.run_sync(q.get, job_id).status for job_id in running} == {q.SUCCEEDED}
    assert top_up.accepted == [None]  # told the claim did not run: the dispatcher's loop claims
    assert db.run_sync(q.get, ids[2]).status == q.QUEUED
