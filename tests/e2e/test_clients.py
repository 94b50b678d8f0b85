"""The Python clients against a real server: the async client, and its blocking twin used where an
event loop is already running (as in a Jupyter cell)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from sluice import AsyncClient, Client, NotFound
from tests.server import PASSWORD, ServerProcess, wait_for_jobs

FDL = """\
functions:
  oscar:
  - local:
      name: {name}
      image: busybox
      script: {name}.sh
      input: [{{storage_provider: minio.default, path: {name}/in}}]
      output: [{{storage_provider: minio.default, path: {name}/out}}]
"""


def write_service(folder: Path, name: str) -> Path:
    (folder / f"{name}.sh").write_text(
        'rev < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n'
    )
    fdl = folder / f"{name}.yaml"
    fdl.write_text(FDL.format(name=name))
    return fdl


def test_async_client_round_trip(server: ServerProcess, tmp_path: Path) -> None:
    source = tmp_path / "word.txt"
    source.write_text("stressed\n")

    async def scenario() -> None:
        async with AsyncClient(server.endpoint, ("oscar", PASSWORD)) as client:
            assert await client.apply(write_service(tmp_path, "asyncrev")) == [("asyncrev", "created")]
            uploaded = await client.put_file("asyncrev/in", source)
            assert len(uploaded["jobs"]) == 1
            for _ in range(300):
                jobs = [job async for job in client.jobs("asyncrev")]
                if jobs and jobs[0]["status"] == "succeeded":
                    break
                await asyncio.sleep(0.1)
            assert await client.get_bytes("asyncrev", "out/word.txt") == b"desserts\n"
            with pytest.raises(NotFound, match="no-such"):
                await client.service("no-such")

    asyncio.run(scenario())


def test_blocking_client_works_inside_a_running_event_loop(server: ServerProcess, tmp_path: Path) -> None:
    # A Jupyter cell runs inside an event loop: asyncio.run() would fail there, this client does not.
    async def cell() -> list[str]:
        with Client(server.endpoint, ("oscar", PASSWORD)) as client:
            client.apply(write_service(tmp_path, "looprev"))
            return [s["name"] for s in client.services()]

    assert "looprev" in asyncio.run(cell())


def test_stopping_a_listing_early_is_clean(server: ServerProcess, tmp_path: Path) -> None:
    with Client(server.endpoint, ("oscar", PASSWORD)) as client:
        client.apply(write_service(tmp_path, "manyrev"))
        for i in range(5):
            (tmp_path / f"f{i}.txt").write_text(f"{i}\n")
            client.put_file("manyrev/in", tmp_path / f"f{i}.txt")
        wait_for_jobs(client, "manyrev", 5)
        first_two = list(itertools.islice(client.list_objects("manyrev", "in/"), 2))
        assert [o["object_name"] for o in first_two] == ["in/f0.txt", "in/f1.txt"]
        assert len(list(client.jobs("manyrev", limit=2))) == 5  # pages followed to the end
