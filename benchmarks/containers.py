"""A trivial service run by the container executor (podman) -- warm containers, and a fresh container
per job -- beside the process executor, in one run.

    .venv/bin/python benchmarks/containers.py [--jobs 30] [--burst 40] [--workers 2] [--calls 30] [--network]

The same service (`cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"`, image `tests.podman.IMAGE`, cpu 1,
memory 64Mi) is created on a real `sluice serve` (SQLite, local buckets, reconciler off) per
configuration. The servers run one after the other, so they never compete for the cores:

- process: the process executor (`SLUICE_EXECUTOR=process`), the baseline;
- warm: the container executor as it is by default, with warm containers (a script service's
  container keeps running between invocations), `SLUICE_WARM_CONTAINERS` at its default; network off;
- cold: the container executor with `SLUICE_WARM_CONTAINERS=0`, one fresh container per job (what it
  was before warm containers); network off;
- warm+net (with `--network`): warm, with the service's network on (podman's default network).

Per configuration:

1. Latency: JOBS jobs posted to `POST /job/bench` one at a time, each awaited before the next. Per
   job: the server's run time (`finished_at - started_at` from `/v1/services/bench/jobs/{id}`) and
   the client's submit-to-done (from just before the POST until a poll every POLL seconds sees the
   job finished). WARMUP jobs run first and are not counted.
2. Synchronous calls: CALLS calls to `POST /run/bench` (body `{}`) one after the other, after
   WARMUP uncounted ones; the client's latency of each, and its answer checked (the body back,
   base64-encoded). A script service's `/run` goes through the same executor as its jobs.
3. Throughput: BURST jobs posted at once; jobs/s from the first POST to the last job's
   `finished_at`, with WORKERS jobs running at once (`SLUICE_WORKERS`).

Every wait is bounded (JOB_TIMEOUT per job or call). The table gives p50 / p95 / p99 (with fewer
than 51 samples p99 is the largest) and ratios: warm / process, cold / warm, and warm+net / warm.
For each container configuration it also prints how many of its server's containers were alive
after the sequential jobs and after the burst (warm: one per workspace in use; cold: none), and
whether any remained once the server stopped. After the run, no container labelled
`io.sluice.owner` by this run's servers may remain (other servers on the machine, e.g. tests running
meanwhile, are named but not counted). Warnings and errors in the servers' logs are printed.
Needs podman, runc and busybox-static (see tests/podman.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
JOB_TIMEOUT = 120.0  # seconds one job or call may take, from its POST to its end, before the run is abandoned
CALL_BODY = b"{}"
WARM_DEFAULT = Settings.model_fields["warm_containers"].default
# (numerator, denominator): the ratio columns, where both configurations ran.
RATIOS = (("warm", "process"), ("cold", "warm"), ("warm+net", "warm"))
LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Config:
    label: str
    description: str
    data_dir: Path
    env: dict[str, str]
    network: bool
    containers: bool  # runs its jobs in containers: they are counted and checked for leftovers


@dataclass
class Figures:
    config: Config
    executor: str  # as the server describes it
    run_ms: list[float]  # server: finished_at - started_at, per sequential job
    done_ms: list[float]  # client: POST to finished seen, per sequential job
    call_ms: list[float]  # client: POST /run to its answer, per sequential call
    burst: int
    burst_seconds: float
    alive: dict[str, int] = field(default_factory=dict)  # the server's containers after each phase
    log_problems: list[str] = field(default_factory=list)

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


def calls(client: httpx.Client, count: int) -> list[float]:
    """`count` synchronous calls one after the other: the client's latency of each, in ms."""
    expected = base64.b64encode(CALL_BODY)  # the script copies its input: one file, base64 (OSCAR)
    latencies: list[float] = []
    for _ in range(count):
        posted = time.perf_counter()
        response = client.post(
            f"/run/{SERVICE}",
            content=CALL_BODY,
            headers={"Content-Type": "application/json"},
            timeout=JOB_TIMEOUT,
        )
        latencies.append((time.perf_counter() - posted) * 1000)
        if response.status_code != 200 or response.content.strip() != expected:
            raise RuntimeError(f"POST /run/{SERVICE}: {response.status_code} {response.text[-2000:]!r}")
    return latencies


