"""Warm containers for script services: a container kept running between invocations, so a call
pays for its script only, not for starting a container (~4 ms against ~270 ms measured here).

A warm container's main process (PID 1 inside it) is a small shell loop. For each invocation
Sluice writes a job file in the workspace -- the OSCAR environment as `export` lines, then
`exec /bin/sh script` -- and sends its path on the container's stdin. The loop runs it in a fresh
shell, kills every other process left in the container (`kill -9 -1`, which reaches all but PID 1
and cannot race a fork), and answers the exit code on stdout.

A container serves one workspace and one set of container settings (image, limits, network,
script), so what it mounts is exactly what a fresh container for that invocation would. Between
invocations of the same service it keeps its own file system (a file a script leaves in /tmp is
still there next time, as in OSCAR's synchronous path, which reuses one Knative pod); no process
outlives its invocation. A timeout or a cancellation removes the container; the next invocation
starts another. At most `limit` are kept; the least recently used idle one goes first, and any
idle for `idle_seconds` is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from sluice.executors.base import Completed, Invocation
from sluice.executors.process import LOG_FILE, read_capped
from sluice.replicas.process import ContainerCommands

log = logging.getLogger("sluice.containers")

JOB_FILE = ".sluice-job.sh"
# PID 1 of a warm container. The job's own stdin and stdout are never the control pipe.
SHELL_LOOP = (
    'while IFS= read -r job; do /bin/sh "$job" </dev/null >/dev/null 2>&1; code=$?; '
    'kill -9 -1 2>/dev/null; echo "$code"; done'
)
# A shell reports "could not cd into the workspace" as 126 (found but not runnable), not as
# anything a script could mean.
NO_WORKSPACE = 126
ENGINE_FAILED = 125  # `podman run` / `docker run`: the engine failed, the container never ran
REMOVE_TIMEOUT = 60.0


class ContainerGone(Exception):
    """The container ended while it should have been waiting or running an invocation."""


def job_script(invocation: Invocation) -> str:
    """The job file: output to the job's log, the workspace as working directory, the environment
    (shell-quoted, so values may hold any character), then the invocation's command."""
    log_path = invocation.workdir / LOG_FILE
    lines = [
        f"exec >{shlex.quote(str(log_path))} 2>&1",
        f"cd {shlex.quote(str(invocation.workdir))} || exit {NO_WORKSPACE}",
        *(f"export {name}={shlex.quote(value)}" for name, value in invocation.env.items()),
        "exec " + shlex.join(invocation.argv),
    ]
    return "\n".join(lines) + "\n"


def warm_key(invocation: Invocation) -> tuple[object, ...]:
    """What a container was started with: invocations that agree on it can share one."""
    return (
        invocation.env.get("OSCAR_SERVICE_NAME"),  # one service's state never meets another's
        invocation.image,
        invocation.workdir,
        invocation.read_only_paths,
        invocation.cpus,
        invocation.memory_bytes,
        invocation.network,
        invocation.gpu,
        invocation.pull_policy,
        invocation.pull_secrets,
    )


class WarmContainer:
    def __init__(self, name: str, engine: str, commands: ContainerCommands, folder: Path) -> None:
        self.name = name
        self.engine = engine
        self.commands = commands
        self.engine_log = folder / f"{name}.log"  # the engine client's own messages
        self.folder = folder
        self.last_used = time.monotonic()
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.engine_log.open("wb") as engine_log:
            self._process = await asyncio.create_subprocess_exec(
                *self.commands.run,
                env=self.commands.env,
                cwd=self.folder,  # conmon drops files in its working directory
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=engine_log,
            )

    async def run(self, job_file: Path, timeout: float) -> int | None:
        """The job's exit code, or None when `timeout` passed first. Raises ContainerGone."""
        process = self._process
        if process is None or process.stdin is None or process.stdout is None:
            raise ContainerGone("the container was not started")
        try:
            process.stdin.write(f"{job_file}\n".encode())
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise ContainerGone(await self.ending()) from None
        try:
            async with asyncio.timeout(timeout):
                line = await process.stdout.readline()
        except TimeoutError:
            return None
        try:
            return int(line)
        except ValueError:  # the end of the stream, or something that is not the loop's answer
            raise ContainerGone(await self.ending()) from None

    async def ending(self) -> str:
        """Why the container is gone: the engine's last error line, if it printed one."""
        if self._process is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._process.wait()
        text = self.engine_log.read_text(errors="replace") if self.engine_log.exists() else ""
        errors = [line.removeprefix("Error: ") for line in text.splitlines() if line.startswith("Error")]
        code = self._process.returncode if self._process else None
        if code == ENGINE_FAILED:
            return f"{self.engine} could not run the container: {errors[-1] if errors else 'no message'}"
        return f"the container ended during the invocation ({errors[-1] if errors else f'exit code {code}'})"

    @property
    def exited(self) -> bool:
        return self._process is None or self._process.returncode is not None

    async def remove(self) -> None:
        """Kill and remove the container, collect its engine client, delete temporary files."""
        with contextlib.suppress(OSError):
            remover = await asyncio.create_subprocess_exec(
                *self.commands.remove,
                env=self.commands.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REMOVE_TIMEOUT):
                    await remover.wait()
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
        for path in (*self.commands.temporary, self.engine_log):
            path.unlink(missing_ok=True)


