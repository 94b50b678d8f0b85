"""Synchronous inference through Sluice beside its floor and its rivals, in one run.

    .venv/bin/python benchmarks/sync.py [--requests 2000] [--concurrency 1 8 32] [--no-ray]
    .venv/bin/python benchmarks/sync.py --batch-only    # only the batching rows (5. below)

For two handlers (an echo, and the digits ONNX model of `examples/digits-handler`), the same
load generator (aiohttp, N calls in flight) measures p50/p99 latency and throughput of:

1. bare: a raw ASGI app on uvicorn (httptools, uvloop) calling the handler in-process: the floor;
2. sluice: `POST /run/{svc}` on a real `sluice serve`, the handler in one warm replica;
3. ray: Ray Serve serving the same handler (one replica), through its HTTP proxy;
4. script: Sluice running the same model as an OSCAR-style script per request (`/run` on a
   script service: a process and a model load per call), at concurrency 1 and 8 only;
5. sluice-batch8, sluice-batch32: the digits model as a batch handler (`batch: {max_size: 8,
   max_wait_ms: 2}` and `{max_size: 32, max_wait_ms: 5}`: one ONNX run per batch), beside the
   unbatched one (row 2), after checking both give the same answers.

Also: the server's CPU time per call (sluice server + replica, from /proc), which bounds
requests per core; and scale from zero (a call to a service whose replicas all stopped) beside
the model's own load time. Needs `pip install "ray[serve]"` for the Ray column (`make bench-sync`
installs it and runs this).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sluice.spec.code import pack_code
from tests.pg import free_port
from tests.server import PASSWORD, ServerProcess

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = (ROOT / "examples/digits/samples/digit-1579-0.csv").read_bytes()
READY_DEADLINE = 120.0
MODEL_LOAD_TIME = (
    "import time; t = time.perf_counter(); from sluice.demo import digits; digits.load_session(); "
    "print(time.perf_counter() - t)"
)

ECHO_CODE = """
def handle(request):
    return request.body
"""
# The digits handler of examples/digits-handler as a batch handler: one ONNX run per batch, one
# result per request in `digits.predict`'s shape. A body of BATCH_SIZES_PROBE answers instead how
# many batches of each size it ran since the last probe, to tell whether batches really formed.
BATCH_SIZES_PROBE = b"batch-sizes"
BATCH_DIGITS_CODE = """
import collections

import numpy as np

from sluice.demo import digits
from sluice.handler import Response


class State:
    def __init__(self):
        self.session = digits.load_session()
        self.input_name = self.session.get_inputs()[0].name
        self.sizes = collections.Counter()


def load():
    return State()


def handle(requests):
    state = requests[0].state
    results = [None] * len(requests)
    rows, positions = [], []
    for position, request in enumerate(requests):
        if request.body == b"batch-sizes":  # BATCH_SIZES_PROBE
            results[position] = dict(state.sizes)
            state.sizes.clear()
            continue
        try:
            rows.append(digits.parse_input(request.body))
        except ValueError as exc:  # refused alone, not with its batch
            results[position] = Response(str(exc), "text/plain", status=400)
            continue
        positions.append(position)
    if rows:
        state.sizes[len(rows)] += 1
        labels, probabilities = state.session.run(
            [digits.LABEL_OUTPUT, digits.PROBABILITIES_OUTPUT], {state.input_name: np.concatenate(rows)}
        )
        for position, label, row in zip(positions, labels, probabilities):
            results[position] = {
                "label": int(label),
                "probabilities": {str(digit): round(float(p), 4) for digit, p in enumerate(row)},
            }
    return results
