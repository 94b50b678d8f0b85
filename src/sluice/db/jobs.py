"""The durable job queue: every statement that reads or changes a job lives here.

Life of a job::

    queued --claim--> running --finish--> succeeded
      ^                  |  \\--fail, retries left--> queued (run_after = now + backoff)
      |                  |   \\--fail, none left----> failed   (the dead-letter state; requeue-able)
      +--lease expired---+    \\--cancel-----------> cancelled

A claim is one statement (`UPDATE ... WHERE id IN (SELECT ... [FOR UPDATE SKIP LOCKED]) RETURNING`),
so two workers never get the same job. A running job holds a lease its worker renews by heartbeat;
a job whose lease ran out (its worker died) is queued again. Every change of a running job checks
that the worker still owns it, so a worker that lost its lease cannot overwrite a newer run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, LargeBinary, and_, bindparam, delete, func, or_, select, text, update

from sluice.db.schema import jobs, seen_objects

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)
# A job whose worker keeps dying (lease lost) is given up after this many claims beyond its retries.
CRASH_ALLOWANCE = 5


@dataclass(frozen=True)
class NewJob:
    service: str
    max_retries: int
    bucket: str | None = None
    key: str | None = None
    etag: str | None = None
    event: dict[str, Any] | None = None
    payload: bytes | None = None

    @property
    def object_version(self) -> tuple[str, str, str] | None:
        if self.bucket and self.key and self.etag:
            return (self.bucket, self.key, self.etag)
        return None


@dataclass(frozen=True)
class Accepted:
    job_id: str
    created: bool  # False: this object version already had a job


@dataclass(frozen=True)
class Job:
    id: str
    service: str
    status: str
    bucket: str | None
    key: str | None
    etag: str | None
    event: str | None
    attempts: int
    failures: int
    max_retries: int
    run_after: float
    lease_expires: float | None
    worker: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    error: str | None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        m = row._mapping
        return cls(**{name: m[name] for name in cls.__dataclass_fields__})


JOB_COLUMNS = [jobs.c[name] for name in Job.__dataclass_fields__]

# The statements every job runs, written out once: building them with the expression language on
# each call cost more CPU than the rest of a trivial job's platform work. On SQLite they run on the
# driver itself (`_sqlite`): SQLAlchemy's own work per statement cost more than SQLite's.
_RETURNING = ", ".join(Job.__dataclass_fields__)
_CLAIM_SET = (
    "SET status = 'running', worker = :worker, lease_expires = :lease_expires, started_at = :now, "
    "attempts = attempts + 1, error = NULL"
)
# SQLite's planner, with no statistics, scanned every queued job twice per claim (by the status
# index, then a sort): 0.85 ms with 2,000 queued. The index is named and `+status` keeps the
# outer lookup on the primary key: 28 us.
CLAIM_SQLITE = text(
    f"UPDATE jobs {_CLAIM_SET} WHERE +status = 'queued' AND id IN "
    "(SELECT id FROM jobs INDEXED BY ix_jobs_claim WHERE status = 'queued' AND run_after <= :now "
    f"ORDER BY run_after LIMIT :limit) RETURNING {_RETURNING}"
)
# Materialized, or PostgreSQL may re-run the LIMITed subquery per row and take every queued job.
CLAIM_POSTGRESQL = text(
    "WITH candidates AS MATERIALIZED (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= :now "
    "ORDER BY run_after LIMIT :limit FOR UPDATE SKIP LOCKED) "
    f"UPDATE jobs {_CLAIM_SET} WHERE status = 'queued' AND id IN (SELECT id FROM candidates) "
    f"RETURNING {_RETURNING}"
)
LEDGER_INSERT = text(
    "INSERT INTO seen_objects (service, bucket, key, etag, job_id, created_at) "
    "VALUES (:service, :bucket, :key, :etag, :job_id, :created_at) ON CONFLICT DO NOTHING"
)
JOB_INSERT = text(
    "INSERT INTO jobs (id, service, status, bucket, key, etag, event, payload, attempts, failures, "
    "max_retries, run_after, created_at) VALUES (:id, :service, 'queued', :bucket, :key, :etag, :event, "
    ":payload, 0, 0, :max_retries, :now, :now)"
).bindparams(bindparam("payload", type_=LargeBinary))
FINISH = text(
    "UPDATE jobs SET status = :status, finished_at = :now, exit_code = :exit_code, log = :log, "
    "error = :error, lease_expires = NULL, "
    "payload = CASE WHEN :drop_payload THEN NULL ELSE payload END "
    "WHERE id = :id AND worker = :worker AND status = 'running'"
)


def _sqlite(connection: Connection) -> Any | None:
    """The sqlite3 connection under `connection`, or None on another database. Statements run on
    it share `connection`'s transaction (it is the same connection)."""
    if connection.dialect.name != "sqlite":
        return None
    return connection.connection.driver_connection


