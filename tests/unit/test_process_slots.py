"""The process executor under execution slots: real /bin/sh scripts, at most as many as slots,
each slot freed however its script ended (done, timed out, cancelled, never started)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sluice.executors.base import Completed, Invocation
from sluice.executors.process import ProcessExecutor
from sluice.executors.slots import Slots


def invocation(tmp_path: Path, name: str, script: str, timeout: float = 30, **env: str) -> Invocation:
    workdir = tmp_path / name
    workdir.mkdir()
    script_path = workdir / "script.sh"
    script_path.write_text(script)
    return Invocation(
        argv=["/bin/sh", str(script_path)],
        env={"NAME": name, "TRACE": str(tmp_path / "trace"), **env},
        workdir=workdir,
        timeout=timeout,
        memory_bytes=None,
        cpus=1.0,
    )


TRACED = 'echo "start $NAME" >> "$TRACE"\nsleep 0.2\necho "end $NAME" >> "$TRACE"\n'


def children() -> set[int]:
    """This process's children, reaped or not (a zombie is listed until it is reaped), other than
    those it had before the test (servers the test session started)."""
    return _children() - _BEFORE


def _children() -> set[int]:
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        found |= {int(pid) for pid in (task / "children").read_text().split()}
    return found


_BEFORE: set[int] = set()


@pytest.fixture(autouse=True)
def _children_before() -> None:
    _BEFORE.clear()
    _BEFORE.update(_children())


def trace(tmp_path: Path) -> list[str]:
    path = tmp_path / "trace"
    return path.read_text().splitlines() if path.exists() else []


def test_no_more_scripts_run_at_once_than_slots(tmp_path: Path) -> None:
    async def scenario() -> list[Completed]:
        executor, slots = ProcessExecutor(), Slots(1)
        runs = [executor.run(invocation(tmp_path, f"job{i}", TRACED), slots) for i in range(3)]
        done = await asyncio.gather(*runs)
        assert slots.free == 1
        return done

    done = asyncio.run(scenario())

    assert [d.exit_code for d in done] == [0, 0, 0]
    assert trace(tmp_path) == ["start job0", "end job0", "start job1", "end job1", "start job2", "end job2"]
    # The third waited for the other two: its duration counts from its start, not its wait.
    assert done[2].duration < done[0].duration + done[1].duration


def test_a_run_cancelled_while_waiting_for_a_slot_never_starts(tmp_path: Path) -> None:
    async def scenario() -> None:
        executor, slots = ProcessExecutor(), Slots(1)
        first = asyncio.create_task(executor.run(invocation(tmp_path, "first", TRACED), slots))
        waiting = asyncio.create_task(executor.run(invocation(tmp_path, "waiting", TRACED), slots))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (await first).exit_code == 0
        assert slots.free == 1

    asyncio.run(scenario())

    assert trace(tmp_path) == ["start first", "end first"]


def test_cancelling_a_running_script_kills_it_and_frees_its_slot(tmp_path: Path) -> None:
    async def scenario() -> Completed:
        executor, slots = ProcessExecutor(), Slots(1)
        stuck = 'echo "start $NAME" >> "$TRACE"\nsleep 30\necho "end $NAME" >> "$TRACE"\n'
        running = asyncio.create_task(executor.run(invocation(tmp_path, "stuck", stuck), slots))
        following = asyncio.create_task(executor.run(invocation(tmp_path, "following", TRACED), slots))
        while trace(tmp_path) != ["start stuck"]:
            await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        done = await asyncio.wait_for(following, 10)
        assert slots.free == 1
        return done

    done = asyncio.run(scenario())

    assert done.exit_code == 0
    assert trace(tmp_path) == ["start stuck", "start following", "end following"]


def test_a_timed_out_script_frees_its_slot(tmp_path: Path) -> None:
    async def scenario() -> list[Completed]:
        executor, slots = ProcessExecutor(), Slots(1)
        slow = invocation(tmp_path, "slow", 'echo "start $NAME" >> "$TRACE"\nsleep 30\n', timeout=0.3)
        return await asyncio.gather(
            executor.run(slow, slots), executor.run(invocation(tmp_path, "next", TRACED), slots)
        )

    slow, following = asyncio.run(scenario())

    assert slow.timed_out and slow.exit_code is None
    assert following.exit_code == 0
    assert trace(tmp_path) == ["start slow", "start next", "end next"]


def test_a_script_that_cannot_start_passes_its_slot_to_the_next(tmp_path: Path) -> None:
    async def scenario() -> tuple[BaseException | Completed, ...]:
        executor, slots = ProcessExecutor(), Slots(1)
        # A NUL byte cannot be passed to a program: the start itself fails, in the slot's hand-over.
        broken = invocation(tmp_path, "broken", TRACED, BAD="a\0b")
        results = await asyncio.gather(
            executor.run(invocation(tmp_path, "first", TRACED), slots),
            executor.run(broken, slots),
            executor.run(invocation(tmp_path, "last", TRACED), slots),
            return_exceptions=True,
        )
        assert slots.free == 1
        return tuple(results)

    first, broken, last = asyncio.run(scenario())

    assert isinstance(broken, ValueError) and "null byte" in str(broken)
    assert isinstance(first, Completed) and first.exit_code == 0
    assert isinstance(last, Completed) and last.exit_code == 0
    assert trace(tmp_path) == ["start first", "end first", "start last", "end last"]


@pytest.mark.parametrize("cancels", [1, 2])
def test_a_run_cancelled_just_as_its_slot_is_granted_is_killed_and_reaped(
    tmp_path: Path, cancels: int
) -> None:
    """The slot's release starts the script at once, before the waiting task resumes; a cancel
    arriving in between must still end the script, reap it and give the slot back."""

    async def scenario() -> None:
        executor, slots = ProcessExecutor(), Slots(1)
        await slots.acquire()
        run = asyncio.create_task(executor.run(invocation(tmp_path, "late", "sleep 30\n"), slots))
        await asyncio.sleep(0.05)  # queued for the slot
        slots.release()  # starts the script here, inside this call
        assert children(), "the script started inside release"
        for _ in range(cancels):
            run.cancel()
            await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await run
        deadline = asyncio.get_running_loop().time() + 10
        while children() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)  # a second cancel leaves the reaping to a thread
        assert children() == set()
        assert slots.free == 1

    asyncio.run(scenario())


def test_the_slot_is_free_before_the_ended_scripts_task_resumes(tmp_path: Path) -> None:
    """What the slots are for: the slot is given back in the callback that sees the script end,
    so the next script can start there, not once the finished job's task has run again."""

    async def scenario() -> list[bool]:
        executor, slots = ProcessExecutor(), Slots(1)
        run = asyncio.create_task(executor.run(invocation(tmp_path, "quick", "exit 0\n"), slots))
        seen: list[bool] = []  # at each loop pass with the slot free: was the run's task done?
        while not run.done():
            await asyncio.sleep(0)
            if slots.free:
                seen.append(run.done())
        return seen

    seen = asyncio.run(scenario())

    assert seen and seen[0] is False, "the slot came back only with the task that held it"