"""
# The handlers every system runs: the same functions, imported the same way.
HANDLERS = {
    "echo": {"module": "bench_echo", "code": ECHO_CODE, "init": None, "body": b"x" * 64},
    "digits": {"module": "digits_handler", "code": None, "init": "load", "body": SAMPLE},
    "digits-batch": {
        "module": "bench_digits_batch",
        "code": BATCH_DIGITS_CODE,
        "init": "load",
        "body": SAMPLE,
    },
}
# Batched systems beside the unbatched "sluice" digits rows; each is one replica (min_scale 1,
# max_scale 1) with `synchronous.concurrency` 32, at least every max_size.
BATCHES = {
    "sluice-batch8": {"max_size": 8, "max_wait_ms": 2},
    "sluice-batch32": {"max_size": 32, "max_wait_ms": 5},
}
NOISE = 0.1  # batched / unbatched calls/s within 10% of 1 reads as no change: runs differ that much
BARE_APP = """
import importlib, sys
sys.path.insert(0, sys.argv[1])
from sluice.handler import Request
from sluice.replicas.child import answer
module = importlib.import_module(sys.argv[2])
init = getattr(module, sys.argv[3]) if sys.argv[3] != "-" else None
state = init() if init else None
handle = getattr(module, "classify" if hasattr(module, "classify") else "handle")

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status, content_type, data = answer(handle(Request(body=body, state=state)))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})

import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[4]), loop="uvloop", http="httptools",
            log_level="warning")
"""
RAY_APP = """
import importlib, sys, time
sys.path.insert(0, sys.argv[1])
import ray
from ray import serve
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response
from sluice.handler import Request
from sluice.replicas.child import answer

ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[4])})

@serve.deployment(num_replicas=1, max_ongoing_requests=32)
class Model:
    def __init__(self, folder, module, init_name):  # runs in the replica actor's own process
        sys.path.insert(0, folder)
        self.module = importlib.import_module(module)
        init = getattr(self.module, init_name) if init_name != "-" else None
        self.state = init() if init else None
        self.handle = getattr(self.module, "classify" if hasattr(self.module, "classify") else "handle")

    async def __call__(self, request: StarletteRequest):
        body = await request.body()
        status, content_type, data = answer(self.handle(Request(body=body, state=self.state)))
        return Response(data, status_code=status, media_type=content_type)

serve.run(Model.bind(sys.argv[1], sys.argv[2], sys.argv[3]), route_prefix="/model")
print("READY", flush=True)
while True:
    time.sleep(60)
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def load(
    url: str, body: bytes, headers: dict[str, str], requests: int, concurrency: int
) -> dict[str, float]:
    """`requests` POSTs, `concurrency` at a time; latency percentiles (ms) and calls/s."""
    print(f"  {url}: {requests} calls, {concurrency} at a time", file=sys.stderr, flush=True)
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm-up: connections open, caches hot.
        for _ in range(min(50, requests)):
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
        remaining = requests

        async def worker() -> None:
            nonlocal remaining, failures
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=600)
        elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{failures} of {requests} calls to {url} failed")
    return {
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "rps": len(latencies) / elapsed,
    }