def _execute(connection: Connection, statement: Any, parameters: dict[str, Any]) -> Any:
    """`statement` (a `text()`) on the driver on SQLite, through SQLAlchemy elsewhere; the
    result's rows are tuples in the statement's column order, its rowcount as usual."""
    driver = _sqlite(connection)
    if driver is not None:
        return driver.execute(statement.text, parameters)
    return connection.execute(statement, parameters)


def _execute_many(connection: Connection, statement: Any, rows: list[dict[str, Any]]) -> int:
    """`statement` once per row, as one driver-level executemany; returns the rows it changed."""
    driver = _sqlite(connection)
    if driver is not None:
        return driver.executemany(statement.text, rows).rowcount
    return connection.execute(statement, rows).rowcount


def enqueue_many(connection: Connection, new_jobs: Sequence[NewJob], now: float) -> list[Accepted]:
    """Insert jobs in one transaction; an object version already seen returns its existing job id.

    Both inserts are driver-level executemany of prepared statements: building statements row by
    row cost more than the commit at thousands of events per second.
    """
    ids = [uuid.uuid4().hex for _ in new_jobs]
    first_of_version: dict[tuple[str, str, str, str], int] = {}
    for index, new in enumerate(new_jobs):
        version = new.object_version
        if version is not None:
            first_of_version.setdefault((new.service, *version), index)
    # A fixed order: two transactions inserting the same objects cannot deadlock on PostgreSQL.
    versions = sorted(first_of_version.items())
    owner = {version: ids[index] for version, index in versions}
    if versions:
        inserted = _execute_many(
            connection,
            LEDGER_INSERT,
            [
                {
                    "service": v[0],
                    "bucket": v[1],
                    "key": v[2],
                    "etag": v[3],
                    "job_id": ids[i],
                    "created_at": now,
                }
                for v, i in versions
            ],
        )
        if inserted != len(versions):  # some were seen before: their ledger rows name other jobs
            owner = {version: _ledger_job(connection, version) for version, _ in versions}

    results: list[Accepted] = []
    to_insert = []
    for index, new in enumerate(new_jobs):
        version = new.object_version
        if version is not None:
            full = (new.service, *version)
            if owner[full] != ids[index]:  # seen before, or earlier in this same batch
                results.append(Accepted(owner[full], created=False))
                continue
        to_insert.append(
            {
                "id": ids[index],
                "service": new.service,
                "bucket": new.bucket,
                "key": new.key,
                "etag": new.etag,
                "event": json.dumps(new.event) if new.event is not None else None,
                "payload": new.payload,
                "max_retries": new.max_retries,
                "now": now,
            }
        )
        results.append(Accepted(ids[index], created=True))
    if to_insert:
        _execute_many(connection, JOB_INSERT, to_insert)
    return results


def _ledger_job(connection: Connection, version: tuple[str, str, str, str]) -> str:
    service, bucket, key, etag = version
    return connection.execute(
        select(seen_objects.c.job_id).where(
            seen_objects.c.service == service,
            seen_objects.c.bucket == bucket,
            seen_objects.c.key == key,
            seen_objects.c.etag == etag,
        )
    ).scalar_one()


