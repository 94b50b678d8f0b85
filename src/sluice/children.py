"""Long-lived child processes (replicas, containers' engine clients, exposed servers) started
without stalling the event loop.

uvloop starts a child with fork(): with the server's heap that blocked the event loop 20-25 ms
per child here, every call in flight waiting with it (a cold start, a spare replica, a warm
container, a `podman rm`). `subprocess.Popen` (vfork in CPython) in a worker thread takes about
a millisecond and blocks nothing; the exit is seen through a pidfd, or a waiting thread where
the kernel gives none.

`start_child` returns a `Child` with the parts of `asyncio.subprocess.Process` Sluice uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
Target = int | IO[Any] | None  # PIPE, DEVNULL, STDOUT, an open file, or None (inherit)


def pidfds_work() -> bool:
    """Whether this kernel (not only this Python) gives pidfds: Linux 5.3+, and no seccomp
    profile refusing them (older container runtimes do)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


PIDFDS = pidfds_work()


class Child:
    """A running child: its pipes as asyncio streams, its exit as an awaitable."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: asyncio.StreamWriter | None,
        stdout: asyncio.StreamReader | None,
    ) -> None:
        self._popen = popen
        self.stdin = stdin
        self.stdout = stdout
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._watch()

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the exit was seen (negative: the signal that ended it)."""
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        pidfd = -1
        if PIDFDS:
            with contextlib.suppress(OSError):  # out of descriptors, say: a thread waits instead
                pidfd = os.pidfd_open(self._popen.pid)
        if pidfd < 0:
            # A thread of its own for as long as the child lives: one of the loop's shared
            # executor would be taken from everything else for that long.
            def wait() -> None:
                code = self._popen.wait()
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                    loop.call_soon_threadsafe(self._settle, code)

            threading.Thread(target=wait, name=f"wait-{self._popen.pid}", daemon=True).start()
            return

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            code = self._popen.poll()  # reaps it; the pidfd said it has ended
            self._settle(code if code is not None else self._popen.wait())

        loop.add_reader(pidfd, exited)

    def _settle(self, code: int) -> None:
        if not self._exited.done():
            self._exited.set_result(code)


async def start_child(
    *argv: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    stdin: Target = DEVNULL,
    stdout: Target = DEVNULL,
    stderr: Target = None,
    pass_fds: Sequence[int] = (),
    start_new_session: bool = False,
) -> Child:
    """Start `argv` from a worker thread; raises OSError as `subprocess.Popen` does. A child
    whose start is cancelled or fails half-way is killed, never left running."""
    loop = asyncio.get_running_loop()
    popen_kwargs = {
        "env": env,
        "cwd": cwd,
        "stdin": stdin,
        "stdout": stdout,
        "stderr": stderr,
        "pass_fds": tuple(pass_fds),
        "start_new_session": start_new_session,
    }
    starting = loop.run_in_executor(None, functools.partial(subprocess.Popen, argv, **popen_kwargs))
    try:
        popen = await asyncio.shield(starting)
    except asyncio.CancelledError:
        starting.add_done_callback(lambda done: _discard_started(done, start_new_session))
        raise
    transports: list[asyncio.BaseTransport] = []
    writer = reader = None
    try:
        if popen.stdin is not None:
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), popen.stdin
            )
            transports.append(transport)
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
        if popen.stdout is not None:
            reader = asyncio.StreamReader(limit=2**16)
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), popen.stdout
            )
            transports.append(transport)
    except BaseException:
        for transport in transports:
            transport.close()
        _discard(popen, start_new_session)
        raise
    return Child(popen, writer, reader)


def _discard(popen: subprocess.Popen[bytes], own_session: bool) -> None:
    """Kill a child nobody will use (its whole session if it has one) and reap it in the background."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if own_session:
            os.killpg(popen.pid, signal.SIGKILL)
        else:
            popen.kill()
    threading.Thread(target=popen.wait, name=f"reap-{popen.pid}", daemon=True).start()


def _discard_started(starting: asyncio.Future[subprocess.Popen[bytes]], own_session: bool) -> None:
    if not starting.cancelled() and starting.exception() is None:
        _discard(starting.result(), own_session)
