"""One replica process seen from the server: start it, send it calls, notice when it dies.

The child gets one end of a socket pair; calls and answers travel as `wire` frames, several
in flight at once when the service's concurrency allows. A reader task matches answers to calls
by id; when the socket closes (the child exited or was killed), every call still waiting fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import resource
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.children import DEVNULL, PIPE, STDOUT, Child, start_child
from sluice.replicas import wire

STARTING, READY, STOPPING, DEAD = "starting", "ready", "stopping", "dead"
STOP_GRACE = 5.0


@dataclass(frozen=True)
class Call:
    body: bytes
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    protocol: str = ""  # "v2": a KServe V2 inference request, decoded into tensors in the replica
    model: str = ""


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


class ReplicaGone(Exception):
    """The replica died (crashed, was killed) before it answered."""


class HandlerFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Launch:
    """How to start a replica: the child's arguments, environment, folder and memory limit."""

    args: list[str]
    env: dict[str, str]
    cwd: Path
    memory_bytes: int | None
    log: Path  # the child's stdout and stderr (what the handler prints), appended
    # Variables read only when an interpreter starts (LD_*, PYTHON* flags): a spare, started
    # before, would not see them, so such a service always starts its own process.
    fresh_process: bool = False
    # In the service's image: given a container name and the child's options, the engine's
    # command lines to run it (talking over stdin/stdout) and to remove it, and temporary files
    # to delete once it started.
    container: Callable[[str, list[str]], ContainerCommands] | None = None


@dataclass(frozen=True)
class ContainerCommands:
    run: list[str]
    remove: list[str]
    env: dict[str, str]  # the engine client's own environment
    temporary: tuple[Path, ...] = ()