def claim(connection: Connection, worker: str, limit: int, now: float, lease: float) -> list[Job]:
    """Take up to `limit` runnable jobs for `worker`, atomically."""
    statement = CLAIM_POSTGRESQL if connection.dialect.name == "postgresql" else CLAIM_SQLITE
    parameters = {"worker": worker, "limit": limit, "now": now, "lease_expires": now + lease}
    return [Job(*row) for row in _execute(connection, statement, parameters)]


def payload_of(connection: Connection, job_id: str) -> bytes | None:
    return connection.execute(select(jobs.c.payload).where(jobs.c.id == job_id)).scalar_one_or_none()


def renew_leases(connection: Connection, worker: str, job_ids: Sequence[str], until: float) -> set[str]:
    """Extend the leases `worker` still holds; returns the ids it holds (others were cancelled or lost)."""
    if not job_ids:
        return set()
    rows = connection.execute(
        update(jobs)
        .where(jobs.c.id.in_(list(job_ids)), jobs.c.worker == worker, jobs.c.status == RUNNING)
        .values(lease_expires=until)
        .returning(jobs.c.id)
    ).all()
    return {row[0] for row in rows}


def _owned(job_id: str, worker: str) -> Any:
    return and_(jobs.c.id == job_id, jobs.c.worker == worker, jobs.c.status == RUNNING)


def finish(
    connection: Connection,
    job_id: str,
    worker: str,
    status: str,
    now: float,
    *,
    exit_code: int | None,
    log: str,
    error: str | None = None,
) -> bool:
    """Record a final state; False if the worker no longer owned the job (it was cancelled or lost)."""
    result = _execute(
        connection,
        FINISH,
        {
            "id": job_id,
            "worker": worker,
            "status": status,
            "now": now,
            "exit_code": exit_code,
            "log": log,
            "error": error,
            "drop_payload": status == SUCCEEDED,
        },
    )
    return result.rowcount == 1


def fail(
    connection: Connection,
    job_id: str,
    worker: str,
    now: float,
    retry_at: float | None,
    *,
    exit_code: int | None,
    log: str,
    error: str,
) -> str | None:
    """A failed run: queued again at `retry_at` while retries remain, else `failed`.

    Returns the new status, or None if the worker no longer owned the job.
    """
    row = connection.execute(
        select(jobs.c.failures, jobs.c.max_retries).where(_owned(job_id, worker))
    ).first()
    if row is None:
        return None
    failures = row.failures + 1
    if retry_at is not None and failures <= row.max_retries:
        values: dict[str, Any] = {"status": QUEUED, "run_after": retry_at, "worker": None}
        status = QUEUED
    else:
        values = {"status": FAILED, "finished_at": now}
        status = FAILED
    connection.execute(
        update(jobs)
        .where(_owned(job_id, worker))
        .values(failures=failures, exit_code=exit_code, log=log, error=error, lease_expires=None, **values)
    )
    return status


def requeue_expired(connection: Connection, now: float, *, everything_running: bool = False) -> int:
    """Queue again the running jobs whose lease ran out (or all running ones, at a single-node restart)."""
    condition = jobs.c.status == RUNNING
    if not everything_running:
        condition = and_(condition, jobs.c.lease_expires < now)
    given_up = connection.execute(
        update(jobs)
        .where(condition, jobs.c.attempts >= jobs.c.max_retries + 1 + CRASH_ALLOWANCE)
        .values(
            status=FAILED,
            finished_at=now,
            lease_expires=None,
            error="the worker running this job stopped too many times",
        )
    ).rowcount
    requeued = connection.execute(
        update(jobs).where(condition).values(status=QUEUED, worker=None, lease_expires=None, run_after=now)
    ).rowcount
    return requeued + given_up


def get(connection: Connection, job_id: str) -> Job | None:
    row = connection.execute(select(*JOB_COLUMNS).where(jobs.c.id == job_id)).first()
    return Job.from_row(row) if row else None


def log_of(connection: Connection, job_id: str) -> tuple[str | None, bool]:
    row = connection.execute(select(jobs.c.log).where(jobs.c.id == job_id)).first()
    return (row[0], True) if row else (None, False)


