"""Child processes started from a worker thread and awaited through pidfds (sluice.children),
on uvloop as the server runs them: real processes, real pipes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from sluice import children
from sluice.children import DEVNULL, PIPE, STDOUT, start_child


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return uvloop.run(scenario())


@pytest.fixture(params=["pidfd", "thread"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of seeing an exit: a pidfd, and the waiting thread used where the kernel has
    no pidfds (which cannot be produced here for real)."""
    if request.param == "thread":
        monkeypatch.setattr(children, "PIDFDS", False)
    return str(request.param)


def test_lines_go_through_the_pipes_and_the_exit_code_comes_back(way: str) -> None:
    async def scenario() -> tuple[list[bytes], int, int | None]:
        child = await start_child(
            "sh", "-c", 'while read -r line; do echo "got $line"; done; exit 3', stdin=PIPE, stdout=PIPE
        )
        assert child.stdin is not None and child.stdout is not None
        lines = []
        for word in (b"one", b"two"):
            child.stdin.write(word + b"\n")
            await child.stdin.drain()
            lines.append(await child.stdout.readline())
        child.stdin.write_eof()
        code = await child.wait()
        return lines, code, child.returncode

    lines, code, returncode = run(scenario)
    assert lines == [b"got one\n", b"got two\n"]
    assert code == returncode == 3


def test_a_killed_child_reports_the_signal_to_every_waiter(way: str) -> None:
    async def scenario() -> list[int]:
        child = await start_child("sleep", "30")
        assert child.returncode is None
        waiters = [asyncio.ensure_future(child.wait()) for _ in range(2)]
        child.kill()
        return [*await asyncio.gather(*waiters), await child.wait()]

    assert run(scenario) == [-signal.SIGKILL] * 3


def test_output_to_a_file_and_the_working_folder_environment_and_session(tmp_path: Path, way: str) -> None:
    log = tmp_path / "child.log"

    async def scenario() -> tuple[int, int]:
        with log.open("wb") as output:
            child = await start_child(
                "sh", "-c", 'pwd; echo "$GREETING"; echo oops >&2; ps -o sid= -p $$ | tr -d " "',
                env={"PATH": os.environ["PATH"], "GREETING": "hello"},
                cwd=tmp_path, stdout=output, stderr=STDOUT, start_new_session=True,
            )  # fmt: skip
        code = await child.wait()
        assert child.pid > 0
        return code, child.pid

    code, pid = run(scenario)
    assert code == 0
    folder, greeting, oops, session = log.read_text().splitlines()
    assert (folder, greeting, oops) == (str(tmp_path), "hello", "oops")
    assert int(session) == pid  # its own session: a kill of the group reaches what it started


def test_a_passed_descriptor_reaches_the_child(way: str) -> None:
    async def scenario() -> bytes:
        ours, theirs = os.pipe()
        try:
            write = f"import os; os.write({theirs}, b'through')"
            child = await start_child(sys.executable, "-c", write, pass_fds=(theirs,), stdout=DEVNULL)
            os.close(theirs)
            assert await child.wait() == 0
            return os.read(ours, 100)
        finally:
            os.close(ours)

    assert run(scenario) == b"through"


def test_a_missing_program_raises_as_popen_does() -> None:
    async def scenario() -> None:
        await start_child("/no/such/program")

    with pytest.raises(FileNotFoundError):
        run(scenario)


def test_a_start_cancelled_half_way_leaves_no_child_running() -> None:
    token = f"sluice-test-{uuid.uuid4().hex}"

    def running() -> list[str]:
        found = []
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if proc.name.isdigit() and token.encode() in (proc / "cmdline").read_bytes():
                    found.append(proc.name)
        return found

    async def scenario() -> None:
        sleeper = "import sys, time; time.sleep(30)"
        starting = asyncio.ensure_future(
            start_child(sys.executable, "-c", sleeper, token, start_new_session=True)
        )
        await asyncio.sleep(0)  # it now waits for the worker thread's Popen
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        deadline = time.monotonic() + 10
        while running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    run(scenario)
    assert running() == [], "the child of a cancelled start is still running"
