"""A trivial job run by the container executor (podman) beside the process executor, in one run.

    .venv/bin/python benchmarks/containers.py [--jobs 30] [--burst 40] [--workers 2] [--network]

The same service (`cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"`, image `localhost/sluice-test:busybox`,
cpu 1, memory 64Mi, network off) is created on a real `sluice serve` (SQLite, local buckets,
reconciler off) per executor. The servers run one after the other, so they never compete for the
cores. Jobs are posted to `POST /job/bench` with a small body (Basic auth as the admin).

1. Latency: JOBS jobs one at a time, each awaited before the next. Per job: the server's run time
   (`finished_at - started_at` from `/v1/services/bench/jobs/{id}`) and the client's submit-to-done
   (from just before the POST until a poll every POLL seconds sees the job finished).
   WARMUP jobs run first and are not counted.
2. Throughput: BURST jobs posted at once; jobs/s from the first POST to the last job's
   `finished_at`, with WORKERS jobs running at once (`SLUICE_WORKERS`).

The network is off in the service by default: with podman's default network (netavark) every
container also gets a network namespace, which costs ~0.3 s more here. `--network` also measures
the container executor with the network on (a third server). After the run, no container labelled
`io.sluice.owner` by this run's servers may remain (other servers on the machine, e.g. tests running
meanwhile, are named but not counted). Needs podman, runc and busybox-static (see tests/podman.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sluice.executors import load_executor
from sluice.settings import Settings
from tests.podman import IMAGE, Podman
from tests.server import PASSWORD, ServerProcess

SCRIPT = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"\n'
AUTH = ("oscar", PASSWORD)
SERVICE = "bench"
FINAL = ("succeeded", "failed", "cancelled")
OWNER_LABEL = "io.sluice.owner"
JOB_TIMEOUT = 120.0  # seconds one job may take, from its POST to its end, before the run is abandoned


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Figures:
    label: str
    executor: str  # as the server describes it
    run_ms: list[float]  # server: finished_at - started_at, per sequential job
    done_ms: list[float]  # client: POST to finished seen, per sequential job
    burst: int
    burst_seconds: float

    @property
    def rate(self) -> float:
        return self.burst / self.burst_seconds


def create_service(client: httpx.Client, network: bool) -> str:
    response = client.post(
        "/system/services",
        json={
            "name": SERVICE,
            "image": IMAGE,
            "script": SCRIPT,
            "cpu": "1",
            "memory": "64Mi",
            "network": network,
            "input": [{"storage_provider": "minio.default", "path": "bench/in"}],
            "output": [{"storage_provider": "minio.default", "path": "bench/out"}],
        },
    )
    if response.status_code != 201:
        raise RuntimeError(f"creating the service: {response.status_code} {response.text}")
    return response.json().get("sluice_executor", "?")


def submit(client: httpx.Client, i: int) -> str:
    response = client.post(f"/job/{SERVICE}", content=f"job {i}\n".encode())
    if response.status_code != 201:
        raise RuntimeError(f"POST /job/{SERVICE}: {response.status_code} {response.text}")
    return response.json()["job_id"]


def check_succeeded(client: httpx.Client, job: dict) -> None:
    if job["status"] != "succeeded":
        log = client.get(f"/system/logs/{SERVICE}/{job['id']}").text
        raise RuntimeError(
            f"job {job['id']} ended {job['status']} (exit {job['exit_code']}, error {job['error']!r}):\n"
            f"{log[-2000:]}"
        )


def wait_one(client: httpx.Client, job_id: str, poll: float, deadline: float) -> dict:
    while time.monotonic() < deadline:
        response = client.get(f"/v1/services/{SERVICE}/jobs/{job_id}")
        response.raise_for_status()
        job = response.json()
        if job["status"] in FINAL:
            return job
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} did not finish within {JOB_TIMEOUT:g} s")


def sequential(client: httpx.Client, count: int, poll: float, first: int) -> tuple[list[float], list[float]]:
    """Run `count` jobs one at a time: (server run times, client submit-to-done times), in ms."""
    run_ms: list[float] = []
    done_ms: list[float] = []
    for i in range(first, first + count):
        posted = time.perf_counter()
        job_id = submit(client, i)
        job = wait_one(client, job_id, poll, time.monotonic() + JOB_TIMEOUT)
        done_ms.append((time.perf_counter() - posted) * 1000)
        check_succeeded(client, job)
        run_ms.append((ts(job["finished_at"]) - ts(job["started_at"])) * 1000)
    return run_ms, done_ms


async def post_burst(endpoint: str, count: int, first: int) -> tuple[float, list[str]]:
    """Post `count` jobs at once; the wall-clock time of the first POST and the job ids."""
    headers = {"Authorization": basic_auth(*AUTH)}
    async with aiohttp.ClientSession(endpoint, headers=headers) as session:

        async def post(i: int) -> str:
            async with session.post(f"/job/{SERVICE}", data=f"burst {i}\n".encode()) as response:
                if response.status != 201:
                    raise RuntimeError(f"POST /job/{SERVICE}: {response.status} {await response.text()}")
                return (await response.json())["job_id"]

        started = time.time()  # wall clock: compared with the server's finished_at
        ids = await asyncio.gather(*(post(i) for i in range(first, first + count)))
        return started, list(ids)


def wait_all(client: httpx.Client, ids: list[str], timeout: float) -> list[dict]:
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found: dict[str, dict] = {}
        page = None
        for _ in range(100):  # pages of 1000: far more than any run makes
            params = {"limit": 1000, **({"page": page} if page else {})}
            response = client.get(f"/v1/services/{SERVICE}/jobs", params=params)
            response.raise_for_status()
            data = response.json()
            found |= {j["id"]: j for j in data["jobs"] if j["id"] in wanted}
            page = data["next_page"]
            if not page:
                break
        if len(found) == len(wanted) and all(j["status"] in FINAL for j in found.values()):
            return list(found.values())
        time.sleep(0.2)
    raise TimeoutError(f"{len(ids)} jobs did not all finish within {timeout:g} s")


def owner_of(data_dir: Path) -> str:
    """The `io.sluice.owner` value a container-executor server with this data dir gives its containers."""
    executor = load_executor(Settings(data_dir=data_dir, executor="container", container_engine="podman"))
    return executor.owner  # type: ignore[attr-defined]


def measure(
    label: str, data_dir: Path, env: dict[str, str], network: bool, args: argparse.Namespace
) -> Figures:
    env = {**env, "SLUICE_WORKERS": str(args.workers)}
    server = ServerProcess(data_dir, extra_args=("--reconcile-interval", "0"), env=env).start()
    try:
        with httpx.Client(base_url=server.endpoint, auth=AUTH, timeout=60) as client:
            executor = create_service(client, network)
            print(f"[{label}] server executor: {executor}", flush=True)
            sequential(client, args.warmup, args.poll, first=0)
            run_ms, done_ms = sequential(client, args.jobs, args.poll, first=args.warmup)
            print(f"[{label}] {args.jobs} sequential jobs done", flush=True)
            first = args.warmup + args.jobs
            started, ids = asyncio.run(post_burst(server.endpoint, args.burst, first))
            jobs = wait_all(client, ids, timeout=JOB_TIMEOUT + args.burst * 10)
            for job in jobs:
                check_succeeded(client, job)
            seconds = max(ts(j["finished_at"]) for j in jobs) - started
            print(f"[{label}] {args.burst} jobs at once done", flush=True)
    finally:
        server.stop()
    return Figures(label, executor, run_ms, done_ms, args.burst, seconds)


def spread(values: list[float]) -> str:
    return f"{percentile(values, 50):.0f} / {percentile(values, 95):.0f} / {max(values):.0f} ms"


def report(results: list[Figures], args: argparse.Namespace) -> None:
    base = results[0]
    others = results[1:]
    header = ["measure", *(r.label for r in results), *(f"{r.label} / {base.label}" for r in others)]
    rows = [
        ["run time, server (started -> finished), p50 / p95 / max"]
        + [spread(r.run_ms) for r in results]
        + [
            f"p50 {percentile(r.run_ms, 50) / percentile(base.run_ms, 50):.1f}x, "
            f"p95 {percentile(r.run_ms, 95) / percentile(base.run_ms, 95):.1f}x"
            for r in others
        ],
        ["submit -> done, client, p50 / p95 / max"]
        + [spread(r.done_ms) for r in results]
        + [
            f"p50 {percentile(r.done_ms, 50) / percentile(base.done_ms, 50):.1f}x, "
            f"p95 {percentile(r.done_ms, 95) / percentile(base.done_ms, 95):.1f}x"
            for r in others
        ],
        [f"jobs/s, {args.burst} posted at once"]
        + [f"{r.rate:.1f} ({r.burst_seconds:.2f} s)" for r in results]
        + [f"{r.rate / base.rate:.2f}x" for r in others],
    ]
    print()
    print(
        f"cores: {os.cpu_count()}, SLUICE_WORKERS={args.workers}, sequential jobs: {args.jobs} "
        f"(after {args.warmup} warm-up), poll every {args.poll * 1000:g} ms"
    )
    for r in results:
        print(f"  {r.label}: {r.executor}")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--jobs", type=int, default=30, help="jobs run one at a time for latency (default 30)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="uncounted jobs before them (default 2)")
    parser.add_argument("--burst", type=int, default=40, help="jobs posted at once for jobs/s (default 40)")
    parser.add_argument(
        "--workers", type=int, default=2, help="SLUICE_WORKERS: jobs run at once by each server (default 2)"
    )
    parser.add_argument(
        "--poll", type=float, default=0.01, help="seconds between a job's status polls (default 0.01)"
    )
    parser.add_argument(
        "--network",
        action="store_true",
        help="also measure the container executor with the service's network on (podman's default network)",
    )
    args = parser.parse_args()
    if args.jobs < 1 or args.burst < 1 or args.workers < 1 or args.warmup < 0 or args.poll <= 0:
        parser.error("--jobs, --burst and --workers must be at least 1, --warmup 0 or more, --poll above 0")

    with tempfile.TemporaryDirectory(prefix="sluice-bench-ctr-") as tmp:
        work = Path(tmp)
        engine = Podman.for_tests(work)  # containers.conf for this machine; builds the image once
        runs = [
            ("process", work / "data-process", {"SLUICE_EXECUTOR": "process"}, False),
            ("container", work / "data-container", engine.server_env, False),
        ]
        if args.network:
            runs.append(("container, network", work / "data-network", engine.server_env, True))
        results = [measure(label, data_dir, env, network, args) for label, data_dir, env, network in runs]
        report(results, args)
        # Other servers on this machine (tests running meanwhile) label their containers too: only
        # ours count, and the others are named.
        ours = [
            c
            for _, data_dir, _, _ in runs[1:]
            for c in engine.containers(f"{OWNER_LABEL}={owner_of(data_dir)}")
        ]
        others = [c for c in engine.containers(OWNER_LABEL) if c not in ours]
    print()
    if ours:
        raise SystemExit(f"containers of this run labelled {OWNER_LABEL} remain after it: {ours}")
    print(f"containers of this run labelled {OWNER_LABEL} left after it: none")
    if others:
        print(f"(containers of other servers on this machine, not this run's: {others})")


if __name__ == "__main__":
    main()