def _page_filter(
    query: Any, service: str | Sequence[str] | None, status: str | None, after: tuple[float, str] | None
) -> Any:
    if isinstance(service, str):
        query = query.where(jobs.c.service == service)
    elif service is not None:
        query = query.where(jobs.c.service.in_(list(service)))
    if status is not None:
        query = query.where(jobs.c.status == status)
    if after is not None:
        created, last_id = after
        query = query.where(
            or_(jobs.c.created_at < created, and_(jobs.c.created_at == created, jobs.c.id < last_id))
        )
    return query


def list_jobs(
    connection: Connection,
    service: str | Sequence[str] | None,
    *,
    status: str | None = None,
    after: tuple[float, str] | None = None,
    limit: int = 100,
) -> list[Job]:
    """Jobs newest first; `after` is the (created_at, id) of the last job of the previous page."""
    query = _page_filter(select(*JOB_COLUMNS), service, status, after)
    query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
    return [Job.from_row(row) for row in connection.execute(query)]


def count_jobs(
    connection: Connection,
    service: str | None,
    status: str | None = None,
    after: tuple[float, str] | None = None,
) -> int:
    """How many jobs match; with `after`, how many come after that page position."""
    query = _page_filter(select(func.count()).select_from(jobs), service, status, after)
    return connection.execute(query).scalar_one()


def status_counts(connection: Connection, service: str | None = None) -> dict[str, int]:
    query = select(jobs.c.status, func.count()).group_by(jobs.c.status)
    if service is not None:
        query = query.where(jobs.c.service == service)
    return {status: count for status, count in connection.execute(query)}


def delete_jobs(connection: Connection, service: str, *, everything: bool) -> int:
    """OSCAR semantics: succeeded jobs only, or every job with `everything` (running ones are cancelled)."""
    condition = jobs.c.service == service
    if not everything:
        condition = and_(condition, jobs.c.status == SUCCEEDED)
    return connection.execute(delete(jobs).where(condition)).rowcount


def delete_job(connection: Connection, job_id: str) -> bool:
    return connection.execute(delete(jobs).where(jobs.c.id == job_id)).rowcount == 1


def cancel(connection: Connection, job_id: str, now: float) -> str | None:
    """Cancel a queued or running job; returns the status it had, or None if there is no such job."""
    row = connection.execute(select(jobs.c.status).where(jobs.c.id == job_id)).first()
    if row is None:
        return None
    if row.status in (QUEUED, RUNNING):
        connection.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status.in_((QUEUED, RUNNING)))
            .values(status=CANCELLED, finished_at=now, lease_expires=None, error="cancelled by request")
        )
    return row.status


def requeue(connection: Connection, job_id: str, now: float) -> str | None:
    """Put a failed or cancelled job back in the queue with fresh retries. Returns its previous status."""
    row = connection.execute(select(jobs.c.status).where(jobs.c.id == job_id)).first()
    if row is None:
        return None
    if row.status in (FAILED, CANCELLED):
        connection.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                status=QUEUED,
                run_after=now,
                failures=0,
                attempts=0,
                worker=None,
                finished_at=None,
                exit_code=None,
                error=None,
            )
        )
    return row.status


def forget_service(connection: Connection, service: str) -> None:
    """Drop a deleted service's jobs and its idempotency ledger."""
    connection.execute(delete(jobs).where(jobs.c.service == service))
    connection.execute(delete(seen_objects).where(seen_objects.c.service == service))


def seen_versions(connection: Connection, service: str, bucket: str, prefix: str) -> set[tuple[str, str]]:
    """(key, etag) pairs already enqueued for `service` under `bucket/prefix`: what the reconciler skips."""
    rows = connection.execute(
        select(seen_objects.c.key, seen_objects.c.etag).where(
            seen_objects.c.service == service,
            seen_objects.c.bucket == bucket,
            seen_objects.c.key.startswith(prefix, autoescape=True),
        )
    )
    return {(row.key, row.etag) for row in rows}


def release(connection: Connection, worker: str, now: float) -> int:
    """Hand back a stopping worker's running jobs so another run picks them up at once."""
    return connection.execute(
        update(jobs)
        .where(jobs.c.worker == worker, jobs.c.status == RUNNING)
        .values(status=QUEUED, worker=None, lease_expires=None, run_after=now)
    ).rowcount