async def post_burst(endpoint: str, count: int, first: int) -> tuple[float, list[str]]:
    """Post `count` jobs at once; the wall-clock time of the first POST and the job ids."""
    headers = {"Authorization": basic_auth(*AUTH)}
    timeout = aiohttp.ClientTimeout(total=JOB_TIMEOUT)
    async with aiohttp.ClientSession(endpoint, headers=headers, timeout=timeout) as session:

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


def measure(config: Config, engine: Podman, args: argparse.Namespace) -> Figures:
    env = {**config.env, "SLUICE_WORKERS": str(args.workers)}
    label = config.label
    owner = owner_of(config.data_dir) if config.containers else ""
    alive: dict[str, int] = {}

    def count_alive(phase: str) -> None:
        if config.containers:
            alive[phase] = len(engine.containers(f"{OWNER_LABEL}={owner}"))

    server = ServerProcess(config.data_dir, extra_args=("--reconcile-interval", "0"), env=env).start()
    try:
        with httpx.Client(base_url=server.endpoint, auth=AUTH, timeout=60) as client:
            executor = create_service(client, config.network)
            print(f"[{label}] server executor: {executor}", flush=True)
            sequential(client, args.warmup, args.poll, first=0)
            run_ms, done_ms = sequential(client, args.jobs, args.poll, first=args.warmup)
            count_alive("after the sequential jobs")
            print(f"[{label}] {args.jobs} sequential jobs done", flush=True)
            calls(client, args.warmup)
            call_ms = calls(client, args.calls)
            print(f"[{label}] {args.calls} sequential calls to /run done", flush=True)
            first = args.warmup + args.jobs
            started, ids = asyncio.run(post_burst(server.endpoint, args.burst, first))
            jobs = wait_all(client, ids, timeout=JOB_TIMEOUT + args.burst * 10)
            for job in jobs:
                check_succeeded(client, job)
            seconds = max(ts(j["finished_at"]) for j in jobs) - started
            count_alive("after the burst")
            print(f"[{label}] {args.burst} jobs at once done", flush=True)
    finally:
        stopping = time.monotonic()
        server.stop()
        print(f"[{label}] server stopped in {time.monotonic() - stopping:.1f} s", flush=True)
    count_alive("once the server stopped")
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    problems = [line for line in text.splitlines() if LOG_PROBLEM.search(line)]
    return Figures(config, executor, run_ms, done_ms, call_ms, args.burst, seconds, alive, problems)


def spread(values: list[float]) -> str:
    return " / ".join(f"{percentile(values, p):.0f}" for p in (50, 95, 99)) + " ms"


