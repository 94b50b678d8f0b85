"""The durable job queue (sluice.db.jobs) on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect

from sluice.db import jobs as q
from sluice.db.database import Database
from sluice.db.jobs import CRASH_ALLOWANCE, Accepted, NewJob

NOW = 1_700_000_000.0
LEASE = 30.0


def obj(key: str, etag: str = "e1", service: str = "svc", bucket: str = "in", retries: int = 0) -> NewJob:
    return NewJob(
        service=service,
        max_retries=retries,
        bucket=bucket,
        key=key,
        etag=etag,
        event={"Key": f"{bucket}/{key}", "etag": etag},
    )


def enqueue(db: Database, *new_jobs: NewJob, now: float = NOW) -> list[Accepted]:
    return db.run_sync(q.enqueue_many, list(new_jobs), now)


def enqueue_one(db: Database, new_job: NewJob, now: float = NOW) -> str:
    (accepted,) = enqueue(db, new_job, now=now)
    assert accepted.created
    return accepted.job_id


def claim(db: Database, worker: str, limit: int = 10, now: float = NOW, lease: float = LEASE) -> list[q.Job]:
    return db.run_sync(q.claim, worker, limit, now, lease)


def get(db: Database, job_id: str) -> q.Job:
    job = db.run_sync(q.get, job_id)
    assert job is not None
    return job


def count(db: Database, service: str | None = "svc", status: str | None = None) -> int:
    return db.run_sync(q.count_jobs, service, status)


def finish(db: Database, job_id: str, worker: str, status: str = q.SUCCEEDED, now: float = NOW + 1) -> bool:
    return db.run_sync(q.finish, job_id, worker, status, now, exit_code=0, log=f"log by {worker}")


def fail(db: Database, job_id: str, worker: str, retry_at: float | None, now: float = NOW + 1) -> str | None:
    return db.run_sync(q.fail, job_id, worker, now, retry_at, exit_code=3, log="boom", error="exit 3")


# --- schema --------------------------------------------------------------------------------------


def test_migrate_twice_is_harmless(db: Database) -> None:
    job_id = enqueue_one(db, obj("a.txt"))
    db.migrate()
    assert {"jobs", "seen_objects", "services"} <= set(inspect(db.engine).get_table_names())
    assert get(db, job_id).status == q.QUEUED
    assert enqueue(db, obj("a.txt")) == [Accepted(job_id, created=False)]


# --- enqueue and the idempotency ledger ----------------------------------------------------------


def test_enqueue_returns_new_queued_jobs(db: Database) -> None:
    payload_job = NewJob(service="svc", max_retries=2, payload=b"\x00raw body")
    accepted = enqueue(db, obj("a.txt"), obj("b.txt"), payload_job)

    assert [a.created for a in accepted] == [True, True, True]
    ids = [a.job_id for a in accepted]
    assert len(set(ids)) == 3
    first = get(db, ids[0])
    assert (first.service, first.status, first.bucket, first.key, first.etag) == (
        "svc",
        q.QUEUED,
        "in",
        "a.txt",
        "e1",
    )
    assert first.event is not None and '"in/a.txt"' in first.event
    assert (first.attempts, first.failures, first.worker, first.created_at) == (0, 0, None, NOW)
    assert get(db, ids[2]).max_retries == 2
    assert db.run_sync(q.payload_of, ids[2]) == b"\x00raw body"
    assert count(db) == 3


def test_same_object_version_twice_in_one_batch_is_one_job(db: Database) -> None:
    first, second = enqueue(db, obj("a.txt"), obj("a.txt"))
    assert first.created and not second.created
    assert second.job_id == first.job_id
    assert count(db) == 1


def test_same_object_version_across_batches_is_one_job(db: Database) -> None:
    job_id = enqueue_one(db, obj("a.txt"))
    again = enqueue(db, obj("b.txt"), obj("a.txt"), now=NOW + 5)
    assert again[0].created
    assert again[1] == Accepted(job_id, created=False)
    assert count(db) == 2
    assert get(db, job_id).created_at == NOW  # the original is untouched


def test_already_seen_version_twice_in_a_later_batch(db: Database) -> None:
    job_id = enqueue_one(db, obj("a.txt"))
    assert enqueue(db, obj("a.txt"), obj("a.txt")) == [Accepted(job_id, False), Accepted(job_id, False)]
    assert count(db) == 1


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(obj("a.txt", etag="e2"), id="new-etag"),
        pytest.param(obj("a.txt", service="svc2"), id="other-service"),
        pytest.param(obj("a.txt", bucket="in2"), id="other-bucket"),
        pytest.param(obj("b.txt"), id="other-key"),
    ],
)
def test_a_different_version_is_a_new_job(db: Database, other: NewJob) -> None:
    first = enqueue_one(db, obj("a.txt"))
    second = enqueue_one(db, other)
    assert second != first
    assert count(db, None) == 2


def test_same_object_for_two_services_in_one_batch(db: Database) -> None:
    accepted = enqueue(db, obj("a.txt", service="svc"), obj("a.txt", service="other"))
    assert [a.created for a in accepted] == [True, True]
    assert accepted[0].job_id != accepted[1].job_id
    assert (count(db, "svc"), count(db, "other")) == (1, 1)


def test_payload_jobs_are_never_deduplicated(db: Database) -> None:
    body = NewJob(service="svc", max_retries=0, payload=b"same")
    accepted = enqueue(db, body, body) + enqueue(db, body)
    assert all(a.created for a in accepted)
    assert len({a.job_id for a in accepted}) == 3


def test_large_batch_with_duplicates(db: Database) -> None:
    batch = [obj(f"k{i % 700}") for i in range(1400)]  # crosses the ledger's chunk size
    accepted = enqueue(db, *batch)
    assert sum(a.created for a in accepted) == 700
    assert [a.job_id for a in accepted[:700]] == [a.job_id for a in accepted[700:]]
    assert count(db) == 700


def _enqueue_at_once(
    db: Database, batches: dict[str, list[str]]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Enqueue each batch of keys from its own thread, all starting together: ({batch: {key: id}}, errors)."""
    results: dict[str, dict[str, str]] = {}
    errors: list[str] = []
    start = threading.Barrier(len(batches))

    def work(name: str, ordered: list[str]) -> None:
        try:
            start.wait(timeout=30)
            accepted = enqueue(db, *[obj(k) for k in ordered])
            results[name] = {k: a.job_id for k, a in zip(ordered, accepted, strict=True)}
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

    threads = [threading.Thread(target=work, args=item) for item in batches.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return results, errors


@pytest.mark.timeout(120)
def test_concurrent_enqueues_of_the_same_objects(db: Database) -> None:
    """The reconciler and the event acceptor may enqueue the same objects at once, in any order."""
    for round_ in range(3):
        keys = [f"r{round_}/k{i:04d}" for i in range(1000)]
        results, errors = _enqueue_at_once(db, {"forward": keys, "backward": keys[::-1]})
        assert errors == []
        assert results["forward"] == results["backward"]
        assert count(db) == 1000 * (round_ + 1)


# --- claim ---------------------------------------------------------------------------------------


def test_claim_marks_running_with_worker_and_lease(db: Database) -> None:
    job_id = enqueue_one(db, obj("a.txt"))
    (job,) = claim(db, "w1", now=NOW + 2)
    assert job.id == job_id
    assert (job.status, job.worker, job.lease_expires, job.started_at, job.attempts) == (
        q.RUNNING,
        "w1",
        NOW + 2 + LEASE,
        NOW + 2,
        1,
    )
    assert get(db, job_id) == job
    assert claim(db, "w2", now=NOW + 3) == []


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_claim_takes_at_most_limit_jobs(db: Database, limit: int) -> None:
    enqueue(db, *[obj(f"k{i}") for i in range(6)])

    claimed = claim(db, "w", limit=limit)

    assert len(claimed) == limit
    assert count(db, status=q.RUNNING) == limit
    assert count(db, status=q.QUEUED) == 6 - limit


def test_claim_takes_the_longest_due_first(db: Database) -> None:
    due = {name: NOW + offset for name, offset in [("c", 3), ("a", 1), ("e", 5), ("b", 2), ("d", 4)]}
    ids = {name: enqueue_one(db, obj(name), now=when) for name, when in due.items()}

    order = []
    for _ in range(len(due) + 1):  # bounded
        claimed = claim(db, "w", limit=2, now=NOW + 10)
        if not claimed:
            break
        assert len(claimed) <= 2
        order.append(sorted(j.key for j in claimed))
    assert order == [["a", "b"], ["c", "d"], ["e"]]
    assert {get(db, i).status for i in ids.values()} == {q.RUNNING}


def test_claim_skips_jobs_not_yet_due(db: Database) -> None:
    enqueue_one(db, obj("future"), now=NOW + 100)
    assert claim(db, "w", now=NOW) == []
    assert len(claim(db, "w", now=NOW + 100)) == 1


@pytest.mark.timeout(120)
def test_concurrent_claims_never_share_a_job(db: Database) -> None:
    total, workers = 120, 8
    expected = {a.job_id for a in enqueue(db, *[obj(f"k{i}") for i in range(total)])}
    got: dict[str, list[str]] = {f"w{n}": [] for n in range(workers)}
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def work(name: str) -> None:
        try:
            start.wait(timeout=30)
            for _ in range(total):  # bounded: each round claims at least one job or stops
                claimed = claim(db, name, limit=3)
                got[name] += [j.id for j in claimed]
                if not claimed and count(db, status=q.QUEUED) == 0:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    every = [job_id for ids in got.values() for job_id in ids]
    assert len(every) == len(set(every)), "a job was handed to two workers"
    assert set(every) == expected
    for name, ids in got.items():
        for job_id in ids:
            assert get(db, job_id).worker == name
    assert count(db, status=q.RUNNING) == total


# --- leases and ownership ------------------------------------------------------------------------


def test_renew_leases_only_for_jobs_the_worker_owns(db: Database) -> None:
    a = enqueue_one(db, obj("a"))
    (claimed_a,) = claim(db, "w1", limit=1)
    b = enqueue_one(db, obj("b"))
    claim(db, "w2", limit=1)
    c = enqueue_one(db, obj("c"))
    claim(db, "w1", limit=1)
    db.run_sync(q.cancel, c, NOW)  # cancelled: w1 no longer holds it

    held = db.run_sync(q.renew_leases, "w1", [a, b, c], NOW + 100)

    assert held == {a}
    assert get(db, a).lease_expires == NOW + 100
    assert get(db, b).lease_expires == NOW + LEASE
    assert get(db, c).lease_expires is None
    assert claimed_a.id == a
    assert db.run_sync(q.renew_leases, "w1", [], NOW + 100) == set()


def test_finish_by_owner(db: Database) -> None:
    job_id = enqueue_one(db, NewJob(service="svc", max_retries=0, payload=b"body"))
    claim(db, "w1")
    assert finish(db, job_id, "w1", now=NOW + 7)
    job = get(db, job_id)
    assert (job.status, job.finished_at, job.exit_code, job.lease_expires) == (q.SUCCEEDED, NOW + 7, 0, None)
    assert db.run_sync(q.log_of, job_id) == ("log by w1", True)
    assert db.run_sync(q.payload_of, job_id) is None  # a succeeded job's input body is dropped


def test_finish_by_a_worker_that_lost_the_job_changes_nothing(db: Database) -> None:
    job_id = enqueue_one(db, obj("a"))
    claim(db, "w1", now=NOW)
    assert db.run_sync(q.requeue_expired, NOW + LEASE + 1) == 1  # w1 looked dead
    claim(db, "w2", now=NOW + LEASE + 2)
    before = get(db, job_id)

    assert not finish(db, job_id, "w1", now=NOW + LEASE + 3)
    assert fail(db, job_id, "w1", retry_at=NOW + 99) is None

    assert get(db, job_id) == before
    assert before.status == q.RUNNING and before.worker == "w2"
    assert db.run_sync(q.log_of, job_id) == (None, True)
    assert finish(db, job_id, "w2")
    assert get(db, job_id).status == q.SUCCEEDED


def test_finish_of_a_queued_job_is_refused(db: Database) -> None:
    job_id = enqueue_one(db, obj("a"))
    assert not finish(db, job_id, "w1")
    assert get(db, job_id).status == q.QUEUED


# --- failure, retries, dead letters --------------------------------------------------------------


def test_fail_with_retries_left_requeues_later(db: Database) -> None:
    job_id = enqueue_one(db, obj("a", retries=2))
    for attempt in (1, 2):
        (job,) = claim(db, "w", now=NOW + 100 * attempt)
        assert job.attempts == attempt
        retry_at = NOW + 100 * attempt + 50
        assert fail(db, job_id, "w", retry_at=retry_at, now=NOW + 100 * attempt) == q.QUEUED
        job = get(db, job_id)
        assert (job.status, job.failures, job.run_after, job.worker) == (q.QUEUED, attempt, retry_at, None)
        assert (job.exit_code, job.error, job.lease_expires) == (3, "exit 3", None)
        assert claim(db, "w", now=retry_at - 1) == []  # not before its time

    claim(db, "w", now=NOW + 300)
    assert fail(db, job_id, "w", retry_at=NOW + 350, now=NOW + 300) == q.FAILED
    job = get(db, job_id)
    assert (job.status, job.failures, job.finished_at) == (q.FAILED, 3, NOW + 300)
    assert claim(db, "w", now=NOW + 10_000) == []


def test_fail_without_retries_is_dead_lettered(db: Database) -> None:
    job_id = enqueue_one(db, obj("a", retries=0))
    claim(db, "w")
    assert fail(db, job_id, "w", retry_at=NOW + 5) == q.FAILED
    assert [j.id for j in db.run_sync(q.list_jobs, "svc", status=q.FAILED)] == [job_id]
    assert db.run_sync(q.status_counts, "svc") == {q.FAILED: 1}
    assert db.run_sync(q.log_of, job_id) == ("boom", True)


def test_fail_with_no_retry_time_is_final_even_with_retries_left(db: Database) -> None:
    job_id = enqueue_one(db, obj("a", retries=5))
    claim(db, "w")
    assert fail(db, job_id, "w", retry_at=None) == q.FAILED
    assert get(db, job_id).status == q.FAILED


def test_requeue_of_a_failed_job_resets_it(db: Database) -> None:
    job_id = enqueue_one(db, obj("a", retries=0))
    claim(db, "w")
    fail(db, job_id, "w", retry_at=None)

    assert db.run_sync(q.requeue, job_id, NOW + 50) == q.FAILED

    job = get(db, job_id)
    assert (job.status, job.failures, job.attempts, job.run_after) == (q.QUEUED, 0, 0, NOW + 50)
    assert (job.worker, job.finished_at, job.exit_code, job.error) == (None, None, None, None)
    (again,) = claim(db, "w2", now=NOW + 50)
    assert again.id == job_id and again.attempts == 1


@pytest.mark.parametrize("state", [q.QUEUED, q.RUNNING, q.SUCCEEDED])
def test_requeue_leaves_other_states_alone(db: Database, state: str) -> None:
    job_id = enqueue_one(db, obj("a"))
    if state != q.QUEUED:
        claim(db, "w")
    if state == q.SUCCEEDED:
        finish(db, job_id, "w")
    before = get(db, job_id)
    assert db.run_sync(q.requeue, job_id, NOW + 50) == state
    assert get(db, job_id) == before


def test_requeue_and_cancel_of_unknown_job(db: Database) -> None:
    assert db.run_sync(q.requeue, "no-such-job", NOW) is None
    assert db.run_sync(q.cancel, "no-such-job", NOW) is None
    assert db.run_sync(q.get, "no-such-job") is None
    assert db.run_sync(q.log_of, "no-such-job") == (None, False)


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_queued_job(db: Database) -> None:
    job_id = enqueue_one(db, obj("a"))
    assert db.run_sync(q.cancel, job_id, NOW + 3) == q.QUEUED
    job = get(db, job_id)
    assert (job.status, job.finished_at, job.error) == (q.CANCELLED, NOW + 3, "cancelled by request")
    assert claim(db, "w", now=NOW + 10) == []


def test_cancel_running_job_locks_its_worker_out(db: Database) -> None:
    job_id = enqueue_one(db, obj("a", retries=3))
    claim(db, "w")
    assert db.run_sync(q.cancel, job_id, NOW + 3) == q.RUNNING
    assert get(db, job_id).status == q.CANCELLED
    assert db.run_sync(q.renew_leases, "w", [job_id], NOW + 100) == set()
    assert not finish(db, job_id, "w")
    assert fail(db, job_id, "w", retry_at=NOW + 5) is None
    assert db.run_sync(q.requeue_expired, NOW + 1000) == 0
    assert get(db, job_id).status == q.CANCELLED


def test_cancel_of_a_finished_job_changes_nothing(db: Database) -> None:
    job_id = enqueue_one(db, obj("a"))
    claim(db, "w")
    finish(db, job_id, "w")
    before = get(db, job_id)
    assert db.run_sync(q.cancel, job_id, NOW + 9) == q.SUCCEEDED
    assert get(db, job_id) == before


def test_cancelled_job_can_be_requeued(db: Database) -> None:
    job_id = enqueue_one(db, obj("a"))
    db.run_sync(q.cancel, job_id, NOW)
    assert db.run_sync(q.requeue, job_id, NOW + 1) == q.CANCELLED
    assert [j.id for j in claim(db, "w", now=NOW + 1)] == [job_id]


# --- lost workers --------------------------------------------------------------------------------


def test_requeue_expired_only_requeues_expired_leases(db: Database) -> None:
    short = enqueue_one(db, obj("short"))
    claim(db, "w1", now=NOW, lease=10)
    long = enqueue_one(db, obj("long"))
    claim(db, "w2", now=NOW, lease=100)

    assert db.run_sync(q.requeue_expired, NOW + 10) == 0  # a lease ending exactly now still holds
    assert db.run_sync(q.requeue_expired, NOW + 11) == 1

    job = get(db, short)
    assert (job.status, job.worker, job.lease_expires, job.run_after) == (q.QUEUED, None, None, NOW + 11)
    assert get(db, long).status == q.RUNNING
    assert [j.id for j in claim(db, "w3", now=NOW + 11)] == [short]


def test_requeue_expired_everything_running(db: Database) -> None:
    for key, worker in [("a", "w1"), ("b", "w1"), ("c", "w2")]:
        enqueue_one(db, obj(key))
        (job,) = claim(db, worker, now=NOW, lease=1000)
    finish(db, job.id, "w2")

    assert db.run_sync(q.requeue_expired, NOW + 1, everything_running=True) == 2
    assert db.run_sync(q.status_counts, "svc") == {q.QUEUED: 2, q.SUCCEEDED: 1}


@pytest.mark.parametrize("retries", [0, 2])
def test_requeue_expired_gives_up_after_crash_allowance(db: Database, retries: int) -> None:
    job_id = enqueue_one(db, obj("a", retries=retries))
    allowed = retries + 1 + CRASH_ALLOWANCE
    now = NOW
    claims = 0
    for _ in range(allowed + 5):  # bounded
        if not claim(db, "w", now=now, lease=1):
            break
        claims += 1
        now += 10
        db.run_sync(q.requeue_expired, now)
    assert claims == allowed
    job = get(db, job_id)
    assert job.status == q.FAILED
    assert job.attempts == allowed
    assert job.error == "the worker running this job stopped too many times"
    assert job.finished_at is not None


def test_release_hands_back_a_workers_running_jobs(db: Database) -> None:
    mine = [a.job_id for a in enqueue(db, obj("a"), obj("b"))]
    claim(db, "stopping", limit=2, now=NOW, lease=1000)
    other = enqueue_one(db, obj("c"))
    claim(db, "staying", now=NOW, lease=1000)

    assert db.run_sync(q.release, "stopping", NOW + 1) == 2

    for job_id in mine:
        job = get(db, job_id)
        assert (job.status, job.worker, job.lease_expires) == (q.QUEUED, None, None)
    assert get(db, other).worker == "staying"
    assert sorted(j.id for j in claim(db, "next", now=NOW + 1)) == sorted(mine)
    assert db.run_sync(q.release, "nobody", NOW + 2) == 0


# --- cleanup and the ledger ----------------------------------------------------------------------


STATES = (q.SUCCEEDED, q.FAILED, q.CANCELLED, q.RUNNING, q.QUEUED)


def _one_job_in_each_state(db: Database, *services: str) -> dict[tuple[str, str], str]:
    """One job per (service, state). Built one at a time, so each claim has exactly one queued job."""
    ids = {}
    for state in STATES:
        for service in services:
            job_id = enqueue_one(db, obj(state, service=service))
            ids[service, state] = job_id
            if state == q.QUEUED:
                continue
            worker = f"{service}-{state}"
            assert [j.id for j in claim(db, worker, limit=1)] == [job_id]
            if state == q.SUCCEEDED:
                assert finish(db, job_id, worker)
            elif state == q.FAILED:
                assert fail(db, job_id, worker, retry_at=None) == q.FAILED
            elif state == q.CANCELLED:
                assert db.run_sync(q.cancel, job_id, NOW) == q.RUNNING
    return ids


def test_delete_jobs_succeeded_only(db: Database) -> None:
    ids = _one_job_in_each_state(db, "svc", "other")

    assert db.run_sync(q.delete_jobs, "svc", everything=False) == 1

    assert db.run_sync(q.get, ids["svc", q.SUCCEEDED]) is None
    for state in STATES[1:]:
        assert get(db, ids["svc", state]).status == state
    assert count(db, "other") == len(STATES)


def test_delete_jobs_everything(db: Database) -> None:
    _one_job_in_each_state(db, "svc", "other")
    assert db.run_sync(q.delete_jobs, "svc", everything=True) == 5
    assert count(db, "svc") == 0
    assert count(db, "other") == 5


def test_delete_single_job(db: Database) -> None:
    job_id = enqueue_one(db, obj("a"))
    assert db.run_sync(q.delete_job, job_id)
    assert not db.run_sync(q.delete_job, job_id)
    assert count(db) == 0


def test_ledger_survives_job_deletion(db: Database) -> None:
    job_id = enqueue_one(db, obj("in/a.txt", etag="v1"))
    claim(db, "w")
    finish(db, job_id, "w")
    db.run_sync(q.delete_jobs, "svc", everything=False)
    assert count(db) == 0

    assert enqueue(db, obj("in/a.txt", etag="v1")) == [Accepted(job_id, created=False)]
    assert count(db) == 0
    assert db.run_sync(q.seen_versions, "svc", "in", "in/") == {("in/a.txt", "v1")}
    # a new version of the same object is new work
    assert enqueue(db, obj("in/a.txt", etag="v2"))[0].created
    assert db.run_sync(q.seen_versions, "svc", "in", "in/") == {("in/a.txt", "v1"), ("in/a.txt", "v2")}


def test_seen_versions_filters_by_service_bucket_and_prefix(db: Database) -> None:
    enqueue(
        db,
        obj("a_b/1", bucket="in"),
        obj("axb/2", bucket="in"),  # '_' in the prefix must not act as a LIKE wildcard
        obj("a%b/3", bucket="in"),
        obj("a_b/4", bucket="other"),
        obj("a_b/5", bucket="in", service="svc2"),
    )
    assert db.run_sync(q.seen_versions, "svc", "in", "a_b/") == {("a_b/1", "e1")}
    assert db.run_sync(q.seen_versions, "svc", "in", "a%") == {("a%b/3", "e1")}
    everything = {("a_b/1", "e1"), ("axb/2", "e1"), ("a%b/3", "e1")}
    assert db.run_sync(q.seen_versions, "svc", "in", "") == everything
    assert db.run_sync(q.seen_versions, "svc", "nope", "") == set()


def test_forget_service_clears_jobs_and_ledger(db: Database) -> None:
    old = enqueue_one(db, obj("a.txt"))
    kept = enqueue_one(db, obj("a.txt", service="other"))

    db.run_sync(q.forget_service, "svc")

    assert count(db, "svc") == 0
    assert db.run_sync(q.seen_versions, "svc", "in", "") == set()
    assert get(db, kept).service == "other"
    assert db.run_sync(q.seen_versions, "other", "in", "") == {("a.txt", "e1")}
    # a service created again with the same name processes the object again
    (again,) = enqueue(db, obj("a.txt"))
    assert again.created and again.job_id != old


# --- listing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 4, 7, 30])
def test_list_jobs_paging_visits_every_job_once_newest_first(db: Database, limit: int) -> None:
    # several batches, so many jobs share a created_at: paging must break ties by id
    for batch in range(5):
        enqueue(db, *[obj(f"b{batch}-{i}") for i in range(batch + 2)], now=NOW + batch)
    enqueue(db, obj("elsewhere", service="other"))
    all_jobs = db.run_sync(q.list_jobs, "svc", limit=1000)
    assert len(all_jobs) == 20
    expected = sorted(all_jobs, key=lambda j: (j.created_at, j.id), reverse=True)
    assert [j.id for j in all_jobs] == [j.id for j in expected]

    seen: list[str] = []
    after: tuple[float, str] | None = None
    for _ in range(len(all_jobs) + 1):  # bounded
        page = db.run_sync(q.list_jobs, "svc", after=after, limit=limit)
        assert len(page) <= limit
        seen += [j.id for j in page]
        if len(page) < limit:
            break
        after = (page[-1].created_at, page[-1].id)
    assert seen == [j.id for j in expected]


def test_list_jobs_filters(db: Database) -> None:
    ids = _one_job_in_each_state(db, "svc", "other")
    assert [j.id for j in db.run_sync(q.list_jobs, "svc", status=q.RUNNING)] == [ids["svc", q.RUNNING]]
    assert len(db.run_sync(q.list_jobs, None)) == 10
    assert count(db, None, q.QUEUED) == 2
    assert db.run_sync(q.status_counts) == {
        q.SUCCEEDED: 2,
        q.FAILED: 2,
        q.CANCELLED: 2,
        q.RUNNING: 2,
        q.QUEUED: 2,
    }


def test_a_claim_on_sqlite_reads_only_the_jobs_it_takes(tmp_path: Path) -> None:
    """With thousands queued, a claim must not read them all (the worker claims once per job):
    SQLite's planner, left alone, scanned every queued job twice. (PostgreSQL plans from the
    statistics it keeps.)"""
    db = Database(f"sqlite:///{tmp_path / 'queue.db'}")
    db.migrate()
    enqueue(db, *(obj(f"k{i}") for i in range(200)))
    with db.engine.connect() as connection:
        plan = connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + str(q.CLAIM_SQLITE),
            {"worker": "w", "limit": 2, "now": NOW, "lease_expires": NOW + LEASE},
        ).all()
    steps = [row[3] for row in plan]
    assert any("ix_jobs_claim" in step for step in steps), steps
    assert not any("TEMP B-TREE" in step for step in steps), steps  # no sort of every queued job
    assert any("sqlite_autoindex_jobs_1 (id=?)" in step for step in steps), steps  # by key, not scan
    assert [j.etag for j in claim(db, "w", limit=2)] == ["e1", "e1"]
    db.close()
