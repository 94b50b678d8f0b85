"""Warm containers for script services: a container kept running between invocations, so a call
pays for its script only, not for starting a container (7-8 ms a trivial job against 220-370 ms,
measured here).

A warm container's main process (PID 1 inside it) is a small shell loop. For each invocation
Sluice writes a job file in the workspace -- the OSCAR environment as `export` lines, then
`exec /bin/sh script` -- and sends its path on the container's stdin. The loop runs it in a fresh
shell, kills every other process left in the container (`kill -9 -1`, which reaches all but PID 1
and cannot race a fork), and answers the exit code on stdout.

A container serves one workspace and one set of container settings (image, limits, network,
script), so what it mounts is exactly what a fresh container for that invocation would. Between
invocations of the same service it keeps its own file system (a file a script leaves in /tmp is
still there next time, as in OSCAR's synchronous path, which reuses one Knative pod); no process
outlives its invocation, and a container is replaced after MAX_USES invocations or MAX_AGE seconds.
A timeout or a cancellation removes the container; the next invocation starts another. At most
`limit` idle ones are kept; the least recently used goes first, and any idle for `idle_seconds` is
removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from sluice.children import DEVNULL, PIPE, Child, start_child
from sluice.executors.base import LOG_FILE, Completed, Invocation
from sluice.executors.process import read_capped
from sluice.replicas.process import ContainerCommands

JOB_FILE = ".sluice-job.sh"
# PID 1 of a warm container: the secret first, then one job a line. The job's own stdin and stdout
# are never the control pipes.
SHELL_LOOP = (
    "IFS= read -r secret || exit 98; "
    'while IFS=" " read -r given job; do [ "$given" = "$secret" ] || exit 99; '
    '/bin/sh "$job" </dev/null >/dev/null 2>&1; code=$?; '
    'kill -9 -1 2>/dev/null; echo "$secret $code"; done'
)
MAX_USES = 1000  # invocations before a container is replaced: files left in it do not pile up
MAX_AGE = 3600.0  # seconds, likewise
# The job file's exit code when it cannot enter the workspace: 126 ("cannot execute"), as shells
# use it, rather than a code a script would choose.
NO_WORKSPACE = 126
JOB_OOM_SCORE_ADJ = 1000  # any process may raise its own; the loop (PID 1) keeps the default
ENGINE_FAILED = 125  # `podman run` / `docker run`: the engine failed, the container never ran
REMOVE_TIMEOUT = 60.0
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ContainerGone(Exception):
    """The container ended while it should have been waiting or running an invocation."""


def job_script(invocation: Invocation) -> str:
    """The job file: output to the job's log, the workspace as working directory, the environment
    (shell-quoted, so values may hold any character), then the invocation's command."""
    bad = [name for name in invocation.env if not ENV_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"not variable names: {bad}")  # the spec checks them; never trust a format
    log_path = invocation.workdir / LOG_FILE
    lines = [
        f"exec >{shlex.quote(str(log_path))} 2>&1",
        f"cd {shlex.quote(str(invocation.workdir))} || exit {NO_WORKSPACE}",
        # The job, not the loop, is what a memory limit's OOM killer takes, even the second
        # time round (the first victim still exiting under load): the container stays warm.
        # Where /proc refuses it, nothing shows in the job's log (the braces: redirections
        # apply left to right, so a plain `2>/dev/null` would come too late).
        f"{{ echo {JOB_OOM_SCORE_ADJ} >/proc/self/oom_score_adj; }} 2>/dev/null",
        *(f"export {name}={shlex.quote(value)}" for name, value in invocation.env.items()),
        "exec " + shlex.join(invocation.argv),
    ]
    return "\n".join(lines) + "\n"