def times(x: float) -> str:
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def report(results: list[Figures], args: argparse.Namespace) -> None:
    by_label = {r.config.label: r for r in results}
    pairs = [(by_label[a], by_label[b]) for a, b in RATIOS if a in by_label and b in by_label]

    def latency_row(title: str, values: Callable[[Figures], list[float]]) -> list[str]:
        return (
            [title]
            + [spread(values(r)) for r in results]
            + [
                f"p50 {times(percentile(values(a), 50) / percentile(values(b), 50))}, "
                f"p99 {times(percentile(values(a), 99) / percentile(values(b), 99))}"
                for a, b in pairs
            ]
        )

    header = [
        "measure",
        *(r.config.label for r in results),
        *(f"{a.config.label} / {b.config.label}" for a, b in pairs),
    ]
    rows = [
        latency_row("job run time, server (started -> finished), p50 / p95 / p99", lambda r: r.run_ms),
        latency_row("job submit -> done, client, p50 / p95 / p99", lambda r: r.done_ms),
        latency_row(f"POST /run/{SERVICE}, client, p50 / p95 / p99", lambda r: r.call_ms),
        [f"jobs/s, {args.burst} posted at once"]
        + [f"{r.rate:.1f} ({r.burst_seconds:.2f} s)" for r in results]
        + [times(a.rate / b.rate) for a, b in pairs],
    ]
    print()
    print(
        f"cores: {os.cpu_count()}, SLUICE_WORKERS={args.workers}, sequential jobs: {args.jobs}, "
        f"sequential calls: {args.calls} (each after {args.warmup} warm-up), "
        f"poll every {args.poll * 1000:g} ms, image {IMAGE}"
    )
    for r in results:
        print(f"  {r.config.label}: {r.executor}; {r.config.description}")
        if r.alive:
            counts = ", ".join(f"{n} {phase}" for phase, n in r.alive.items())
            print(f"    its containers alive: {counts}")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    for r in results:
        shown = r.log_problems[:5]
        more = f" (first {len(shown)} shown)" if len(r.log_problems) > len(shown) else ""
        print(f"{r.config.label}: {len(r.log_problems)} warning/error lines in the server log{more}")
        for line in shown:
            print(f"    {line[:300]}")


def configurations(work: Path, engine: Podman, network: bool) -> list[Config]:
    warm_env = {**engine.server_env, "SLUICE_WARM_CONTAINERS": str(WARM_DEFAULT)}  # whatever this shell has
    configs = [
        Config(
            "process",
            "SLUICE_EXECUTOR=process",
            work / "data-process",
            {"SLUICE_EXECUTOR": "process"},
            network=False,
            containers=False,
        ),
        Config(
            "warm",
            f"SLUICE_WARM_CONTAINERS={WARM_DEFAULT} (the default), network off",
            work / "data-warm",
            warm_env,
            network=False,
            containers=True,
        ),
        Config(
            "cold",
            "SLUICE_WARM_CONTAINERS=0 (a fresh container per job), network off",
            work / "data-cold",
            {**engine.server_env, "SLUICE_WARM_CONTAINERS": "0"},
            network=False,
            containers=True,
        ),
    ]
    if network:
        configs.append(
            Config(
                "warm+net",
                f"SLUICE_WARM_CONTAINERS={WARM_DEFAULT} (the default), network on",
                work / "data-warm-net",
                warm_env,
                network=True,
                containers=True,
            )
        )
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--jobs", type=int, default=30, help="jobs run one at a time for latency (default 30)"
    )
    parser.add_argument(
        "--calls", type=int, default=30, help="synchronous calls made one at a time (default 30)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="uncounted jobs, and calls, before them (default 2)"
    )
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
        help="also measure warm containers with the service's network on (podman's default network)",
    )
    args = parser.parse_args()
    if min(args.jobs, args.calls, args.burst, args.workers) < 1 or args.warmup < 0 or args.poll <= 0:
        parser.error(
            "--jobs, --calls, --burst and --workers must be at least 1, --warmup 0 or more, --poll above 0"
        )

    with tempfile.TemporaryDirectory(prefix="sluice-bench-ctr-") as tmp:
        work = Path(tmp)
        engine = Podman.for_tests(work)  # containers.conf for this machine; builds the image once
        configs = configurations(work, engine, args.network)
        try:
            results = [measure(config, engine, args) for config in configs]
            report(results, args)
        finally:
            # Other servers on this machine (tests running meanwhile) label their containers too:
            # only ours count, and the others are named. Checked even when a measure failed.
            ours = [
                c
                for config in configs
                if config.containers
                for c in engine.containers(f"{OWNER_LABEL}={owner_of(config.data_dir)}")
            ]
            others = [c for c in engine.containers(OWNER_LABEL) if c not in ours]
            print()
            if ours:
                print(f"containers of this run labelled {OWNER_LABEL} remain after it: {ours}")
            else:
                print(f"containers of this run labelled {OWNER_LABEL} left after it: none")
            if others:
                print(f"(containers of other servers on this machine, not this run's: {others})")
    if ours:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
