"""Run invocations as host processes: `/bin/sh script.sh` with the service's limits where the OS has them.

Memory: `memory` becomes RLIMIT_DATA (`ulimit -d`), which counts the heap and private anonymous memory
but not shared libraries, so it tracks what a program really allocates. The shell sets it before
it reads the script (`sh -c 'ulimit -d N && . script'`): set from outside on the running process,
a busy server could be late, and a fast script would allocate before the limit. CPU: not limited per
process (the dispatcher bounds how many jobs run at once); the container executor limits it.

Each process is started with `posix_spawn` (vfork + exec) from the event loop, with the GIL
released while the child execs (`spawn.py`), and awaited through a pidfd the loop watches: no
worker thread, which took a fifth of the platform's CPU per job off and raised the jobs' rate
(asyncio's own subprocess support is several times slower still; a spawner thread was measured
too: waking it on busy cores delayed each start by 3-5 ms). Where pidfds are missing, a worker
thread runs `subprocess` instead. Output goes to a file in the job's folder
rather than a pipe, so a background child that keeps the pipe open cannot hang the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from stat import S_ISREG

from sluice.children import PIDFDS
from sluice.executors.base import LOG_FILE, Capabilities, Completed, Invocation
from sluice.executors.slots import Slots
from sluice.executors.spawn import spawn_in_new_session
from sluice.storage.files import open_for_rewrite

# Spawning from the event loop needs pidfds; elsewhere a worker thread waits for each script.
SPAWN_IN_LOOP = PIDFDS and hasattr(os, "posix_spawn")
# Only these variables of the server's own environment reach a process on the host: never the
# server's secrets.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "TZ",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "XDG_CACHE_HOME",
    "SLUICE_DEMO_MODEL",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)
# The server's locale reaches long-running processes (replicas, exposed services), not a job's
# script: loading a locale costs every program the script starts a few hundred microseconds
# (`cp` opens a dozen files for it), a sixth of a trivial job's CPU. A script runs in the C locale,
# as in an image that sets none, unless the server sets one for scripts (`script_locale`) or its
# service sets these in its variables.
LOCALE_ENV = ("LANG", "LC_ALL", "LC_CTYPE")


def host_environment(*, locale: bool = True) -> dict[str, str]:
    """What a process on the host inherits: a few of the server's variables (its locale too with
    `locale`), and its interpreter first on PATH, so scripts find the same `python` and packages
    as the server."""
    names = INHERITED_ENV + LOCALE_ENV if locale else INHERITED_ENV
    env = {name: os.environ[name] for name in names if name in os.environ}
    interpreter_bin = str(Path(sys.executable).parent)
    env["PATH"] = interpreter_bin + os.pathsep + env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


class ProcessExecutor:
    name = "process"
    capabilities = Capabilities(
        runs_images=False,
        limits_memory=True,
        notes=("runs on the host; the service's image is not used",),
    )

    def __init__(self, max_threads: int = 256, script_locale: str | None = None) -> None:
        """`script_locale`: LANG for scripts whose service sets none (default: the C locale)."""
        self._threads = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="sluice-proc")
        self._host_env = host_environment(locale=False)
        if script_locale:
            self._host_env["LANG"] = script_locale

    def describe(self) -> str:
        return "process (on the host, the image is not used)"

    async def start(self) -> None:
        """Nothing to prepare: scripts a killed server left are ended by the workspace pool."""

    async def stop(self) -> None:
        """Nothing is kept between jobs: a warm shell was measured slower than a direct spawn."""

    async def prepare(self, invocation: Invocation, timeout: float) -> bool:
        """Nothing to prepare: workspaces are reused and scripts written once already."""
        return False

    def forget(self, service: str) -> None:
        """Nothing is kept per service."""

    async def forget_workspace(self, workdir: Path) -> None:
        """Nothing outlives an invocation in a workspace."""

    async def run(self, invocation: Invocation, slots: Slots | None = None) -> Completed:
        argv = invocation.argv
        # The service's variables and the contract's may override the inherited ones (PATH too).
        env = {**self._host_env, **invocation.env}
        log_path = os.path.join(invocation.workdir, LOG_FILE)
        if SPAWN_IN_LOOP and argv[0] == "/bin/sh" and len(argv) == 2:
            exit_code, timed_out, output, duration = await _spawn_in_loop(
                argv[1], invocation, env, log_path, slots
            )
        else:
            invocation = dataclasses.replace(invocation, env=env)
            async with slots or contextlib.nullcontext():
                started = time.monotonic()
                exit_code, timed_out = await self._spawn_in_thread(argv, invocation, Path(log_path))
                duration = time.monotonic() - started
            output = read_capped(log_path, invocation.log_limit)
        if timed_out:
            output += f"\n[sluice] killed after the {invocation.timeout:g} s timeout\n"
        return Completed(
            exit_code=None if timed_out else exit_code,
            output=output,
            timed_out=timed_out,
            duration=duration,
        )

    async def _spawn_in_thread(
        self, argv: list[str], invocation: Invocation, log_path: Path
    ) -> tuple[int, bool]:
        spawned: list[subprocess.Popen[bytes]] = []  # filled by the thread, read on cancel
        running = asyncio.get_running_loop().run_in_executor(
            self._threads, _spawn_and_wait, argv, invocation, log_path, spawned
        )
        try:
            return await asyncio.shield(running)
        except BaseException:
            # Cancelled: the job was cancelled or the server is stopping. Kill, then let the
            # thread reap the process.
            if spawned:
                _kill_group(spawned[0].pid)
            with contextlib.suppress(Exception):
                await running
            raise


async def _spawn_in_loop(
    script: str, invocation: Invocation, env: dict[str, str], log_path: str, slots: Slots | None
) -> tuple[int, bool, str, float]:
    """`/bin/sh script` started with posix_spawn from the event loop and awaited through a pidfd:
    no worker thread, no thread hop (a fifth of the platform's CPU per job, measured). Returns
    its exit code, whether it timed out, its log and how long it ran.

    In its own session, so a kill reaches whatever the script started. Its log is read from the
    file it was given to write (whatever the script did to the log's name since): an empty log
    is seen without opening it again; else it is read through a read-only descriptor of its own.
    """
    log_fd = open_for_rewrite(log_path)
    try:
        os.ftruncate(log_fd, 0)
        run = _ScriptRun(_shell_argv(script, invocation), env, log_fd, slots)
        exit_code, timed_out = await run.wait(invocation.timeout)
        return exit_code, timed_out, _read_log(log_fd, invocation.log_limit), run.duration
    finally:
        os.close(log_fd)


def _read_log(write_fd: int, limit: int) -> str:
    if os.fstat(write_fd).st_size == 0:  # the common case: a script that printed nothing
        return ""
    # The same file, read-only (the script's own descriptor can only write), on Linux's /proc.
    read_fd = os.open(f"/proc/self/fd/{write_fd}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_capped_from(read_fd, limit)
    finally:
        os.close(read_fd)


class _ScriptRun:
    """One script from its start to its reaping. It starts when `slots` grant it a slot (maybe
    inside another script's end, see `Slots`) and gives the slot back the moment its own end is
    seen, before its job's task even resumes."""

    def __init__(self, argv: list[str], env: dict[str, str], log_fd: int, slots: Slots | None) -> None:
        self._argv = argv
        self._env = env
        self._log_fd = log_fd
        self._slots = slots
        self._loop = asyncio.get_running_loop()
        self.pid: int | None = None
        self._pidfd = -1
        self._exited = self._loop.create_future()
        self._started = 0.0
        self.duration = 0.0

    def _begin(self) -> None:
        pid = spawn_in_new_session("/bin/sh", self._argv, self._env, self._log_fd)
        pidfd = -1
        try:
            pidfd = os.pidfd_open(pid)
            self._loop.add_reader(pidfd, self._ended)
        except BaseException:  # out of descriptors, say: the script must not run on unwatched
            if pidfd >= 0:
                os.close(pidfd)
            _kill_group(pid)
            self._loop.run_in_executor(None, os.waitpid, pid, 0)
            raise
        self._started = time.monotonic()
        self.pid, self._pidfd = pid, pidfd

    def _ended(self) -> None:
        try:
            self._stop_watching()
        finally:
            if not self._exited.done():
                self._exited.set_result(None)

    def _stop_watching(self) -> None:
        """Once: stop watching the pidfd, end what the script left in the background (its group:
        never more groups than slots) and free the slot, so the next script may start now."""
        pidfd, self._pidfd = self._pidfd, -1
        if pidfd < 0:
            return
        self.duration = time.monotonic() - self._started
        try:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
        finally:
            if self.pid is not None:  # unreaped, so its group's number is still its own
                _kill_group(self.pid)
            if self._slots is not None:
                self._slots.release()

    async def wait(self, timeout: float) -> tuple[int, bool]:
        """Start (once a slot is free), wait for the end within `timeout`, reap: (exit code,
        timed out). Cancelled, the script is killed and, unless cancelled again, collected."""
        try:
            if self._slots is None:
                self._begin()
            else:
                await self._slots.start(self._begin)
        except BaseException:
            if self.pid is not None:  # cancelled just after its slot was granted: it started
                await self._collect(killed=True)
            raise
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._exited)
        except TimeoutError:
            timed_out = True  # killed below: a killed process ends at once
        except BaseException:  # cancelled: kill, collect, go on cancelling
            await self._collect(killed=True)
            raise
        status = await self._collect(killed=timed_out)
        return os.waitstatus_to_exitcode(status), timed_out

    async def _collect(self, *, killed: bool) -> int:
        """Reap the script (killed first if `killed`); its wait status. Cancelled before it is
        seen to end, the slot is freed anyway and the script reaped off the loop."""
        pid = self.pid
        assert pid is not None
        try:
            if killed:
                _kill_group(pid)
                await asyncio.shield(self._exited)
        finally:
            try:
                self._stop_watching()
            finally:
                reaped, status = os.waitpid(pid, os.WNOHANG)
                if not reaped:
                    self._loop.run_in_executor(None, os.waitpid, pid, 0)
        return status


def _shell_argv(script: str, invocation: Invocation) -> list[str]:
    """`/bin/sh script`, from the workspace (posix_spawn cannot change directory), with the
    memory limit set in the shell itself before it reads the script: no pre-exec hook (it would
    force a slow fork() instead of vfork()) and no second exec. The script runs sourced, with
    `$0` as usual and no arguments."""
    prelude = 'cd -- "$1" || exit 126; shift'
    if invocation.memory_bytes:
        prelude += f"; ulimit -d {max(1, invocation.memory_bytes // 1024)} || exit 126"
    return ["/bin/sh", "-c", prelude + '; . "$0"', script, str(invocation.workdir)]


def _spawn_and_wait(
    argv: list[str], invocation: Invocation, log_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> tuple[int, bool]:
    """Start the process and wait for it, in one worker thread (one hop from the event loop)."""
    if argv[0] == "/bin/sh" and len(argv) == 2:
        argv = _shell_argv(argv[1], invocation)
    with open(open_for_rewrite(log_path), "wb") as log:
        log.truncate(0)
        process = subprocess.Popen(
            argv,
            cwd=invocation.workdir,
            env=invocation.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a kill reaches the script's children
        )
    spawned.append(process)
    timed_out = False
    try:
        process.wait(invocation.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process.pid)
        process.wait()
    _kill_group(process.pid)  # children left running in the background end with the script
    return process.returncode, timed_out


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def read_capped(path: Path | str, limit: int) -> str:
    """The log's head and tail within `limit` bytes, saying how much was left out between."""
    try:  # never through a link: a contained script could point it at a host file
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # none, or not a file the job's output could be in
        return ""
    try:
        if not S_ISREG(os.fstat(fd).st_mode):
            return ""
        return read_capped_from(fd, limit)
    finally:
        os.close(fd)


def read_capped_from(fd: int, limit: int) -> str:
    """`read_capped` of an open regular file, read from its start whatever its offset."""
    size = os.fstat(fd).st_size
    if size == 0:
        return ""
    if size <= limit:
        return _read_at(fd, size, 0).decode(errors="replace")
    half = limit // 2
    head = _read_at(fd, half, 0)
    tail = _read_at(fd, half, size - half)
    left_out = size - len(head) - len(tail)
    return (
        head.decode(errors="replace")
        + f"\n[sluice] ... {left_out} bytes of log left out ...\n"
        + tail.decode(errors="replace")
    )


def _read_at(fd: int, length: int, offset: int) -> bytes:
    """Up to `length` bytes from `offset` (fewer only at the end of the file)."""
    chunks = []
    while length > 0:
        chunk = os.pread(fd, min(length, 1 << 20), offset)
        if not chunk:
            break
        chunks.append(chunk)
        length -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)
