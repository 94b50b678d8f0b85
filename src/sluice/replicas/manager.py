"""The replica pools of every handler service on this server: made on first use, warmed to
`min_scale` when a service is applied or the server starts, replaced when a service changes."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from sluice.db.services import ServiceRecord
from sluice.errors import Overloaded, ServiceNotFound
from sluice.executors.process import host_environment
from sluice.metrics import Metrics
from sluice.replicas.exposed import ExposedLaunch, ExposedService, ExposeScaling, Lease
from sluice.replicas.pool import ReplicaPool, Scaling
from sluice.replicas.process import Call, Launch, Spare
from sluice.spec.code import unpack_code
from sluice.spec.service import ServiceSpec

log = logging.getLogger("sluice.replicas")
MAX_DIGESTS = 10_000
STARTUP_PREFIXES = ("LD_", "PYTHON", "MALLOC_")  # read when a process starts, before any import


class ReplicaManager:
    def __init__(
        self,
        root: Path,
        *,
        default_timeout: float,
        max_waiting: int,
        start_timeout: float,
        metrics: Metrics | None = None,
        containers: Any = None,
    ) -> None:
        """`containers`: a container executor; with one, replicas run in their service's image."""
        self.root = root
        # What a previous run left here (code folders, logs) belongs to no running replica.
        shutil.rmtree(root, ignore_errors=True)
        self.containers = containers
        self.start_timeout = start_timeout
        self.metrics = metrics
        self.default_timeout = default_timeout
        self.max_waiting = max_waiting
        self._pools: dict[str, tuple[str, ReplicaPool]] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._closed = False
        self._digests: dict[tuple[str, float], str] = {}
        self._built_from: dict[str, float] = {}  # service -> updated_at of the record its pool is from
        self._forgotten: dict[str, float] = {}  # deleted service -> when
        self._exposed: dict[str, tuple[str, ExposedService]] = {}
        self._proxy_session: aiohttp.ClientSession | None = None
        self._stopped: set[str] = set()  # stopped on request (OSCAR's stop route), until started
        # One replica process kept started ahead: a cold start then skips the interpreter's start.
        self._spare: Spare | None = None
        self._spawning: asyncio.Task[None] | None = None

    def pool_for(self, record: ServiceRecord) -> ReplicaPool:
        """The service's pool; a changed definition gets a fresh pool, the old one is drained."""
        if record.spec.name in self._stopped:
            raise Overloaded(
                f"service '{record.spec.name}' is stopped: POST /system/services/{record.spec.name}/start", 60
            )
        name = record.spec.name
        if record.updated_at <= self._forgotten.get(name, float("-inf")):
            raise ServiceNotFound(name)  # a record read before the service was deleted
        held = self._pools.get(name)
        if held is not None and record.updated_at < self._built_from.get(name, 0.0):
            return held[1]  # a record read before the last update: the newer pool stays
        fingerprint = self._fingerprint(record)
        if held is not None and held[0] == fingerprint:
            return held[1]
        if held is not None:
            self._retire(held[1])
        self._built_from[name] = record.updated_at
        launch = self._launch(record, fingerprint)
        pool = ReplicaPool(record.spec.name, launch, self._scaling(record.spec), self.metrics, self)
        self._keep_spare()
        self._pools[record.spec.name] = (fingerprint, pool)
        return pool

    def caller(self, record: ServiceRecord) -> Callable[[bytes, str], Awaitable[tuple[int, str, bytes]]]:
        """A job's way to the service's replicas: (input, its content type) -> the answer."""

        async def call(data: bytes, content_type: str) -> tuple[int, str, bytes]:
            # The pool is looked up when the input is ready: the service may have changed meanwhile.
            answer, _ = await self.pool_for(record).call(Call(data, content_type))
            return answer.status, answer.content_type, answer.body

        return call

    def warm(self, record: ServiceRecord) -> None:
        """Start `min_scale` replicas now, so the first call finds one ready; start (or restart,
        if its definition changed) an exposed service."""
        if record.spec.name in self._stopped:
            return
        if record.spec.handler:
            self.pool_for(record).ensure_min()
        elif record.spec.expose is not None:
            self._ensure_exposed(record)

    async def exposed_lease(self, record: ServiceRecord) -> Lease:
        """A hold on a healthy copy of the exposed service for one proxied request, until its
        answer is sent; 503 (Overloaded) while stopped or while no copy is healthy."""
        name = record.spec.name
        if name in self._stopped:
            raise Overloaded(f"service '{name}' is stopped: POST /system/services/{name}/start", 60)
        if record.updated_at <= self._forgotten.get(name, float("-inf")):
            raise ServiceNotFound(name)  # a record read before the service was deleted
        held = self._exposed.get(name)
        if held is None or held[0] != self._fingerprint(record):
            self._ensure_exposed(record)
            held = self._exposed[name]
        return await held[1].acquire()

    def proxy_session(self) -> aiohttp.ClientSession:
        """One HTTP client for every proxied request to exposed services (made on first use).
        No total timeout: a streamed answer may last as long as it keeps sending; a silence of
        `default_timeout` ends it."""
        if self._proxy_session is None:
            self._proxy_session = aiohttp.ClientSession(
                auto_decompress=False,
                connector=aiohttp.TCPConnector(limit=0),  # as many as callers: streams hold theirs
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.default_timeout),
            )
        return self._proxy_session

    def exposed_status(self, name: str) -> dict[str, Any] | None:
        held = self._exposed.get(name)
        return held[1].status() if held else None

    def all_exposed_status(self) -> dict[str, dict[str, Any]]:
        """Every exposed service that has a runner here (scaled to zero included, stopped not)."""
        return {name: runner.status() for name, (_, runner) in self._exposed.items()}

    def _ensure_exposed(self, record: ServiceRecord) -> None:
        spec = record.spec
        assert spec.expose is not None
        fingerprint = self._fingerprint(record)
        held = self._exposed.get(spec.name)
        if held is not None and held[0] == fingerprint:
            return
        if held is not None:
            self._retire_exposed(held[1])
        folder = self.root / spec.name / fingerprint[:16]
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / "script.sh"
        script.write_text(spec.script)
        expose = spec.expose
        container = None
        if self.containers is not None:  # in the service's image, the port published on 127.0.0.1
            own_env = {**spec.environment.variables, **spec.environment.secrets,
                       "OSCAR_SERVICE_NAME": spec.name, "OSCAR_SERVICE_TOKEN": record.token}  # fmt: skip
            container = functools.partial(
                self.containers.exposed_commands,
                image=spec.image,
                script=script,
                env=own_env,
                folder=folder,
                memory_bytes=spec.memory_limit,
                cpus=spec.cpu_cores,
                pull_policy=spec.image_pull_policy,
                pull_secrets=tuple(spec.image_pull_secrets or ()),
                gpu=spec.enable_gpu,
            )
        launch = ExposedLaunch(
            container=container,
            argv=["/bin/sh", str(script)],
            env=_service_env(record),
            cwd=folder,
            log=folder / "exposed.log",
            health_path=expose.health_path
            if expose.health_path.startswith("/")
            else "/" + expose.health_path,
            start_timeout=self.start_timeout,
        )
        runner = ExposedService(spec.name, launch, ExposeScaling.of(expose))
        runner.start()
        self._exposed[spec.name] = (fingerprint, runner)

    def _retire_exposed(self, runner: ExposedService) -> None:
        task = asyncio.get_running_loop().create_task(runner.stop())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def start(self, record: ServiceRecord) -> None:
        """Undo a stop; bring up `min_scale` replicas, and at least one (or the exposed copies)."""
        self._stopped.discard(record.spec.name)
        if not record.spec.handler:
            self.warm(record)
            exposed = self._exposed.get(record.spec.name)
            if exposed is not None:
                exposed[1].prime()  # with min_scale 0, one copy until idle_timeout passes unused
            return
        pool = self.pool_for(record)
        pool.ensure_min()
        pool.warm_one()

    def stop_service(self, record: ServiceRecord) -> None:
        """Stop every replica and refuse calls (503) until started again."""
        self.drop(record.spec.name)
        self._stopped.add(record.spec.name)

    def is_stopped(self, name: str) -> bool:
        return name in self._stopped

    def log_tail(self, record: ServiceRecord, lines: int) -> list[str]:
        """The last lines the service's current replicas printed (their shared log file)."""
        held = self._pools.get(record.spec.name)
        if held is None:
            return []
        path = held[1].launch.log
        try:
            with path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - lines * 512))
                text = handle.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        return text.splitlines()[-lines:]

    def forget(self, name: str) -> None:
        """The service was deleted: its replicas stop, a stop on it is forgotten, and records of
        it read before the deletion bring nothing back."""
        self.drop(name)
        self._stopped.discard(name)
        self._forgotten[name] = time.time()

    def _fingerprint(self, record: ServiceRecord) -> str:
        """The definition's digest, computed once per version (the code may weigh megabytes)."""
        key = (record.spec.name, record.updated_at)
        digest = self._digests.get(key)
        if digest is None:
            if len(self._digests) > MAX_DIGESTS:
                self._digests.clear()
            digest = self._digests[key] = _fingerprint(record)
        return digest

    def drop(self, name: str) -> None:
        held = self._pools.pop(name, None)
        if held is not None:
            self._retire(held[1])
        exposed = self._exposed.pop(name, None)
        if exposed is not None:
            self._retire_exposed(exposed[1])

    def status(self, name: str) -> dict[str, Any] | None:
        held = self._pools.get(name)
        return held[1].status() if held else None

    def all_status(self) -> dict[str, dict[str, Any]]:
        return {name: pool.status() for name, (_, pool) in self._pools.items()}

    async def stop(self) -> None:
        pools = [pool for _, pool in self._pools.values()]
        self._pools.clear()
        exposed = [runner for _, runner in self._exposed.values()]
        self._exposed.clear()
        await asyncio.gather(*(runner.stop() for runner in exposed), return_exceptions=True)
        if self._proxy_session is not None:
            await self._proxy_session.close()
        self._closed = True
        if self._spawning is not None:
            await asyncio.gather(self._spawning, return_exceptions=True)
        if self._spare is not None:
            await self._spare.discard()
        await asyncio.gather(*(pool.close() for pool in pools), *self._retired, return_exceptions=True)

    # The pools' SpareSource.

    def take(self) -> Spare | None:
        spare, self._spare = self._spare, None
        if spare is not None and spare.alive:
            return spare  # its successor starts once this cold start is over (`replace`)
        self._keep_spare()  # none was ready: have one for the next cold start
        return None

    def replace(self) -> None:
        self._keep_spare()

    def _keep_spare(self) -> None:
        if self._spare is None and self._spawning is None and not self._closed:
            self._spawning = asyncio.get_running_loop().create_task(self._spawn_spare(), name="spare-replica")

    async def _spawn_spare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            env = {**host_environment(), "PYTHONUNBUFFERED": "1"}
            spare = await Spare.spawn(env, self.root)
            if self._closed:
                await spare.discard()
            else:
                self._spare = spare
        except Exception:
            log.exception("could not start a spare replica; cold starts will start their own")
        finally:
            self._spawning = None

    def _retire(self, pool: ReplicaPool) -> None:
        """Replace a pool: its calls in flight may finish (up to their timeout), then it stops,
        and its folder (unpacked code, log) goes: the next definition has a folder of its own."""

        async def retire() -> None:
            await pool.close(drain=pool.scaling.timeout)
            await asyncio.to_thread(shutil.rmtree, pool.launch.cwd, True)

        task = asyncio.get_running_loop().create_task(retire())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def scaling_of(self, spec: ServiceSpec) -> dict[str, Any]:
        scaling = self._scaling(spec)
        return {
            "min_scale": scaling.min_scale,
            "max_scale": scaling.max_scale,
            "concurrency": scaling.concurrency,
            "idle_timeout": scaling.idle_timeout,
        }

    def _scaling(self, spec: ServiceSpec) -> Scaling:
        sync = spec.synchronous
        concurrency = max(sync.concurrency, spec.batch.max_size if spec.batch else 1)
        return Scaling(
            min_scale=sync.min_scale,
            max_scale=sync.max_scale or os.cpu_count() or 1,
            concurrency=concurrency,
            idle_timeout=sync.idle_timeout,
            max_waiting=self.max_waiting,
            timeout=spec.timeout or self.default_timeout,
            start_timeout=self.start_timeout,
        )

    def _launch(self, record: ServiceRecord, fingerprint: str) -> Launch:
        spec = record.spec
        assert spec.handler is not None
        # A folder per pool: a retired pool's folder is removed once it drained, and the same
        # definition applied again meanwhile must not lose its own.
        folder = self.root / spec.name / f"{fingerprint[:16]}-{uuid.uuid4().hex[:8]}"
        args = ["--handler", spec.handler]
        if spec.init:
            args += ["--init", spec.init]
        if spec.code:
            code = folder / "code"
            if not code.is_dir():  # unpacked once per content, beside a half-written one never
                staging = folder / f"code.{os.getpid()}.tmp"
                shutil.rmtree(staging, ignore_errors=True)
                unpack_code(spec.code, staging)
                os.replace(staging, code)
            args += ["--code-dir", str(code)]
        if spec.batch:
            args += [
                "--batch-size",
                str(spec.batch.max_size),
                "--batch-wait-ms",
                f"{spec.batch.max_wait_ms:g}",
            ]
        folder.mkdir(parents=True, exist_ok=True)
        env = {**_service_env(record), "PYTHONUNBUFFERED": "1"}
        own = {**spec.environment.variables, **spec.environment.secrets}
        fresh = any(name.startswith(STARTUP_PREFIXES) and name != "PYTHONPATH" for name in own)
        container = None
        if self.containers is not None:
            # In the service's image: its own environment only (no host PATH or HOME), limits
            # enforced by the engine.
            own_env = {**own, "OSCAR_SERVICE_NAME": spec.name, "OSCAR_SERVICE_TOKEN": record.token}
            container = functools.partial(
                self.containers.replica_commands,
                image=spec.image,
                env=own_env,
                folder=folder,
                memory_bytes=spec.memory_limit,
                cpus=spec.cpu_cores,
                network=spec.network,
                pull_policy=spec.image_pull_policy,
                pull_secrets=tuple(spec.image_pull_secrets or ()),
                gpu=spec.enable_gpu,
            )
        return Launch(
            args=args,
            env=env,
            cwd=folder,
            memory_bytes=spec.memory_limit,
            log=folder / "replica.log",
            fresh_process=fresh or container is not None,
            container=container,
        )


def _service_env(record: ServiceRecord) -> dict[str, str]:
    """What a long-running process of the service sees on the host: a few host variables, the
    service's variables and secrets, its name and token."""
    spec = record.spec
    return {
        **host_environment(),
        **spec.environment.variables,
        **spec.environment.secrets,
        "OSCAR_SERVICE_NAME": spec.name,
        "OSCAR_SERVICE_TOKEN": record.token,
    }


def _fingerprint(record: ServiceRecord) -> str:
    """Whatever a running replica depends on: the definition (code included) and the token."""
    data = record.spec.model_dump(mode="json", exclude_none=True)
    data["token"] = record.token
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