def wait_http(url: str, body: bytes, process: subprocess.Popen[bytes], what: str) -> None:
    """Until a real call is answered with 200."""
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early with code {process.returncode}")
        try:
            if httpx.post(url, content=body, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready in {READY_DEADLINE:g} s")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (from /proc), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def code_folder(work: Path, kind: str, label: str) -> Path:
    folder = work / f"code-{label}"
    folder.mkdir()
    handler = HANDLERS[kind]
    if handler["code"]:
        (folder / f"{handler['module']}.py").write_text(textwrap.dedent(handler["code"]))
    else:
        source = ROOT / "examples/digits-handler/code/digits_handler.py"
        (folder / source.name).write_text(source.read_text())
    return folder


class Sluice:
    def __init__(self, work: Path) -> None:
        self.server = ServerProcess(work / "sluice-data", env={"SLUICE_WORKERS": "2"})
        self.http: httpx.Client | None = None

    def start(self) -> None:
        self.server.start()
        self.http = httpx.Client(base_url=self.server.endpoint, auth=("oscar", PASSWORD), timeout=60)

    def create(self, spec: dict[str, object]) -> str:
        assert self.http is not None
        created = self.http.post("/system/services", json=spec)
        created.raise_for_status()
        return created.json()["token"]

    def replicas(self, name: str) -> dict[str, object]:
        assert self.http is not None
        return self.http.get(f"/v1/services/{name}/replicas").json()

    def pids(self, name: str) -> list[int]:
        assert self.server.process is not None
        return [self.server.process.pid, *(r["pid"] for r in self.replicas(name)["replicas"])]  # type: ignore[index]

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        self.server.stop()


def handler_spec(
    name: str, kind: str, work: Path, batch: dict[str, float] | None = None, **synchronous: object
) -> dict[str, object]:
    handler = HANDLERS[kind]
    function = "classify" if kind == "digits" else "handle"
    spec: dict[str, object] = {
        "name": name,
        "image": "python",
        "memory": "1Gi",
        "handler": f"{handler['module']}:{function}",
        "code": pack_code(code_folder(work, kind, name)),
        "synchronous": {"min_scale": 1, "max_scale": 1, "concurrency": 32, **synchronous},
    }
    if handler["init"]:
        spec["init"] = f"{handler['module']}:{handler['init']}"
    if batch:
        spec["batch"] = batch
    return spec


def start_app(source: str, work: Path, kind: str, port: int, name: str) -> subprocess.Popen[bytes]:
    script = work / f"{name}.py"
    script.write_text(source)
    handler = HANDLERS[kind]
    folder = code_folder(work, kind, name)
    return subprocess.Popen(
        [sys.executable, str(script), str(folder), handler["module"], handler["init"] or "-", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(work / f"{name}.log").open("wb"),
        start_new_session=True,
    )


def stop_app(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def measure_all(args: argparse.Namespace, work: Path) -> None:
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    cpu_per_call: dict[tuple[str, str], float] = {}
    sluice = Sluice(work)
    sluice.start()
    try:
        if args.cold_only:
            report(args, results, cpu_per_call, scale_from_zero(sluice, work), {})
            return
        if args.batch_only:
            batch_sizes = measure_batching(args, sluice, work, results)
            report(args, results, cpu_per_call, None, batch_sizes)
            return
        for kind in ("echo", "digits"):
            body = HANDLERS[kind]["body"]
            # 1. the floor
            port = free_port()
            bare = start_app(BARE_APP, work, kind, port, f"bare-{kind}")
            try:
                floor = f"http://127.0.0.1:{port}/"
                wait_http(floor, body, bare, "the bare app")
                measure_rows(
                    args,
                    results,
                    cpu_per_call,
                    ("bare", kind),
                    floor,
                    body,
                    {},
                    functools.partial(list, [bare.pid]),
                )
            finally:
                stop_app(bare)
            # 2. sluice, one warm replica
            name = f"bench-{kind}"
            token = sluice.create(handler_spec(name, kind, work))
            url = f"{sluice.server.endpoint}/run/{name}"
            headers = {"Authorization": f"Bearer {token}"}
            row = ("sluice", kind)
            measure_rows(
                args, results, cpu_per_call, row, url, body, headers, functools.partial(sluice.pids, name)
            )
            # 3. ray serve
            if args.ray:
                port = free_port()
                ray = start_app(RAY_APP, work, kind, port, f"ray-{kind}")
                try:
                    wait_http(f"http://127.0.0.1:{port}/model", body, ray, "Ray Serve")
                    for concurrency in args.concurrency:
                        results[("ray", kind, concurrency)] = run(
                            load(f"http://127.0.0.1:{port}/model", body, {}, args.requests, concurrency)
                        )
                finally:
                    stop_app(ray)
                    ray_cli = str(Path(sys.executable).parent / "ray")
                    subprocess.run(
                        [ray_cli, "stop", "--force"], capture_output=True, check=False, timeout=120
                    )
        # 5. the digits model batched, beside its unbatched rows of 2.
        batch_sizes = measure_batching(args, sluice, work, results)
        # 4. the model as an OSCAR-style script, per request
        script = 'python -m sluice.demo.digits "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/out.json"\n'
        token = sluice.create(
            {"name": "bench-script", "image": "python", "script": script, "memory": "1Gi", "cpu": "1"}
        )
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/octet-stream",
            "Accept": "application/json",
        }
        for concurrency in args.concurrency:
            # At least two calls per caller, so every one of them has a call in flight.
            results[("script", "digits", concurrency)] = run(
                load(
                    f"{sluice.server.endpoint}/run/bench-script",
                    SAMPLE,
                    headers,
                    max(args.script_requests, 2 * concurrency),
                    concurrency,
                )
            )
        cold = scale_from_zero(sluice, work)
    finally:
        sluice.stop()
    report(args, results, cpu_per_call, cold, batch_sizes)


def measure_batching(
    args: argparse.Namespace,
    sluice: Sluice,
    work: Path,
    results: dict[tuple[str, str, int], dict[str, float]],
) -> dict[tuple[str, int], float]:
    """The BATCHES rows of the digits model, beside the unbatched "sluice" rows; the calls per
    ONNX run each row saw, by (system, concurrency).

    Without the unbatched rows yet (--batch-only), they are measured here, interleaved with the
    batched ones concurrency by concurrency, so a machine that gets busier part-way through skews
    all systems alike."""
    assert sluice.http is not None
    unbatched_measured = ("sluice", "digits", args.concurrency[0]) in results
    if unbatched_measured:
        token = sluice.http.get("/system/services/bench-digits").raise_for_status().json()["token"]
    else:
        token = sluice.create(handler_spec("bench-digits", "digits", work))
    urls = {"sluice": f"{sluice.server.endpoint}/run/bench-digits"}
    headers = {"sluice": {"Authorization": f"Bearer {token}"}}
    for system, batch in BATCHES.items():
        token = sluice.create(handler_spec(f"bench-{system}", "digits-batch", work, batch=batch))
        urls[system] = f"{sluice.server.endpoint}/run/bench-{system}"
        headers[system] = {"Authorization": f"Bearer {token}"}
    check_batch_answers(urls, headers)
    sizes: dict[tuple[str, int], float] = {}
    for concurrency in args.concurrency:
        for system, url in urls.items():
            if system == "sluice" and unbatched_measured:
                continue
            if system in BATCHES:
                probe_batch_sizes(url, headers[system])  # reset its count
            results[(system, "digits", concurrency)] = run(
                load(url, SAMPLE, headers[system], args.requests, concurrency)
            )
            if system in BATCHES:
                counts = probe_batch_sizes(url, headers[system])
                # load() warms up with min(50, requests) calls one after the other: batches of 1.
                counts[1] -= min(50, args.requests)
                runs = sum(counts.values())
                sizes[(system, concurrency)] = sum(s * n for s, n in counts.items()) / runs if runs else 0.0
    return sizes


def probe_batch_sizes(url: str, headers: dict[str, str]) -> dict[int, int]:
    """How many batches of each size the batch handler ran since the last probe (which resets it)."""
    answered = httpx.post(url, content=BATCH_SIZES_PROBE, headers=headers, timeout=60)
    answered.raise_for_status()
    counts = {int(size): n for size, n in answered.json().items()}
    counts.setdefault(1, 0)
    return counts


def check_batch_answers(urls: dict[str, str], headers: dict[str, dict[str, str]]) -> None:
    """Every sample digit gets the same answer from each batched service as from the unbatched
    one ("sluice"): sent all at once, so that they share batches, each must come back to its caller."""
    samples = sorted((ROOT / "examples/digits/samples").glob("*.csv"))
    bodies = [sample.read_bytes() for sample in samples]
    with httpx.Client(timeout=60) as client:
        expected = []
        for body in bodies:
            answered = client.post(urls["sluice"], content=body, headers=headers["sluice"])
            answered.raise_for_status()
            expected.append(answered.json())

    async def all_at_once(url: str, system_headers: dict[str, str]) -> list[dict[str, object]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(bodies))) as session:

            async def one(body: bytes) -> dict[str, object]:
                async with session.post(url, data=body, headers=system_headers) as response:
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
                    return await response.json()

            return await asyncio.wait_for(asyncio.gather(*(one(body) for body in bodies)), timeout=60)

    for system in BATCHES:
        probe_batch_sizes(urls[system], headers[system])  # reset
        answers = run(all_at_once(urls[system], headers[system]))
        seen = probe_batch_sizes(urls[system], headers[system])
        for sample, want, got in zip(samples, expected, answers, strict=True):
            close = want.keys() == got.keys() and want["probabilities"].keys() == got["probabilities"].keys()
            close = close and all(
                abs(want["probabilities"][d] - got["probabilities"][d]) <= 1e-3 for d in want["probabilities"]
            )
            if want["label"] != got["label"] or not close:
                raise RuntimeError(f"{system} answered {got} for {sample.name}; the unbatched handler {want}")
        print(
            f"  {system}: the {len(samples)} samples sent at once got the unbatched handler's labels "
            f"({', '.join(str(answer['label']) for answer in answers)}); batch sizes "
            f"{ {size: n for size, n in sorted(seen.items()) if n} }",
            file=sys.stderr,
            flush=True,
        )


def measure_rows(
    args: argparse.Namespace,
    results: dict[tuple[str, str, int], dict[str, float]],
    cpu_per_call: dict[tuple[str, str], float],
    row: tuple[str, str],
    url: str,
    body: bytes,
    headers: dict[str, str],
    pids: Callable[[], list[int]],
) -> None:
    """One system's row at each concurrency, then its CPU per call (8 in flight) from the
    processes `pids()` names once those rows ran (a replica is running by then)."""
    system, kind = row
    for concurrency in args.concurrency:
        results[(system, kind, concurrency)] = run(load(url, body, headers, args.requests, concurrency))
    processes = pids()
    before = cpu_seconds(processes)
    run(load(url, body, headers, args.requests, 8))
    cpu_per_call[row] = (cpu_seconds(processes) - before) / args.requests


def scale_from_zero(sluice: Sluice, work: Path) -> dict[str, float]:
    """Cold calls to services scaled to zero, beside the model's own load time.

    One HTTP client (connection kept open) makes every call: a fresh `httpx.post` builds an SSL
    context first, 20-40 ms here, which an earlier version of this script counted as cold start.
    """
    out: dict[str, float] = {}
    with httpx.Client(timeout=60) as client:
        for kind in ("echo", "digits"):
            name = f"cold-{kind}"
            token = sluice.create(handler_spec(name, kind, work, min_scale=0, idle_timeout=0.5))
            url = f"{sluice.server.endpoint}/run/{name}"
            headers = {"Authorization": f"Bearer {token}"}
            body = HANDLERS[kind]["body"]
            samples, server_side = [], []
            for _ in range(5):
                deadline = time.monotonic() + 30
                while sluice.replicas(name)["ready"] and time.monotonic() < deadline:  # type: ignore[index]
                    time.sleep(0.2)
                started = time.perf_counter()
                client.post(url, content=body, headers=headers).raise_for_status()
                samples.append(time.perf_counter() - started)
                server_side.append(float(sluice.replicas(name)["last_cold_start_seconds"]))  # type: ignore[arg-type]
            warm = []
            for _ in range(20):  # the same client's warm calls, for comparison
                started = time.perf_counter()
                client.post(url, content=body, headers=headers).raise_for_status()
                warm.append(time.perf_counter() - started)
            out[kind] = statistics.median(samples) * 1000
            out[f"{kind}_replica_start"] = statistics.median(server_side) * 1000
            out[f"{kind}_warm"] = statistics.median(warm) * 1000
    # The load alone, in a fresh interpreter each time, as often as the cold calls were made: one
    # sample of it swung between 99 and 202 ms from run to run on these machines.
    loads = [
        float(
            subprocess.run(
                [sys.executable, "-c", MODEL_LOAD_TIME], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(5)
    ]
    out["model_load"] = statistics.median(loads) * 1000
    return out


def report(
    args: argparse.Namespace,
    results: dict[tuple[str, str, int], dict[str, float]],
    cpu_per_call: dict[tuple[str, str], float],
    cold: dict[str, float] | None,
    batch_sizes: dict[tuple[str, int], float],
) -> None:
    print("\n| handler | system | concurrency | p50 ms | p99 ms | calls/s |")
    print("|---|---|---|---|---|---|")
    for (system, kind, concurrency), r in sorted(
        results.items(), key=lambda item: (item[0][1], item[0][2], item[0][0])
    ):
        print(f"| {kind} | {system} | {concurrency} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} |")
    print()
    for kind in ("echo", "digits"):
        bare, sluice = results.get(("bare", kind, 1)), results.get(("sluice", kind, 1))
        if bare and sluice:
            print(
                f"{kind}: added over bare at concurrency 1: p50 {sluice['p50'] - bare['p50']:+.2f} ms, "
                f"p99 {sluice['p99'] - bare['p99']:+.2f} ms (targets: 0.5 and 2)"
            )
        for concurrency in args.concurrency:
            ray, ours = results.get(("ray", kind, concurrency)), results.get(("sluice", kind, concurrency))
            if ray and ours:
                print(
                    f"{kind}: sluice / ray throughput at concurrency {concurrency}: "
                    f"{ours['rps'] / ray['rps']:.2f}x (target 2x)"
                )
        for system in ("bare", "sluice"):
            cpu = cpu_per_call.get((system, kind))
            if cpu:
                print(
                    f"{kind}: {system} CPU per call {cpu * 1e6:.0f} us -> "
                    f"{1 / cpu:.0f} calls per CPU-second (target 5000)"
                )
    report_batching(args, results, batch_sizes)
    if cold is None:
        return
    print(
        f"scale from zero (median of 5 cold calls): echo {cold['echo']:.0f} ms, "
        f"digits {cold['digits']:.0f} ms; "
        f"the digits model alone loads in {cold['model_load']:.0f} ms "
        "(median of 5; target: 50 ms plus the load)"
    )
    print(
        f"  the replica's start (server side, init included): echo {cold['echo_replica_start']:.0f} ms, "
        f"digits {cold['digits_replica_start']:.0f} ms; a warm call with the same client: "
        f"echo {cold['echo_warm']:.1f} ms, digits {cold['digits_warm']:.1f} ms"
    )


def report_batching(
    args: argparse.Namespace,
    results: dict[tuple[str, str, int], dict[str, float]],
    batch_sizes: dict[tuple[str, int], float],
) -> None:
    """Per concurrency: each batched system's calls/s and p50 against the unbatched digits rows."""
    for concurrency in args.concurrency:
        unbatched = results.get(("sluice", "digits", concurrency))
        if not unbatched:
            continue
        parts, helped = [], []
        for system in BATCHES:
            batched = results.get((system, "digits", concurrency))
            if not batched:
                continue
            throughput = batched["rps"] / unbatched["rps"]
            if throughput > 1 + NOISE:
                helped.append(system)
                effect = "more"
            else:
                effect = "fewer" if throughput < 1 - NOISE else f"same within {NOISE:.0%}"
            latency = batched["p50"] / unbatched["p50"]
            parts.append(
                f"{system} calls/s {throughput:.2f}x ({effect}), p50 {latency:.2f}x "
                f"({batched['p50']:.2f} against {unbatched['p50']:.2f} ms), "
                f"{batch_sizes.get((system, concurrency), 0):.1f} calls per model run"
            )
        if parts:
            print(
                f"digits at concurrency {concurrency}, batched / unbatched: {'; '.join(parts)}. "
                f"Batching helped throughput: {'yes (' + ', '.join(helped) + ')' if helped else 'no'}"
            )


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="calls per measurement (default 2000)")
    parser.add_argument(
        "--script-requests", type=int, default=40, help="calls for the script-per-request row"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="calls in flight")
    parser.add_argument("--no-ray", dest="ray", action="store_false", help="skip Ray Serve")
    parser.add_argument(
        "--cold-only", action="store_true", help="only the scale-from-zero measurement (no load rows)"
    )
    parser.add_argument(
        "--batch-only",
        action="store_true",
        help="only the batching rows: the digits model unbatched and batched (no Ray, no cold starts)",
    )
    args = parser.parse_args()
    if args.cold_only and args.batch_only:
        parser.error("give --cold-only or --batch-only, not both")
    if args.ray and not (args.cold_only or args.batch_only):
        try:
            import ray  # noqa: F401
            from ray import serve  # noqa: F401
        except ImportError:
            parser.error('Ray Serve is not installed: pip install "ray[serve]" (or pass --no-ray)')
    with tempfile.TemporaryDirectory(prefix="sluice-bench-sync-") as work:
        measure_all(args, Path(work))


if __name__ == "__main__":
    main()
