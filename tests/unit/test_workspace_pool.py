"""Which workspace an invocation gets: its service's own first, a service's never silently another's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sluice.runtime import workspace
from sluice.runtime.workspace import WorkspacePool


def test_a_service_gets_back_the_workspace_it_used_last(tmp_path: Path) -> None:
    async def scenario() -> tuple[Path, Path, Path]:
        pool = WorkspacePool(tmp_path / "work")
        a = await pool.acquire("a")
        b = await pool.acquire("b")
        pool.release(a)
        pool.release(b)
        return a.root, b.root, (await pool.acquire("a")).root

    a, b, again = asyncio.run(scenario())
    assert a != b and again == a


def test_a_workspace_goes_to_another_service_only_through_the_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workspace, "MAX_WORKSPACES", 1)
    reassigned: list[Path] = []

    async def forget(root: Path) -> None:
        reassigned.append(root)

    async def scenario() -> tuple[Path, Path]:
        pool = WorkspacePool(tmp_path / "work", on_reassign=forget)
        first = await pool.acquire("a")
        pool.release(first)
        return first.root, (await pool.acquire("b")).root

    first, second = asyncio.run(scenario())
    assert second == first  # at the limit: reused...
    assert reassigned == [first]  # ...only after the hook let go of what service a kept there
