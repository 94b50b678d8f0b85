"""Async jobs through Sluice beside the machine's limit, in one run.

    .venv/bin/python benchmarks/async_jobs.py [--files 1000] [--events 20000] [--rounds 3] [--client lean]

1. Baseline: the service's script run FILES times with plain `subprocess`, as many at once as
   there are cores: what the machine can do with no platform at all. Baseline and Sluice
   alternate ROUNDS times and the medians are reported: on a shared VM the machine's own speed
   drifts by a third within minutes, so one baseline measured once is a poor yardstick.
2. Sluice: a real `sluice serve` (SQLite, local buckets, process executor); FILES small files are
   uploaded over HTTP (16 at a time, by a lean client: `lean_uploads.py`, or with `--client aiohttp`
   by aiohttp); every upload is acknowledged only after its job is committed.
   Reports upload acceptance rate and jobs/s from the first upload to the last job's end. Then
   PACED more uploads at 50/s give upload-to-start latency (job start minus its durable
   acceptance, both server-side) with no backlog in front of them.
   Each round also says where the CPU went, per job: the server process, the scripts it ran,
   and this benchmark's own uploads and polls, beside the baseline's CPU per run. On a machine
   this size the sum is what bounds the rate. And the share of time the hypervisor gave to
   other machines meanwhile (`steal` in /proc/stat), for each side: on a shared VM it varies.
3. Durable event acceptance: MinIO-format events (100 records a request, 8 requests at once) on an
   API-only server (`--workers 0`), so nothing competes with acceptance.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx
import lean_uploads
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.server import PASSWORD, ServerProcess

SCRIPT = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"\n'
AUTH = ("oscar", PASSWORD)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def baseline(files: int, work: Path) -> tuple[float, float, float]:
    """Runs per second, CPU milliseconds per run (Python's own share and the script's), and the
    share of the machine's time its hypervisor took meanwhile."""
    work.mkdir()
    script = work / "script.sh"
    script.write_text(SCRIPT)
    inputs = work / "base-in"
    inputs.mkdir()
    for i in range(files):
        (inputs / f"f{i}.txt").write_text(f"file {i}\n")

    def run_one(i: int) -> None:
        out = work / "base-out" / str(i)
        out.mkdir(parents=True)
        env = {
            "PATH": os.environ["PATH"],
            "INPUT_FILE_PATH": str(inputs / f"f{i}.txt"),
            "TMP_OUTPUT_DIR": str(out),
        }
        subprocess.run(["/bin/sh", str(script)], env=env, check=True)

    started, cpu_before, machine_before = time.perf_counter(), os.times(), machine_ticks()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(run_one, range(files)))
    elapsed, cpu_after = time.perf_counter() - started, os.times()
    spent = sum(cpu_after[:4]) - sum(cpu_before[:4])  # this process and the scripts it waited for
    return files / elapsed, spent * 1000 / files, stolen_since(machine_before)


def machine_ticks() -> tuple[int, int]:
    """(ticks stolen by the hypervisor, all ticks) of every core since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields[:8])


def stolen_since(before: tuple[int, int]) -> float:
    """The share of the cores' time the hypervisor gave to other machines since `before`: a
    round where it is high ran on a slower machine than the others."""
    steal, total = machine_ticks()
    return (steal - before[0]) / max(1, total - before[1])


def session(endpoint: str) -> aiohttp.ClientSession:
    # aiohttp, not httpx, as the load generator: httpx costs ~1 ms of CPU per request and would
    # measure itself on a 2-core machine.
    return aiohttp.ClientSession(endpoint, headers={"Authorization": basic_auth(*AUTH)})


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def upload_all(endpoint: str, files: int, client_kind: str = "aiohttp") -> tuple[float, float]:
    """Creates the service, then uploads FILES files 16 at a time with the chosen client; returns
    the wall-clock start and end of the uploads."""
    async with session(endpoint) as client:
        async with client.post(
            "/system/services",
            json={
                "name": "bench",
                "image": "none",
                "script": SCRIPT,
                "input": [{"storage_provider": "minio.default", "path": "bench/in"}],
                "output": [{"storage_provider": "minio.default", "path": "bench/out"}],
            },
        ) as response:
            response.raise_for_status()
        gate = asyncio.Semaphore(16)

        async def put(i: int) -> None:
            async with gate, client.put(f"/v1/buckets/bench/objects/in/f{i}.txt", data=f"file {i}\n") as r:
                r.raise_for_status()
                await r.read()

        started = time.time()  # wall clock: compared with the server's job timestamps
        if client_kind == "lean":
            keys = [f"in/f{i}.txt" for i in range(files)]
            await lean_uploads.upload_burst(endpoint, basic_auth(*AUTH), keys, concurrency=16)
        else:
            await asyncio.gather(*(put(i) for i in range(files)))
        return started, time.time()


async def paced_uploads(endpoint: str, count: int, rate: float) -> None:
    """Uploads one at a time at `rate` per second: the queue stays short, so the delay from
    acceptance to start is the platform's own, not time spent waiting behind a backlog."""
    async with session(endpoint) as client:
        for i in range(count):
            async with client.put(f"/v1/buckets/bench/objects/in/paced{i}.txt", data=b"paced\n") as r:
                r.raise_for_status()
                await r.read()
            await asyncio.sleep(1 / rate)


