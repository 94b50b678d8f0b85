"""Synchronous invocations (`POST /run/{svc}`): run a service's script once on the request body and
answer with what it produced, through the same runtime contract as jobs.

OSCAR's answer: one output file, base64-encoded; several, a zip of them, base64-encoded; none, the
script's output (stdout and stderr). Sluice's raw answer (the caller asked with `Accept` or
`?raw=true`): the same without base64, with a content type. Outputs also go to the service's
output paths, as OSCAR's supervisor does. No job is recorded: the caller holds the answer.

Each service runs at most `synchronous.max_scale` calls at once (0: as many as the machine has
cores); up to `max_waiting` more wait their turn, beyond that a call is refused at once (503).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import mimetypes
import os
import uuid
import zipfile
from dataclasses import dataclass

from sluice.db.services import ServiceRecord
from sluice.errors import InvocationFailed, InvocationTimeout, Overloaded
from sluice.executors.base import Executor
from sluice.runtime.invocation import InvocationInput, invoke
from sluice.runtime.workspace import WorkspacePool
from sluice.storage.registry import StorageRouter

log = logging.getLogger("sluice.sync")
FAILURE_LOG_TAIL = 4000  # characters of the script's output a failed call answers with


@dataclass(frozen=True)
class Reply:
    body: bytes
    content_type: str
    status: int = 200


class _Gate:
    """Bounds one service's concurrent calls and how many may wait for a turn."""

    def __init__(self, concurrency: int, max_waiting: int) -> None:
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._max_waiting = max_waiting
        self._waiting = 0

    async def __aenter__(self) -> None:
        if self._slots.locked():
            if self._waiting >= self._max_waiting:
                raise Overloaded(
                    f"service busy: {self.concurrency} calls running, {self._waiting} waiting (the most "
                    "allowed); retry later"
                )
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()

    async def __aexit__(self, *_: object) -> None:
        self._slots.release()


class SyncRunner:
    def __init__(
        self,
        *,
        storage: StorageRouter,
        executor: Executor,
        workspaces: WorkspacePool,
        default_timeout: float,
        log_limit: int,
        max_waiting: int,
    ) -> None:
        self.storage = storage
        self.executor = executor
        self.workspaces = workspaces
        self.default_timeout = default_timeout
        self.log_limit = log_limit
        self.max_waiting = max_waiting
        self._gates: dict[str, _Gate] = {}

    async def run(self, record: ServiceRecord, body: bytes, *, raw_input: bool, raw_output: bool) -> Reply:
        spec = record.spec
        trigger = InvocationInput(
            job_id=uuid.uuid4().hex, payload=body, raw_payload=raw_input, event=_event_of(body, raw_input)
        )
        async with self._gate(spec.name, spec.synchronous.max_scale):
            workspace = await self.workspaces.acquire(spec.name)
            try:
                result = await invoke(
                    trigger,
                    spec,
                    record.token,
                    storage=self.storage,
                    executor=self.executor,
                    workspace=workspace,
                    script=self.workspaces.script(spec.script),
                    default_timeout=self.default_timeout,
                    log_limit=self.log_limit,
                    capture_outputs=True,
                )
            finally:
                self.workspaces.release(workspace)
        done = result.completed
        if done.timed_out:
            limit = spec.timeout or self.default_timeout
            raise InvocationTimeout(f"service '{spec.name}' did not answer within its {limit:g} s timeout")
        if done.error:
            raise InvocationFailed(f"service '{spec.name}' could not run: {done.error}")
        if done.exit_code != 0:
            raise InvocationFailed(
                f"service '{spec.name}': script exited with code {done.exit_code}\n"
                + done.output[-FAILURE_LOG_TAIL:]
            )
        return _reply(result.files, done.output, raw_output)

    def _gate(self, service: str, max_scale: int) -> _Gate:
        concurrency = max_scale or os.cpu_count() or 1
        gate = self._gates.get(service)
        if gate is None or gate.concurrency != concurrency:  # new, or the service's scale changed
            gate = self._gates[service] = _Gate(concurrency, self.max_waiting)
        return gate


def _event_of(body: bytes, raw: bool) -> str | None:
    """$EVENT as for a job posted to /job: the body, when it is a JSON object."""
    if raw:
        return None
    try:
        return body.decode() if isinstance(json.loads(body), dict) else None
    except ValueError:
        return None


def _reply(files: dict[str, bytes], output: str, raw: bool) -> Reply:
    if not files:
        return Reply(output.encode(), "text/plain; charset=utf-8")
    if len(files) == 1:
        ((name, content),) = files.items()
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    else:
        content, content_type = _zip(files), "application/zip"
    if raw:
        return Reply(content, content_type)
    return Reply(base64.b64encode(content), "text/plain; charset=utf-8")


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()
