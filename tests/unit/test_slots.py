"""Execution slots: a bounded pool whose freed slot starts the next waiter inside `release`."""

from __future__ import annotations

import asyncio

import pytest

from sluice.executors.slots import Slots


def test_a_pool_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Slots(0)


def test_at_most_size_start_and_a_release_starts_the_next_before_it_returns() -> None:
    async def scenario() -> None:
        slots = Slots(2)
        started: list[int] = []
        waiting = [asyncio.create_task(slots.start(lambda i=i: started.append(i) or i)) for i in range(5)]
        await asyncio.sleep(0)
        assert started == [0, 1] and slots.free == 0

        slots.release()
        assert started == [0, 1, 2], "the next waiter starts inside release, not on a later loop pass"
        slots.release()
        slots.release()
        assert started == [0, 1, 2, 3, 4]
        assert await asyncio.gather(*waiting) == [0, 1, 2, 3, 4]
        slots.release()  # the two still held
        slots.release()
        assert slots.free == 2

    asyncio.run(scenario())


def test_a_start_that_fails_passes_its_slot_on_and_raises_to_its_caller() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        await slots.acquire()
        started: list[str] = []

        def broken() -> None:
            raise OSError("no such program")

        failing = asyncio.create_task(slots.start(broken))
        next_one = asyncio.create_task(slots.start(lambda: started.append("next")))
        await asyncio.sleep(0)
        slots.release()
        with pytest.raises(OSError, match="no such program"):
            await failing
        await next_one
        assert started == ["next"] and slots.free == 0
        slots.release()
        assert slots.free == 1

        with pytest.raises(OSError):  # with a slot free at once: it is free again after
            await slots.start(broken)
        assert slots.free == 1

    asyncio.run(scenario())


def test_a_waiter_cancelled_while_queued_never_starts() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        await slots.acquire()
        started: list[str] = []
        cancelled = asyncio.create_task(slots.start(lambda: started.append("cancelled")))
        later = asyncio.create_task(slots.start(lambda: started.append("later")))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        slots.release()
        await later
        assert started == ["later"]
        assert cancelled.cancelled()
        slots.release()
        assert slots.free == 1

    asyncio.run(scenario())


def test_an_acquire_granted_as_it_is_cancelled_gives_the_slot_back() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        slots.release()  # granted: its task has not resumed yet
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert slots.free == 1, "the slot granted to a cancelled acquire must not be lost"

    asyncio.run(scenario())


def test_async_with_holds_a_slot_for_the_block() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        inside: list[int] = []
        most = 0

        async def work(i: int) -> None:
            nonlocal most
            async with slots:
                inside.append(i)
                most = max(most, len(inside))
                await asyncio.sleep(0.01)
                inside.remove(i)

        await asyncio.gather(*(work(i) for i in range(4)))
        assert most == 1 and slots.free == 1

    asyncio.run(scenario())


def test_a_slot_released_that_was_not_taken_is_refused() -> None:
    async def scenario() -> None:
        slots = Slots(2)
        await slots.acquire()
        slots.release()
        with pytest.raises(RuntimeError, match="not taken"):
            slots.release()
        assert slots.free == 2

    asyncio.run(scenario())
