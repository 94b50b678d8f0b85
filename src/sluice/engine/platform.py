"""The platform's domain operations, the one place API handlers call into.

It owns the engine's parts (catalog, acceptor, dispatcher, reconciler) and offers what users do:
define services, put objects (which become jobs), and follow, cancel and requeue jobs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sluice.db import accounts
from sluice.db import jobs as job_sql
from sluice.db import services as service_sql
from sluice.db.accounts import BucketRecord
from sluice.db.database import Database
from sluice.db.jobs import Accepted, Job, NewJob
from sluice.db.services import ServiceRecord
from sluice.engine.acceptor import Acceptor
from sluice.engine.access import Caller, can_manage_bucket, can_use_bucket
from sluice.engine.catalog import BucketCatalog, ServiceCatalog
from sluice.engine.dispatcher import Dispatcher
from sluice.engine.prewarm import ScriptPrewarmer
from sluice.engine.reconciler import Reconciler
from sluice.engine.retry import RetryStrategy
from sluice.engine.sync import Reply, SyncRunner
from sluice.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    JobNotFound,
    Overloaded,
    ServiceNotFound,
    SluiceError,
)
from sluice.executors.base import Executor
from sluice.metrics import Metrics
from sluice.replicas.manager import ReplicaManager
from sluice.replicas.pool import ReplicaPool
from sluice.replicas.process import Call
from sluice.runtime.invocation import EVENT_TIME_FORMAT, event_for
from sluice.runtime.workspace import WorkspacePool
from sluice.settings import Settings
from sluice.spec.service import ServiceSpec
from sluice.storage.base import ObjectInfo, StorageProvider
from sluice.storage.events import ObjectCreated, minio_records
from sluice.storage.iam import S3Iam
from sluice.storage.local import LocalStorage
from sluice.storage.registry import StorageRouter, split_path
from sluice.storage.s3 import S3Storage

log = logging.getLogger("sluice.platform")


@dataclass(frozen=True)
class Upload:
    info: ObjectInfo
    jobs: list[Accepted]


class Platform:
    def __init__(self, settings: Settings, db: Database, storage: StorageRouter, executor: Executor) -> None:
        self.settings = settings
        self.db = db
        self.storage = storage
        self.executor = executor
        self.worker_id = f"{uuid.uuid4().hex[:12]}"
        self.catalog = ServiceCatalog(db)
        self.buckets = BucketCatalog(db)
        self.metrics = Metrics()
        self.replicas = ReplicaManager(
            settings.data_dir / "replicas",
            default_timeout=settings.job_timeout,
            max_waiting=settings.sync_max_waiting,
            start_timeout=settings.replica_start_timeout,
            metrics=self.metrics,
            containers=executor if hasattr(executor, "replica_commands") else None,
        )
        self.metrics.watch_replicas(self.replicas.all_status)
        self.metrics.watch_exposed(self.replicas.all_exposed_status)
        self.dispatcher = Dispatcher(
            db=db,
            catalog=self.catalog,
            storage=storage,
            executor=executor,
            replicas=self.replicas,
            metrics=self.metrics,
            worker_id=self.worker_id,
            slots=settings.workers,
            lease=settings.lease_seconds,
            default_timeout=settings.job_timeout,
            log_limit=settings.log_limit,
            retry=RetryStrategy(settings.retry_base_delay, settings.retry_max_delay),
        )
        store = storage.default
        make_durable = store.make_durable if isinstance(store, LocalStorage) else None
        self.acceptor = Acceptor(db, on_commit=self.dispatcher.wake, make_durable=make_durable)
        # Per-user S3 keys need an IAM API on the store; without one users get the endpoint only.
        self.iam = S3Iam(store) if settings.s3_user_credentials and isinstance(store, S3Storage) else None
        self.reconciler = Reconciler(self, interval=settings.reconcile_interval)
        self.prewarmer: ScriptPrewarmer | None = None  # with warm containers, once started

    async def start(self) -> None:
        if self.settings.workers > 0:
            await self.executor.start()  # e.g. removes containers a killed server left
        workspaces = WorkspacePool(
            self.settings.data_dir / "work", on_reassign=self.executor.forget_workspace
        )
        if self.settings.workers > 0 and self.executor.capabilities.warm_scripts:
            self.prewarmer = ScriptPrewarmer(
                executor=self.executor,
                workspaces=workspaces,
                catalog=self.catalog,
                default_timeout=self.settings.job_timeout,
                log_limit=self.settings.log_limit,
                start_timeout=self.settings.replica_start_timeout,
                interval=max(1.0, self.settings.warm_container_idle / 3),
                is_stopped=self.replicas.is_stopped,
            )
            self.prewarmer.start()
        self.sync = SyncRunner(
            storage=self.storage,
            executor=self.executor,
            workspaces=workspaces,
            default_timeout=self.settings.job_timeout,
            log_limit=self.settings.log_limit,
            max_waiting=self.settings.sync_max_waiting,
        )
        await self.dispatcher.start(workspaces)
        self.reconciler.start()
        if self.settings.workers > 0:
            for record in await self.catalog.all():
                self._warmed(record)  # min_scale replicas up before the first call

    async def stop(self) -> None:
        await self.reconciler.stop()
        await self.dispatcher.stop()
        await self.replicas.stop()
        if self.prewarmer is not None:
            await self.prewarmer.stop()
        if self.settings.workers > 0:
            await self.executor.stop()  # warm containers

    # services

    async def get_service(self, name: str) -> ServiceRecord:
        record = await self.db.call(service_sql.get, name)
        if record is None:
            raise ServiceNotFound(name)
        return record

    async def known_service(self, name: str) -> ServiceRecord:
        """The service as jobs and uploads see it: cached for a couple of seconds (a change made
        through this server is seen at once); a name cached as missing is looked up again."""
        return await self.catalog.get(name) or await self.get_service(name)

    async def list_services(self) -> list[ServiceRecord]:
        return await self.catalog.all()

    async def create_service(self, spec: ServiceSpec, owner: Caller) -> ServiceRecord:
        if await self.db.call(service_sql.get, spec.name) is not None:
            raise Conflict(f"service '{spec.name}' already exists; update it with PUT")
        await self._prepare_storage(spec, owner, owner.name)
        token = secrets.token_hex(32)
        try:
            await self.db.call(service_sql.create, spec, token, owner.name, time.time())
        except Exception as exc:
            if await self.db.call(service_sql.get, spec.name) is not None:
                raise Conflict(f"service '{spec.name}' already exists; update it with PUT") from None
            raise exc
        self.catalog.invalidate(spec.name)
        return self._warmed(await self.get_service(spec.name))

    async def update_service(self, spec: ServiceSpec, caller: Caller) -> ServiceRecord:
        stored = await self.get_service(spec.name)
        spec = spec.keeping_secrets_of(stored.spec)
        await self._prepare_storage(spec, caller, stored.owner)
        if not await self.db.call(service_sql.replace, spec, time.time()):
            raise ServiceNotFound(spec.name)
        self.catalog.invalidate(spec.name)
        self.executor.forget(spec.name)  # warm containers of the old settings
        return self._warmed(await self.get_service(spec.name))

    def _warmed(self, record: ServiceRecord) -> ServiceRecord:
        if self.settings.workers > 0:
            self.replicas.warm(record)
        if self.prewarmer is not None:
            self.prewarmer.ensure(record)  # a script service's min_scale warm containers
        return record

    async def apply_service(self, spec: ServiceSpec, owner: Caller) -> tuple[ServiceRecord, bool]:
        """Create the service, or update it if it exists; True when created."""
        if await self.db.call(service_sql.get, spec.name) is None:
            return await self.create_service(spec, owner), True
        return await self.update_service(spec, owner), False

    async def delete_service(self, name: str, purge: bool = False) -> None:
        record = await self.get_service(name)

        def remove(connection: Any) -> None:
            service_sql.remove(connection, name)
            job_sql.forget_service(connection, name)

        await self.db.call_bulk(remove)  # every job of the service: maybe many rows
        self.catalog.invalidate(name)
        self.replicas.forget(name)
        self.executor.forget(name)
        if purge:
            shared = {
                split_path(io.path)[0]
                for other in await self.catalog.all()
                for io in (*other.spec.input, *other.spec.output)
            }
            for io in (*record.spec.input, *record.spec.output):
                bucket, _ = split_path(io.path)
                if bucket in shared:
                    log.warning("kept bucket %s of deleted service %s: other services use it", bucket, name)
                    continue
                provider = self.storage.for_io(record.spec, io)
                with contextlib.suppress(SluiceError):  # gone already: input and output may share one
                    await provider.delete_bucket(bucket, force=True)
                if provider is self.storage.default:
                    await self.db.call(accounts.forget_bucket, bucket)
                    self.buckets.invalidate(bucket)
            await self._rescope_s3_keys()

    async def _prepare_storage(self, spec: ServiceSpec, caller: Caller, owner: str) -> None:
        """Check every path's provider resolves and the caller may use every bucket on the
        platform's store, then create the buckets (and local folders) for the service's owner.
        Buckets the owner holds follow the service's visibility, now and when it changes."""
        providers = [(io, self.storage.for_io(spec, io)) for io in (*spec.input, *spec.output)]
        for io, provider in providers:
            bucket, _ = split_path(io.path)
            if (
                provider is self.storage.default
                and not can_use_bucket(caller, await self.bucket_record(bucket))
                and await provider.bucket_exists(bucket)
            ):
                raise Forbidden(f"bucket '{bucket}' belongs to someone else")
        for io, provider in providers:
            bucket, folder = split_path(io.path)
            if provider is self.storage.default:
                wanted = BucketRecord(bucket, owner, spec.visibility, tuple(spec.allowed_users))
                held = await self.db.call(accounts.claim_bucket, wanted, time.time())
                if held.owner == owner and held != wanted:
                    await self.db.call(
                        accounts.set_bucket_visibility, bucket, spec.visibility, list(spec.allowed_users)
                    )
                self.buckets.invalidate(bucket)
            if not await provider.bucket_exists(bucket):
                await provider.create_bucket(bucket)
            make_folder = getattr(provider, "make_folder", None)
            if folder and make_folder is not None:
                await make_folder(bucket, folder)
        await self._rescope_s3_keys()

    # buckets

    async def bucket_record(self, bucket: str) -> BucketRecord | None:
        """Read now: for decisions that change buckets."""
        return await self.db.call(accounts.get_bucket, bucket)

    async def bucket_record_cached(self, bucket: str) -> BucketRecord | None:
        """At most two seconds old (other API servers' changes): for every object route."""
        return await self.buckets.get(bucket)

    async def bucket_records(self) -> dict[str, BucketRecord]:
        return {b.name: b for b in await self.db.call(accounts.all_buckets)}

    async def create_bucket(
        self, bucket: str, caller: Caller, visibility: str = "private", allowed: Sequence[str] = ()
    ) -> None:
        record = await self.bucket_record(bucket)
        if record is not None and not can_manage_bucket(caller, record):
            raise Conflict(f"bucket '{bucket}' already exists")
        await self.db.call(
            accounts.claim_bucket, BucketRecord(bucket, caller.name, visibility, tuple(allowed)), time.time()
        )
        self.buckets.invalidate(bucket)
        await self.default_store().create_bucket(bucket)
        await self._rescope_s3_keys()

    async def set_bucket_visibility(self, bucket: str, visibility: str, allowed: Sequence[str]) -> None:
        record = await self.bucket_record(bucket)
        if record is None:  # made outside Sluice: the admin shares it, and so owns it from now on
            await self.db.call(
                accounts.claim_bucket,
                BucketRecord(bucket, self.settings.admin_user, visibility, tuple(allowed)),
                time.time(),
            )
        else:
            await self.db.call(accounts.set_bucket_visibility, bucket, visibility, list(allowed))
        self.buckets.invalidate(bucket)
        await self._rescope_s3_keys()

    async def delete_bucket(self, bucket: str) -> None:
        await self.default_store().delete_bucket(bucket, force=True)
        await self.db.call(accounts.forget_bucket, bucket)
        self.buckets.invalidate(bucket)
        await self._rescope_s3_keys()

    # S3 credentials for S3 tools (what /system/config hands out)

    async def s3_keys_for(self, caller: Caller) -> tuple[str, str] | None:
        """Keys to the platform's S3 store: the store's own for the admin; for a user, keys that
        open only the buckets they may use (issued once, their scope refreshed on every call)."""
        store = self.storage.default
        if not isinstance(store, S3Storage):
            return None
        if caller.is_admin:
            return store.access_key, store.secret_key
        if self.iam is None:
            return None
        identity = await self.db.call(accounts.s3_identity, caller.name)
        if identity is None:
            issued = await self.iam.create(caller.name)
            identity = await self.db.call(accounts.keep_s3_identity, issued, time.time())
            if identity != issued:  # another server issued keys first: keep theirs only
                await self.iam.remove_key(issued)
        await self.iam.grant(identity, await self._usable_buckets(caller))
        return identity.access_key, identity.secret_key

    async def forget_user(self, name: str) -> None:
        """After an account is removed: its S3 keys stop working."""
        identity = await self.db.call(accounts.s3_identity, name)
        if identity is not None and self.iam is not None:
            await self.iam.remove(identity)
        await self.db.call(accounts.forget_s3_identity, name)

    async def _usable_buckets(self, caller: Caller) -> list[str]:
        return [b.name for b in await self.db.call(accounts.all_buckets) if can_use_bucket(caller, b)]

    async def _rescope_s3_keys(self) -> None:
        """Who may use which bucket changed: rewrite every issued key's scope.

        Group-based sharing is applied when the user next asks /system/config (groups come with
        their token, not stored here)."""
        if self.iam is None:
            return
        for identity in await self.db.call(accounts.all_s3_identities):
            try:
                await self.iam.grant(identity, await self._usable_buckets(Caller(identity.user)))
            except SluiceError as exc:
                log.warning("could not update the S3 keys of %s: %s", identity.user, exc.message)

    # objects and events

    def default_store(self) -> StorageProvider:
        return self.storage.default

    async def _watch_table(self) -> list[tuple[str, str, ServiceRecord]]:
        """(bucket, key prefix, service) for every input path on the default store."""
        table = []
        for record in await self.catalog.all_cached():
            for io in record.spec.input:
                if self.storage.is_default(record.spec, io):
                    bucket, folder = split_path(io.path)
                    table.append((bucket, f"{folder}/" if folder else "", record))
        return table

    async def announce(
        self, created: Sequence[ObjectCreated], sync_first: Sequence[str] = ()
    ) -> list[Accepted]:
        """Objects that appeared on the default store: one job per watching service, durably.
        `sync_first`: their files, when this server just wrote them (see `Acceptor.enqueue`)."""
        table = await self._watch_table()
        when = _event_time()
        new_jobs = []
        for obj in created:
            watching = {
                record.spec.name: record
                for bucket, prefix, record in table
                if bucket == obj.bucket and obj.key.startswith(prefix)
            }
            new_jobs.extend(self._job_for_object(record, obj, when) for record in watching.values())
        return await self.acceptor.enqueue(new_jobs, sync_first)

    async def announce_to(self, record: ServiceRecord, created: Sequence[ObjectCreated]) -> list[Accepted]:
        when = _event_time()
        return await self.acceptor.enqueue([self._job_for_object(record, obj, when) for obj in created])

    def _job_for_object(self, record: ServiceRecord, obj: ObjectCreated, when: str) -> NewJob:
        return NewJob(
            service=record.spec.name,
            max_retries=record.spec.max_retries,
            bucket=obj.bucket,
            key=obj.key,
            etag=obj.etag,
            event=event_for(obj.bucket, obj.key, obj.etag, obj.size, when),
        )

    async def store_upload(self, staged: str, bucket: str, key: str) -> Upload:
        """Put an uploaded file (already spooled to `staged`) and enqueue its jobs before returning."""
        store = self.default_store()
        written: list[str] = []  # files of this machine to put on the disk before answering
        if isinstance(store, LocalStorage):
            info = await store.adopt(staged, bucket, key)
            written.append(store.path_of(bucket, key))
        else:  # a remote store's put is durable when it returns
            try:
                info = await store.put(Path(staged), bucket, key)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(staged)
        accepted = await self.announce([ObjectCreated(bucket, key, info.etag, info.size)], written)
        return Upload(info, accepted)

    async def submit(self, name: str, body: bytes) -> list[Accepted]:
        """`POST /job/{name}`: a MinIO event names objects to process; any other body is the input."""
        record = await self.get_service(name)
        event: Any = None
        try:
            event = json.loads(body) if body.strip() else None
        except ValueError:
            event = None
        objects = minio_records(event)
        if objects is not None:  # a storage event: run on the objects it created (none: deletions)
            return await self.announce_to(record, objects)
        new = NewJob(
            service=name,
            max_retries=record.spec.max_retries,
            event=event if isinstance(event, dict) else None,
            payload=body,
        )
        return await self.acceptor.enqueue([new])

    # synchronous calls

    async def run(self, record: ServiceRecord, call: Call, *, raw_input: bool, raw_output: bool) -> Reply:
        """`POST /run/{name}`: a handler service's warm replica answers; a script service runs its
        script on the body now and answers with its outputs."""
        if self.settings.workers == 0:
            raise Overloaded("this server runs no invocations (--workers 0); call a worker server", 30)
        if record.spec.handler:
            answer, _ = await self.replicas.pool_for(record).call(call)
            return Reply(answer.body, answer.content_type, answer.status)
        return await self.sync.run(record, call.body, raw_input=raw_input, raw_output=raw_output)

    def replica_status(self, record: ServiceRecord) -> dict[str, Any]:
        """The replicas of a handler service: counts, load, cold starts, the last error."""
        if not record.spec.handler:
            raise InvalidInput(f"service '{record.spec.name}' runs a script: it has no replicas")
        if self.replicas.is_stopped(record.spec.name):
            return {**ReplicaPool.idle_status(), "stopped": True}
        status = self.replicas.status(record.spec.name)  # no pool yet: nothing ran, none is made here
        if status is None:
            status = {**ReplicaPool.idle_status(), "scaling": self.replicas.scaling_of(record.spec)}
        return {**status, "stopped": False}

    # jobs

    async def get_job(self, service: str, job_id: str) -> Job:
        job = await self.db.call(job_sql.get, job_id)
        if job is None or job.service != service:
            await self.get_service(service)  # say which is missing: the service, or the job
            raise JobNotFound(job_id)
        return job

    async def job_log(self, service: str, job_id: str) -> str:
        job = await self.get_job(service, job_id)
        text, _ = await self.db.call(job_sql.log_of, job.id)
        return text or ""

    async def list_jobs(
        self,
        service: str,
        *,
        status: str | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 100,
    ) -> tuple[list[Job], int]:
        """A page of jobs, newest first, and how many jobs come after this page."""
        await self.known_service(service)  # a poller must not pay a query for its existence

        def page(connection: Any) -> tuple[list[Job], int]:
            found = job_sql.list_jobs(connection, service, status=status, after=after, limit=limit)
            if len(found) < limit:
                return found, 0
            last = (found[-1].created_at, found[-1].id)
            return found, job_sql.count_jobs(connection, service, status, after=last)

        return await self.db.call_bulk(page)

    async def list_failed(self, limit: int = 100, services: Sequence[str] | None = None) -> list[Job]:
        """Failed jobs, newest first, of every service or of `services` only."""
        return await self.db.call_bulk(
            lambda c: job_sql.list_jobs(c, services, status=job_sql.FAILED, limit=limit)
        )

    async def delete_jobs(self, service: str, everything: bool) -> int:
        await self.get_service(service)
        if everything:
            for job in (await self.list_jobs(service, status=job_sql.RUNNING, limit=10_000))[0]:
                with contextlib.suppress(Conflict):  # it finished meanwhile
                    await self.cancel_job(service, job.id)
        return await self.db.call_bulk(job_sql.delete_jobs, service, everything=everything)

    async def delete_job(self, service: str, job_id: str) -> None:
        job = await self.get_job(service, job_id)
        if job.status == job_sql.RUNNING:
            with contextlib.suppress(Conflict):  # it finished meanwhile
                await self.cancel_job(service, job_id)
        await self.db.call(job_sql.delete_job, job_id)

    async def cancel_job(self, service: str, job_id: str) -> str:
        job = await self.get_job(service, job_id)
        if job.status in job_sql.FINAL_STATES:
            raise Conflict(f"job '{job_id}' is already {job.status}")
        previous = await self.db.call(job_sql.cancel, job_id, time.time())
        if previous == job_sql.RUNNING:
            self.dispatcher.cancel_local(job_id)  # elsewhere, that worker's heartbeat notices
        return previous or ""

    async def requeue_job(self, service: str, job_id: str) -> str:
        await self.get_job(service, job_id)
        previous = await self.db.call(job_sql.requeue, job_id, time.time())
        if previous not in (job_sql.FAILED, job_sql.CANCELLED):
            raise Conflict(f"job '{job_id}' is {previous}; only failed or cancelled jobs can be requeued")
        self.dispatcher.wake()
        return previous

    async def status(self) -> dict[str, Any]:
        counts = await self.db.call_bulk(job_sql.status_counts)  # counts every job
        return {
            "jobs": counts,
            "running_here": self.dispatcher.running,
            "slots": self.dispatcher.slots,
            "executor": self.executor.name,
        }


def _event_time() -> str:
    return datetime.now(UTC).strftime(EVENT_TIME_FORMAT)