def warm_key(invocation: Invocation) -> tuple[object, ...]:
    """What a container was started with: invocations that agree on it can share one."""
    return (
        invocation.env.get("OSCAR_SERVICE_NAME"),  # one service's state never meets another's
        invocation.workdir,
        invocation.image,
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
        self.started_at = self.last_used = time.monotonic()
        self.uses = 0
        self._secret = secrets.token_hex(16)
        self._process: Child | None = None

    async def start(self) -> None:
        with self.engine_log.open("wb") as engine_log:
            self._process = await start_child(
                *self.commands.run,
                env=self.commands.env,
                cwd=self.folder,  # conmon drops files in its working directory
                stdin=PIPE,
                stdout=PIPE,
                stderr=engine_log,
            )
        if self._process.stdin is not None:
            self._process.stdin.write(f"{self._secret}\n".encode())  # before any job can listen

    @property
    def worn(self) -> bool:
        """Used enough to be replaced (whatever jobs left in its file system goes with it)."""
        return self.uses >= MAX_USES or time.monotonic() - self.started_at > MAX_AGE

    async def run(self, job_file: Path, timeout: float) -> int | None:
        """The job's exit code, or None when `timeout` passed first. Raises ContainerGone."""
        process = self._process
        if process is None or process.stdin is None or process.stdout is None:
            raise ContainerGone("the container was not started")
        if "\n" in str(job_file):
            raise ContainerGone(f"a line break in the workspace path {job_file!r}")
        self.uses += 1
        try:
            process.stdin.write(f"{self._secret} {job_file}\n".encode())
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise ContainerGone(await self.ending()) from None
        try:
            async with asyncio.timeout(timeout):
                line = await process.stdout.readline()
        except TimeoutError:
            return None
        given, _, code = line.decode(errors="replace").strip().partition(" ")
        if given != self._secret or not code.lstrip("-").isdigit():
            # The end of the stream, or a line the loop did not write (a job forging an answer).
            raise ContainerGone(await self.ending())
        return int(code)

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
            remover = await start_child(
                *self.commands.remove,
                env=self.commands.env,
                stdout=DEVNULL,
                stderr=DEVNULL,
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
        self._containers: dict[tuple[object, ...], WarmContainer] = {}  # idle ones, oldest use first
        self._forgotten: dict[str, float] = {}  # service -> when it was deleted or changed
        self._reaper: asyncio.Task[None] | None = None
        self._removals: set[asyncio.Task[None]] = set()
        self.started = 0  # containers started: a warm call starts none

    async def run(self, invocation: Invocation) -> Completed:
        started = time.monotonic()
        key = warm_key(invocation)
        container = self._containers.pop(key, None)
        if container is not None and container.exited:
            self._remove_later(container)
            container = None
        if container is None:
            container = await self._start(invocation)
        job_file = invocation.workdir / JOB_FILE
        try:
            script = job_script(invocation)
        except ValueError as exc:
            self._keep(key, container)
            return Completed(None, "", error=str(exc))
        descriptor = os.open(job_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(script)
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
        self._keep(key, container)
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
            self._remove_later(self._containers.pop(key))
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
        container.uses = 0  # the readiness check was no job
        self._keep(key, container)
        return True

    def _keep(self, key: tuple[object, ...], container: WarmContainer) -> None:
        """Back among the idle ones, unless its service changed meanwhile or it is worn; at most
        `limit` are kept, the least recently used go first."""
        service = str(key[0])
        if container.worn or container.started_at <= self._forgotten.get(service, float("-inf")):
            self._remove_later(container)
            return
        container.last_used = time.monotonic()
        self._containers[key] = container  # most recently used last
        while len(self._containers) > self.limit:
            self._remove_later(self._containers.pop(next(iter(self._containers))))

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

    def _remove_later(self, container: WarmContainer) -> None:
        """Remove in the background: no call waits for `podman rm`, and a cancelled call cannot
        leave the removal half done."""
        task = asyncio.create_task(container.remove())
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.idle_seconds / 4))
            now = time.monotonic()
            for key in [k for k, c in self._containers.items() if now - c.last_used > self.idle_seconds]:
                self._remove_later(self._containers.pop(key))

    @property
    def idle(self) -> int:
        return len(self._containers)

    def forget(self, service: str) -> None:
        """A service was deleted or changed: its idle containers go now, one still running an
        invocation when that ends (a new service of the same name never gets them)."""
        self._forgotten[service] = time.monotonic()
        for key in [key for key in self._containers if key[0] == service]:
            self._remove_later(self._containers.pop(key))

    async def forget_workspace(self, workdir: Path) -> None:
        """A workspace goes to another service: no container of the last one may keep it mounted
        (removed before the new service's input is staged there)."""
        gone = [self._containers.pop(key) for key in list(self._containers) if key[1] == workdir]
        await asyncio.gather(*(c.remove() for c in gone), return_exceptions=True)

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        containers = list(self._containers.values())
        self._containers.clear()
        await asyncio.gather(*(c.remove() for c in containers), *self._removals, return_exceptions=True)