class ReplicaProcess:
    _ids = itertools.count(1)

    def __init__(self, launch: Launch, on_exit: Callable[[ReplicaProcess], None]) -> None:
        self.id = next(self._ids)
        self.launch = launch
        self.state = STARTING
        self.in_flight = 0  # reserved by the pool, including calls not yet written
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self.last_used = self.started_at
        self.exit_code: int | None = None
        self.error: str | None = None
        self._on_exit = on_exit
        self._pending: dict[int, asyncio.Future[Answer]] = {}
        self._call_ids = itertools.count(1)
        self._process: Child | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._remove: ContainerCommands | None = None  # a container to remove when it ends

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self, timeout: float, spare: Spare | None = None) -> None:
        """Start the child (or assign it a spare started ahead) and wait until its `init` returned.
        Raises ReplicaGone if it failed."""
        temporary: tuple[Path, ...] = ()
        if self.launch.container is not None:
            reader, temporary = await self._start_container()
        else:
            if spare is not None:
                self._process, ours = spare.process, spare.sock
                assignment = {"args": self.launch.args, "env": self.launch.env, "cwd": str(self.launch.cwd),
                              "log": str(self.launch.log)}  # fmt: skip
                ours.sendall(wire.encode(0, wire.ASSIGN, assignment))
            else:
                with self.launch.log.open("ab") as log:
                    self._process, ours = await _spawn(
                        self.launch.args, self.launch.env, self.launch.cwd, log
                    )
            if self.launch.memory_bytes:
                with contextlib.suppress(ProcessLookupError):
                    limit = self.launch.memory_bytes
                    resource.prlimit(self._process.pid, resource.RLIMIT_DATA, (limit, limit))
            reader, self._writer = await asyncio.open_connection(sock=ours)
        try:
            async with asyncio.timeout(timeout):
                _, kind, meta, _ = await _read_frame(reader)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            self.error = (
                "did not start within its timeout"
                if isinstance(exc, TimeoutError)
                else "exited while starting"
            )
            await self._reap()
            raise ReplicaGone(self.error) from None
        finally:
            for path in temporary:  # the engine has read them once the container started
                path.unlink(missing_ok=True)
        if kind != wire.READY:
            self.error = meta.get("error", "its init failed")
            await self._reap()
            raise ReplicaGone(self.error)
        self.state = READY
        self.ready_at = self.last_used = time.monotonic()
        self._reader_task = asyncio.create_task(self._read_answers(reader), name=f"replica-{self.id}")

    async def call(self, call: Call) -> Answer:
        """Send one call and wait for its answer (the caller bounds the wait)."""
        if self.state != READY or self._writer is None:
            raise ReplicaGone(self.error or "the replica is not running")
        call_id = next(self._call_ids)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        meta = {"content_type": call.content_type, "headers": call.headers, "params": call.params}
        if call.protocol:
            meta.update(protocol=call.protocol, model=call.model)
        self._writer.write(wire.encode(call_id, wire.CALL, meta, call.body))
        try:
            return await future
        finally:
            self._pending.pop(call_id, None)

    def kill(self) -> None:
        """Kill now (a call ran past its timeout): waiting calls fail, the reader notices the exit."""
        self.state = STOPPING
        if self._remove is not None:  # a container outlives its engine client: remove it
            asyncio.get_running_loop().create_task(self._remove_container())
        if self._process and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)

    async def _start_container(self) -> tuple[asyncio.StreamReader, tuple[Path, ...]]:
        assert self.launch.container is not None
        try:
            commands = self.launch.container(f"sluice-replica-{uuid.uuid4().hex[:12]}", self.launch.args)
        except Exception as exc:  # a missing registry login, an unwritable temporary file
            self.error = str(exc)
            raise ReplicaGone(self.error) from None
        self._remove = commands
        with self.launch.log.open("ab") as log:
            self._process = await start_child(
                *commands.run,
                env=commands.env,
                cwd=self.launch.cwd,
                stdin=PIPE,
                stdout=PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert self._process.stdout is not None and self._process.stdin is not None
        self._writer = self._process.stdin
        return self._process.stdout, commands.temporary

    async def _remove_container(self) -> None:
        commands, self._remove = self._remove, None
        if commands is None:
            return
        with contextlib.suppress(OSError):
            remover = await start_child(
                *commands.remove, env=commands.env,
                stdout=DEVNULL, stderr=DEVNULL,
            )  # fmt: skip
            await remover.wait()

    async def stop(self) -> None:
        """End its side of the socket: the child answers the calls it already read, sees the end
        and exits by itself; it is killed if it lingers past the grace period."""
        self.state = STOPPING
        if self._writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                if self._writer.can_write_eof():
                    self._writer.write_eof()
                else:
                    self._writer.close()
        if self._process is not None:
            try:
                async with asyncio.timeout(STOP_GRACE):
                    await self._process.wait()
            except TimeoutError:
                self.kill()
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    async def abort(self) -> None:
        """After a failed start: kill whatever was started and collect it."""
        self.state = DEAD
        if self._writer is not None:
            self._writer.close()
        if self._process is not None:
            if self._process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
            await self._process.wait()

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                call_id, kind, meta, body = await _read_frame(reader)
                future = self._pending.get(call_id)
                if future is None or future.done():
                    continue  # its caller gave up (timeout)
                if kind == wire.RESULT:
                    future.set_result(Answer(meta.get("status", 200), meta.get("content_type", ""), body))
                else:
                    future.set_exception(HandlerFailed(meta.get("status", 500), meta.get("error", "failed")))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            await self._reap()

    async def _reap(self) -> None:
        was_stopping = self.state == STOPPING
        self.state = DEAD
        if self._writer is not None:
            self._writer.close()
        if self._process is not None:
            if self._process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
            self.exit_code = await self._process.wait()
        await self._remove_container()
        if not was_stopping and self.ready_at is not None:
            self.error = f"the replica exited (code {self.exit_code}) while answering"
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ReplicaGone(self.error or "the replica stopped"))
        self._on_exit(self)


class Spare:
    """A replica process started before any service needed it: its interpreter is up and its
    imports done, so a cold start only pays for the service's own imports and `init`."""

    def __init__(self, process: Child, sock: socket.socket) -> None:
        self.process = process
        self.sock = sock

    @classmethod
    async def spawn(cls, env: dict[str, str], cwd: Path) -> Spare:
        return cls(*await _spawn([], env, cwd, DEVNULL))

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def discard(self) -> None:
        self.sock.close()  # it sees the end of its socket and exits
        try:
            async with asyncio.timeout(STOP_GRACE):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


async def _spawn(args: list[str], env: dict[str, str], cwd: Path, output: Any) -> tuple[Child, socket.socket]:
    ours, theirs = socket.socketpair()
    try:
        process = await start_child(
            sys.executable,
            "-m",
            "sluice.replicas.child",
            "--fd",
            str(theirs.fileno()),
            *args,
            env=env,
            cwd=cwd,
            pass_fds=(theirs.fileno(),),
            stdin=DEVNULL,
            stdout=output,
            stderr=STDOUT,
            start_new_session=True,  # a kill reaches whatever the handler started
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return process, ours


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, int, dict, bytes]:  # type: ignore[type-arg]
    header = await reader.readexactly(wire.HEADER.size)
    call_id, kind, meta_len, body_len = wire.HEADER.unpack(header)
    rest = await reader.readexactly(meta_len + body_len) if meta_len + body_len else b""
    meta = wire.decode_meta(rest[:meta_len]) if meta_len else {}
    return call_id, kind, meta, rest[meta_len:]