def test_a_start_that_cannot_be_watched_passes_its_slot_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop refusing to watch one more descriptor (epoll full: cannot be caused here
    without changing the machine's limits, hence the stand-in): the script is killed and
    reaped, the error raised, and the slot goes to the next job."""

    async def scenario() -> tuple[BaseException | Completed, ...]:
        executor, slots = ProcessExecutor(), Slots(1)
        loop = asyncio.get_running_loop()
        real_add_reader = loop.add_reader
        refused: list[int] = []

        def add_reader_refusing_once(fd: int, callback: object, *args: object) -> None:
            if not refused:
                refused.append(fd)
                raise OSError(28, "No space left on device")
            real_add_reader(fd, callback, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(loop, "add_reader", add_reader_refusing_once)
        results = await asyncio.gather(
            executor.run(invocation(tmp_path, "refused", "sleep 30\n"), slots),
            executor.run(invocation(tmp_path, "next", TRACED), slots),
            return_exceptions=True,
        )
        deadline = loop.time() + 10
        while children() and loop.time() < deadline:
            await asyncio.sleep(0.01)  # the refused script is reaped by a thread
        assert children() == set() and slots.free == 1
        return tuple(results)

    refused, following = asyncio.run(asyncio.wait_for(scenario(), 20))

    assert isinstance(refused, OSError) and refused.errno == 28
    assert isinstance(following, Completed) and following.exit_code == 0
    assert trace(tmp_path) == ["start next", "end next"]


def test_what_a_script_left_running_is_ended_before_the_next_script_starts(tmp_path: Path) -> None:
    """No more process groups than slots: the background process of the first script is dead,
    or at least killed (SIGKILL pending), when the second script looks at it."""
    pid_file = tmp_path / "background.pid"
    status_copy = tmp_path / "status"

    async def scenario() -> None:
        executor, slots = ProcessExecutor(), Slots(1)
        leaver = 'sleep 30 &\necho $! > "$PID_FILE"\n'
        looker = 'cat "/proc/$(cat "$PID_FILE")/status" > "$COPY" 2>/dev/null || echo gone > "$COPY"\n'
        files = {"PID_FILE": str(pid_file), "COPY": str(status_copy)}
        await asyncio.gather(
            executor.run(invocation(tmp_path, "leaver", leaver, **files), slots),
            executor.run(invocation(tmp_path, "looker", looker, **files), slots),
        )

    asyncio.run(scenario())

    seen = status_copy.read_text()
    if seen.strip() == "gone":
        return
    fields = dict(line.split(":\t", 1) for line in seen.splitlines() if ":\t" in line)
    sigkill = 1 << (9 - 1)
    pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    assert fields["State"][0] in "ZX" or pending & sigkill, f"still running: {fields['State']}"