async def wait_done(endpoint: str, files: int, timeout: float = 600) -> list[dict]:
    """Every job, once none is queued or running. The poll asks for counts only (one job per
    status), running jobs only once none is queued, twice a second: the poller shares the cores
    with what it measures, and the rates come from the server's own timestamps, not the poll's."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=endpoint, auth=AUTH, timeout=60) as client:
        while time.monotonic() < deadline:
            if not await _any_with_status(client, "queued") and not await _any_with_status(client, "running"):
                jobs = await all_jobs(client)
                if sum(j["status"] in ("succeeded", "failed") for j in jobs) >= files:
                    return jobs
            await asyncio.sleep(0.5)
    raise TimeoutError("jobs did not finish")


async def _any_with_status(client: httpx.AsyncClient, status: str) -> bool:
    params = {"status": status, "limit": 1}
    return bool((await client.get("/v1/services/bench/jobs", params=params)).json()["jobs"])


async def all_jobs(client: httpx.AsyncClient) -> list[dict]:
    jobs: list[dict] = []
    page = None
    while True:
        params = {"limit": 1000, **({"page": page} if page else {})}
        data = (await client.get("/v1/services/bench/jobs", params=params)).json()
        jobs += data["jobs"]
        page = data["next_page"]
        if not page:
            return jobs


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def accept_events(endpoint: str, events: int, per_request: int = 100) -> float:
    records = [
        {
            "eventName": "s3:ObjectCreated:Put",
            "s3": {"bucket": {"name": "sink"}, "object": {"key": f"in/e{i}.txt", "eTag": f"{i:032x}"}},
        }
        for i in range(events)
    ]
    async with session(endpoint) as client:
        async with client.post(
            "/system/services",
            json={
                "name": "sink",
                "image": "none",
                "script": "true",
                "input": [{"storage_provider": "minio.default", "path": "sink/in"}],
            },
        ) as response:
            response.raise_for_status()
        gate = asyncio.Semaphore(8)

        async def post(chunk: list[dict]) -> None:
            async with gate, client.post("/v1/events/minio", json={"Records": chunk}) as response:
                response.raise_for_status()
                await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(post(records[i : i + per_request]) for i in range(0, events, per_request)))
        return events / (time.perf_counter() - started)


@dataclass
class Round:
    baseline: float  # runs/s
    rate: float  # jobs/s, first upload to last job done
    drain: float  # jobs/s once the uploads had ended
    uploads: float  # uploads/s durably accepted
    backlog_wait_p50: float  # ms a job waited in the queue during the burst
    # CPU milliseconds per job, upload included: where the two cores went.
    server_cpu: float  # the `sluice serve` process: HTTP, storage, queue, bookkeeping
    script_cpu: float  # the scripts it ran (and what they started)
    client_cpu: float  # this benchmark's uploads and polls
    steal: float  # share of the time the hypervisor took while Sluice ran
    baseline_cpu: float = float("nan")  # per run of the baseline, Python's share included
    baseline_steal: float = float("nan")


def sluice_round(data_dir: Path, files: int, client: str = "lean") -> tuple[Round, ServerProcess]:
    """One burst of FILES uploads on a fresh server; the server is returned still running."""
    server = ServerProcess(data_dir, extra_args=("--reconcile-interval", "0")).start()
    assert server.process is not None
    try:
        server_before, client_before = process_cpu(server.process.pid), os.times()
        machine_before = machine_ticks()
        if client == "lean":  # on uvloop, as the server: the cheapest loop for the client too
            up_start, up_end = uvloop.run(upload_all(server.endpoint, files, "lean"))
        else:
            up_start, up_end = asyncio.run(upload_all(server.endpoint, files, "aiohttp"))
        jobs = asyncio.run(wait_done(server.endpoint, files))
        server_after, client_after = process_cpu(server.process.pid), os.times()
        steal = stolen_since(machine_before)
    except BaseException:
        server.stop()
        raise
    failed = [j for j in jobs if j["status"] != "succeeded"]
    if failed:
        server.stop()
        raise SystemExit(f"{len(failed)} jobs did not succeed, e.g. {failed[0]}")
    last_end = max(ts(j["finished_at"]) for j in jobs)
    first_created = min(ts(j["created_at"]) for j in jobs)
    # Once the uploads are over, the jobs have both cores (the load generator shares them).
    after_uploads = sum(ts(j["finished_at"]) > up_end for j in jobs)
    drain = after_uploads / (last_end - up_end) if last_end > up_end else float("nan")
    backlog_wait = [(ts(j["started_at"]) - ts(j["created_at"])) * 1000 for j in jobs]
    measured = Round(
        baseline=float("nan"),
        rate=len(jobs) / (last_end - first_created),
        drain=drain,
        uploads=files / (up_end - up_start),
        backlog_wait_p50=percentile(backlog_wait, 50),
        server_cpu=(server_after[0] - server_before[0]) * 1000 / files,
        script_cpu=(server_after[1] - server_before[1]) * 1000 / files,
        client_cpu=(sum(client_after[:2]) - sum(client_before[:2])) * 1000 / files,
        steal=steal,
    )
    return measured, server


def process_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of a process (all its threads) and of the children it has reaped."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(value) / CLOCK_TICKS for value in fields[11:15])
    return utime + stime, cutime + cstime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--paced", type=int, default=200, help="uploads at 50/s for the latency figure")
    parser.add_argument("--rounds", type=int, default=3, help="baseline and Sluice alternate this many times")
    parser.add_argument(
        "--client",
        choices=("lean", "aiohttp"),
        default="lean",
        help="the burst's load generator: lean (uvloop + httptools, the default) or aiohttp "
        "(what runs before 2026-12-07 used; about ten times the CPU per upload)",
    )
    args = parser.parse_args()
    rounds: list[Round] = []
    # Nothing is deleted until the end: on some filesystems a burst of deletions slows every
    # file created for minutes after, and would slow whichever side ran next.
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        work = Path(tmp)
        for index in range(args.rounds):
            base_rate, base_cpu, base_steal = baseline(args.files, work / f"base-{index}")
            measured, server = sluice_round(work / f"data-{index}", args.files, args.client)
            measured.baseline, measured.baseline_cpu = base_rate, base_cpu
            measured.baseline_steal = base_steal
            rounds.append(measured)
            print(
                f"round {index + 1}: baseline {base_rate:.0f} runs/s; sluice {measured.rate:.0f} jobs/s "
                f"(ratio {measured.rate / base_rate:.2f}), drain {measured.drain:.0f} jobs/s "
                f"(ratio {measured.drain / base_rate:.2f}), uploads {measured.uploads:.0f}/s; "
                f"CPU ms per run {base_cpu:.2f}, per job {measured.server_cpu:.2f} server + "
                f"{measured.script_cpu:.2f} scripts + {measured.client_cpu:.2f} uploader; "
                f"stolen by the hypervisor {base_steal:.0%} / {measured.steal:.0%}",
                flush=True,
            )
            if index < args.rounds - 1:
                server.stop()
                continue
            try:  # the last round's server also measures latency with no backlog
                asyncio.run(paced_uploads(server.endpoint, args.paced, rate=50))
                paced = [
                    j
                    for j in asyncio.run(wait_done(server.endpoint, args.files + args.paced))
                    if "/paced" in j["key"]
                ]
            finally:
                server.stop()
        to_start = [(ts(j["started_at"]) - ts(j["created_at"])) * 1000 for j in paced]

        api_only = ServerProcess(
            work / "data-events", extra_args=("--reconcile-interval", "0", "--workers", "0")
        )
        api_only.start()
        try:
            event_rate = asyncio.run(accept_events(api_only.endpoint, args.events))
        finally:
            api_only.stop()

    def median(field: str) -> float:
        return statistics.median(getattr(r, field) for r in rounds)

    ratio = statistics.median(r.rate / r.baseline for r in rounds)
    drain_ratio = statistics.median(r.drain / r.baseline for r in rounds)
    print(f"files: {args.files}, cores: {os.cpu_count()}, rounds: {args.rounds} (medians below)")
    print(f"baseline (plain subprocess, {os.cpu_count()} at once): {median('baseline'):8.0f} runs/s")
    print(
        f"sluice jobs (upload -> last job done):           {median('rate'):8.0f} jobs/s  "
        f"ratio {ratio:.2f} of baseline"
    )
    print(
        f"sluice jobs once uploads ended (drain):          {median('drain'):8.0f} jobs/s  "
        f"ratio {drain_ratio:.2f} of baseline"
    )
    print(f"uploads durably accepted (16 concurrent PUTs):   {median('uploads'):8.0f} /s")
    print(
        f"CPU per job (ms): server {median('server_cpu'):.2f}, scripts {median('script_cpu'):.2f}, "
        f"uploader {median('client_cpu'):.2f}; baseline per run {median('baseline_cpu'):.2f} "
        f"(on {os.cpu_count()} cores, 1000 / (ms per job) * cores bounds the rate)"
    )
    print(
        f"time stolen by the hypervisor: baseline {median('baseline_steal'):.0%}, "
        f"sluice {median('steal'):.0%} (a round with much more ran on a slower machine)"
    )
    print(f"burst: wait in the queue p50 {median('backlog_wait_p50'):.0f} ms (uploads outpace the jobs)")
    print(
        f"upload-to-start latency at 50 uploads/s: p50 {percentile(to_start, 50):.1f} ms, "
        f"p99 {percentile(to_start, 99):.1f} ms, mean {statistics.fmean(to_start):.1f} ms"
    )
    print(f"events durably accepted (100 per request):       {event_rate:8.0f} /s")


if __name__ == "__main__":
    main()