class WarmContainers:
    """The warm containers of one executor. `commands(invocation, name)` builds the engine
    command line of a warm container for an invocation (it may raise to refuse it)."""

    def __init__(
        self,
        commands: Callable[[Invocation, str], ContainerCommands],
        engine: str,
        folder: Path,
        *,
        limit: int,
        idle_seconds: float,
    ) -> None:
        self._commands = commands
        self.engine = engine
        self.folder = folder
        self.limit = limit
        self.idle_seconds = idle_seconds
        self._containers: dict[tuple[object, ...], WarmContainer] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._removals: set[asyncio.Task[None]] = set()
        self.started = 0  # containers started: a warm call starts none

    async def run(self, invocation: Invocation) -> Completed:
        started = time.monotonic()
        key = warm_key(invocation)
        container = self._containers.pop(key, None)
        if container is not None and container.exited:
            await container.remove()
            container = None
        if container is None:
            container = await self._start(invocation)
        job_file = invocation.workdir / JOB_FILE
        descriptor = os.open(job_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(job_script(invocation))
        try:
            exit_code = await container.run(job_file, invocation.timeout)
        except ContainerGone as exc:
            await container.remove()
            output = read_capped(invocation.workdir / LOG_FILE, invocation.log_limit)
            return Completed(None, output, error=str(exc), duration=time.monotonic() - started)
        except BaseException:  # cancelled: the job was cancelled or the server is stopping
            await asyncio.shield(container.remove())
            raise
        finally:
            job_file.unlink(missing_ok=True)
        output = read_capped(invocation.workdir / LOG_FILE, invocation.log_limit)
        if exit_code is None:
            await container.remove()
            output += f"\n[sluice] container removed after the {invocation.timeout:g} s timeout\n"
            return Completed(None, output, timed_out=True, duration=time.monotonic() - started)
        container.last_used = time.monotonic()
        self._containers[key] = container  # most recently used last
        await self._trim()
        return Completed(exit_code=exit_code, output=output, duration=time.monotonic() - started)

    async def prepare(self, invocation: Invocation, timeout: float) -> bool:
        """Have a container ready, ahead of the first call, for invocations like this one (its
        environment does not matter); True if one was started. Raises ContainerGone if it could
        not start (a missing image, say) or did not answer within `timeout`."""
        key = warm_key(invocation)
        container = self._containers.get(key)
        if container is not None and not container.exited:
            container.last_used = time.monotonic()  # kept: it is wanted
            return False
        if container is not None:
            await self._containers.pop(key).remove()
        container = await self._start(invocation)
        job_file = invocation.workdir / JOB_FILE
        job_file.write_text("exit 0\n")
        try:
            if await container.run(job_file, timeout) != 0:
                raise ContainerGone(f"the container did not answer within {timeout:g} s")
        except BaseException:
            await asyncio.shield(container.remove())
            raise
        finally:
            job_file.unlink(missing_ok=True)
        self._containers[key] = container
        await self._trim()
        return True

    async def _start(self, invocation: Invocation) -> WarmContainer:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"sluice-warm-{os.urandom(8).hex()}"
        container = WarmContainer(name, self.engine, self._commands(invocation, name), self.folder)
        try:
            await container.start()
        except BaseException:
            await asyncio.shield(container.remove())
            raise
        self.started += 1
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_idle(), name="sluice-warm-reaper")
        return container

    async def _trim(self) -> None:
        """Keep at most `limit` idle containers: the least recently used go first."""
        while len(self._containers) > self.limit:
            key = next(iter(self._containers))
            await self._containers.pop(key).remove()

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.idle_seconds / 4))
            now = time.monotonic()
            idle = [key for key, c in self._containers.items() if now - c.last_used > self.idle_seconds]
            for key in idle:
                container = self._containers.pop(key, None)
                if container is not None:
                    await container.remove()

    @property
    def idle(self) -> int:
        return len(self._containers)

    def forget(self, service: str) -> None:
        """Remove a deleted or updated service's idle containers, in the background (their
        settings are stale; one still running an invocation is removed with its next timeout
        or when the server stops, and never reused: its key names the old script)."""
        for key in [key for key in self._containers if key[0] == service]:
            task = asyncio.create_task(self._containers.pop(key).remove())
            self._removals.add(task)
            task.add_done_callback(self._removals.discard)

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        containers = list(self._containers.values())
        self._containers.clear()
        await asyncio.gather(*(c.remove() for c in containers), *self._removals, return_exceptions=True)
