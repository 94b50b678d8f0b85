"""Warm containers started ahead for script services with `synchronous.min_scale`.

OSCAR keeps a synchronous service's `min_scale` pods running. With the container executor's warm
containers, Sluice starts that many containers of a script service before its first call, each
bound to a workspace the service will be handed first (workspaces remember the service they last
served), and keeps them: every `interval` seconds each is checked and touched, so the idle timer
never removes it, and one that went (a timeout, a crash, the idle limit) is started again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sluice.db.services import ServiceRecord
from sluice.engine.catalog import ServiceCatalog
from sluice.errors import SluiceError
from sluice.executors.base import Executor
from sluice.runtime.invocation import script_invocation
from sluice.runtime.workspace import WorkspacePool

log = logging.getLogger("sluice.prewarm")


class ScriptPrewarmer:
    def __init__(
        self,
        *,
        executor: Executor,
        workspaces: WorkspacePool,
        catalog: ServiceCatalog,
        default_timeout: float,
        log_limit: int,
        start_timeout: float,
        interval: float,
        is_stopped: Callable[[str], bool],
    ) -> None:
        self.executor = executor
        self.workspaces = workspaces
        self.catalog = catalog
        self.default_timeout = default_timeout
        self.log_limit = log_limit
        self.start_timeout = start_timeout
        self.interval = interval
        self.is_stopped = is_stopped  # a service stopped through the deployment API wants none
        self._loop_task: asyncio.Task[None] | None = None
        self._preparing: dict[str, asyncio.Task[None]] = {}  # one at a time per service

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._keep(), name="sluice-prewarm")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._preparing.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def ensure(self, record: ServiceRecord) -> None:
        """Start the service's `min_scale` containers in the background, if it wants any."""
        name = record.spec.name
        if not _wants_containers(record) or name in self._preparing or self.is_stopped(name):
            return
        task = asyncio.create_task(self._prepare(record), name=f"prewarm-{record.spec.name}")
        self._preparing[record.spec.name] = task
        task.add_done_callback(lambda _: self._preparing.pop(record.spec.name, None))

    async def _prepare(self, record: ServiceRecord) -> None:
        spec = record.spec
        script = self.workspaces.script(spec.script)
        held = [await self.workspaces.acquire(spec.name) for _ in range(spec.synchronous.min_scale)]
        try:
            for workspace in held:
                invocation = script_invocation(
                    spec,
                    script,
                    workspace,
                    {"OSCAR_SERVICE_NAME": spec.name},
                    self.default_timeout,
                    self.log_limit,
                )
                if await self.executor.prepare(invocation, self.start_timeout):
                    log.info("started a warm container for %s ahead of its calls", spec.name)
        except SluiceError as exc:  # the next round tries again; calls report the error themselves
            log.warning("could not start a warm container for %s: %s", spec.name, exc.message)
        finally:
            for workspace in held:
                self.workspaces.release(workspace)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                for record in await self.catalog.all():
                    self.ensure(record)
            except Exception:
                log.exception("checking warm containers failed; trying again later")


def _wants_containers(record: ServiceRecord) -> bool:
    spec = record.spec
    return bool(spec.synchronous.min_scale and spec.script and not spec.handler and not spec.expose)
