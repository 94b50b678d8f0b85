"""A real `sluice serve` killed with SIGKILL in the middle of a batch, restarted on the same data dir:
every input gets exactly one output and no job is left running."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.server import ServerProcess, wait_for_jobs

FILES = 300
SCRIPT = """\
# a little work per file, so the kill lands while jobs are running
sleep 0.05
name=$(basename "$INPUT_FILE_PATH" .txt)
tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$name.out"
"""


def _fdl(tmp: Path) -> Path:
    (tmp / "crash.sh").write_text(SCRIPT)
    fdl = tmp / "crash.yaml"
    fdl.write_text(
        "functions:\n  oscar:\n  - local:\n      name: crash\n      image: busybox\n      script: crash.sh\n"
        "      input: [{storage_provider: minio.default, path: crash/in}]\n"
        "      output: [{storage_provider: minio.default, path: crash/out}]\n"
    )
    return fdl


def test_sigkill_mid_batch_then_restart_processes_every_file_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, extra_args=("--reconcile-interval", "2")).start()
    try:
        assert server.cli("apply", str(_fdl(tmp_path))).returncode == 0
        with server.client() as client:
            for i in range(FILES):
                source = tmp_path / f"f{i:03d}.txt"
                source.write_text(f"file number {i}\n")
                client.put_file("crash/in", source)
            # Kill once some jobs are done and many are not: the crash lands mid-batch.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = sum(j["status"] == "succeeded" for j in client.jobs("crash"))
                if done >= 20:
                    break
                time.sleep(0.05)
            assert 20 <= done < FILES, f"the kill should land mid-batch, {done} of {FILES} were done"
        server.kill()
    finally:
        server.kill()

    restarted = ServerProcess(data, port=server.port, extra_args=("--reconcile-interval", "2")).start()
    try:
        with restarted.client() as client:
            jobs = wait_for_jobs(client, "crash", FILES, timeout=300)
            assert len(jobs) == FILES
            assert {j["status"] for j in jobs} == {"succeeded"}, [
                j for j in jobs if j["status"] != "succeeded"
            ]
            assert sorted(j["key"] for j in jobs) == [f"in/f{i:03d}.txt" for i in range(FILES)]
            outputs = sorted(o["object_name"] for o in client.list_objects("crash", "out/"))
            assert outputs == [f"out/f{i:03d}.out" for i in range(FILES)]
            for i in (0, 150, FILES - 1):
                assert client.get_bytes("crash", f"out/f{i:03d}.out") == f"FILE NUMBER {i}\n".encode()
            status = client.status()
            assert not status["jobs"].get("running") and not status["jobs"].get("queued")
    finally:
        restarted.stop()
    # Nothing half-written remains in the bucket's folders.
    leftovers = [
        p for p in (data / "buckets" / "crash").rglob("*") if p.is_file() and p.suffix not in (".txt", ".out")
    ]
    assert leftovers == []


def _scripts_running_in(work: Path) -> list[int]:
    """Pids of processes whose working directory is inside `work` (the server's workspaces)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")).is_relative_to(work):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_scripts_left_running_by_a_killed_server_are_ended_at_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "slow.sh").write_text("sleep 60\n")
    (tmp_path / "slow.yaml").write_text(
        "functions:\n  oscar:\n  - local:\n      name: slow\n      image: busybox\n      script: slow.sh\n"
        "      input: [{storage_provider: minio.default, path: slow/in}]\n"
    )
    server = ServerProcess(data, extra_args=("--reconcile-interval", "0")).start()
    try:
        assert server.cli("apply", str(tmp_path / "slow.yaml")).returncode == 0
        (tmp_path / "one.txt").write_text("1")
        with server.client() as client:
            client.put_file("slow/in", tmp_path / "one.txt")
        deadline = time.monotonic() + 30
        while not _scripts_running_in(data / "work") and time.monotonic() < deadline:
            time.sleep(0.1)
        server.kill()
        orphans = _scripts_running_in(data / "work")
        assert orphans, "the script should outlive the SIGKILLed server"
    finally:
        server.kill()
    restarted = ServerProcess(data, port=server.port, extra_args=("--reconcile-interval", "0")).start()
    try:
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in orphans) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in orphans if _alive(pid)]
        with restarted.client() as client:  # the job itself runs again
            assert [j["status"] for j in client.jobs("slow")] == ["running"]
            client.delete_jobs("slow", everything=True)
    finally:
        restarted.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
