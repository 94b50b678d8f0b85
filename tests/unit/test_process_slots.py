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
    assert all(d.duration >= 0.2 for d in done), "a run's duration counts from its start, not its wait"


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
