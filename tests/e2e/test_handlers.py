"""Handler services against a real server: warm replica processes running the service's own
Python code, `init` once per replica, result types and errors, autoscaling (up, down, to zero),
503/504/502, async jobs through the replicas, code folders applied by the CLI, batching, the
/run fast path's auth and body limit, and `sluice replicas`.

One server for most tests; a second small one with a one-call waiting room and a 4 KiB body
limit for the overflow and auth tests. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from sluice.client import Client
from sluice.spec.code import pack_code
from tests.server import PASSWORD, ServerProcess, wait_for_jobs

ADMIN = ("oscar", PASSWORD)
T = TypeVar("T")

# The main server's handler code: one module, several entry points.
HANDLERS = textwrap.dedent(
    """\
    import os
    import time

    from sluice.handler import HTTPError, Response

    INITS = 0


    def load():
        global INITS
        INITS += 1
        log = os.environ.get("INIT_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()}\\n")
        if os.environ.get("INIT_FAILS"):
            raise RuntimeError("weights.onnx is missing")
        time.sleep(float(os.environ.get("INIT_SLEEP", "0")))
        return {"pid": os.getpid(), "inits": INITS}


    def echo(request):
        return {"pid": os.getpid(), "state": request.state, "text": request.text()}


    def kinds(request):
        kind = request.params.get("kind")
        if kind == "dict":
            return {"label": 7, "scores": [0.1, 0.9]}
        if kind == "str":
            return "héllo"
        if kind == "bytes":
            return b"\\x00\\x01\\xff"
        if kind == "response":
            return Response(b"\\x89PNG fake", "image/png", 201)
        if kind == "refuse":
            raise HTTPError(422, "bad pixels")
        if kind == "fail":
            raise ValueError("no pixel at (3, 4)")
        return {
            "body": request.text(),
            "content_type": request.content_type,
            "headers": request.headers,
            "params": request.params,
        }


    def work(request):
        text = request.text()
        if text == "crash":
            os._exit(3)
        seconds = 30.0 if text == "hang" else float(request.params.get("sleep", "0"))
        time.sleep(seconds)
        return {"pid": os.getpid(), "text": text}


    def job(request):
        return {
            "pid": os.getpid(),
            "inits": request.state["inits"],
            "content_type": request.content_type,
            "text": request.text(),
        }


    def batched(requests):
        return [{"size": len(requests), "text": r.text()} for r in requests]
    """
)

# The small server's code: its definitions must fit under its 4 KiB body limit.
SMALL_HANDLER = textwrap.dedent(
    """\
    import os
    import time


    def work(request):
        time.sleep(float(request.params.get("sleep", "0")))
        return {"pid": os.getpid(), "size": len(request.body)}
    """
)


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """Poll `probe` until `done(value)`; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last: {value}")
        time.sleep(0.1)
        value = probe()
    return value


def replica_processes(data_dir: Path) -> list[int]:
    """Live replica processes of the server whose data folder is `data_dir`."""
    data_dir = data_dir.resolve()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"sluice.replicas.child" in (proc / "cmdline").read_bytes() and Path(
                os.readlink(proc / "cwd")
            ).is_relative_to(data_dir):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile, or a zombie
            continue
    return found


def packed(folder: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pack_code(folder)


# servers and clients


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"SLUICE_WORKERS": "4", "SLUICE_RETRY_BASE_DELAY": "0.2"}
    process = ServerProcess(tmp_path_factory.mktemp("handlers") / "data", env=env).start()
    try:
        yield process
    finally:
        process.stop()
    # Whatever happened in the tests, a stopped server leaves no replica running.
    wait_until(lambda: replica_processes(process.data_dir), lambda pids: pids == [], 10, "replicas gone")


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.endpoint, auth=ADMIN, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> str:
    return packed(tmp_path_factory.mktemp("code"), {"handlers.py": HANDLERS})


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"SLUICE_WORKERS": "2", "SLUICE_SYNC_MAX_WAITING": "1", "SLUICE_MAX_BODY": "4096"}
    process = ServerProcess(tmp_path_factory.mktemp("handlers-small") / "data", env=env).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def small_http(small: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small.endpoint, auth=ADMIN, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def small_code(tmp_path_factory: pytest.TempPathFactory) -> str:
    return packed(tmp_path_factory.mktemp("small-code"), {"small.py": SMALL_HANDLER})


# helpers


def create(http: httpx.Client, name: str, handler: str, **fields: Any) -> str:
    """Create a handler service; returns its token."""
    spec = {"name": name, "image": "python", "handler": handler, **fields}
    created = http.post("/system/services", json=spec)
    assert created.status_code == 201, created.text
    return created.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def status_of(http: httpx.Client, name: str) -> dict[str, Any]:
    answer = http.get(f"/v1/services/{name}/replicas")
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_ready(http: httpx.Client, name: str, count: int = 1, timeout: float = 20) -> dict[str, Any]:
    """Until exactly `count` replicas run, all ready."""
    return wait_until(
        lambda: status_of(http, name),
        lambda s: s["ready"] == count and len(s["replicas"]) == count,
        timeout,
        f"{name}: {count} ready replica(s)",
    )


def call_all(url: str, token: str, bodies: list[bytes], timeout: float = 30) -> list[httpx.Response]:
    """POST every body at once, one thread each."""

    def one(body: bytes) -> httpx.Response:
        return httpx.post(url, content=body, headers=bearer(token), timeout=timeout)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


# warm replicas and what handlers return


def test_init_runs_once_per_replica_across_many_calls(
    http: httpx.Client, server: ServerProcess, code: str, tmp_path: Path
) -> None:
    init_log = tmp_path / "inits"
    token = create(
        http,
        "hd-once",
        "handlers:echo",
        init="handlers:load",
        code=code,
        environment={"variables": {"INIT_LOG": str(init_log)}},
        synchronous={"max_scale": 1},
    )
    answers = []
    with httpx.Client(base_url=server.endpoint, headers=bearer(token), timeout=30) as caller:
        for i in range(100):
            answer = caller.post("/run/hd-once", content=f"input {i}".encode())
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
    assert [a["text"] for a in answers] == [f"input {i}" for i in range(100)]
    pids = {a["pid"] for a in answers}
    assert len(pids) == 1
    (pid,) = pids
    # init ran once, in that replica, and every call saw what it returned.
    assert init_log.read_text().split() == [str(pid)]
    assert all(a["state"] == {"pid": pid, "inits": 1} for a in answers)
    status = status_of(http, "hd-once")
    assert status["calls"] == 100
    assert status["failures"] == 0
    assert status["cold_starts"] == 1
    assert [r["pid"] for r in status["replicas"]] == [pid]


def test_results_become_typed_http_answers_and_errors_keep_their_status(
    http: httpx.Client, server: ServerProcess, code: str
) -> None:
    token = create(http, "hd-kinds", "handlers:kinds", code=code)
    url = f"{server.endpoint}/run/hd-kinds"

    def run(kind: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(url, params={"kind": kind}, headers=bearer(token), timeout=30, **kwargs)

    as_dict = run("dict", content=b"{}")
    assert as_dict.status_code == 200, as_dict.text
    assert as_dict.headers["content-type"] == "application/json"
    assert as_dict.json() == {"label": 7, "scores": [0.1, 0.9]}

    as_str = run("str", content=b"")
    assert as_str.status_code == 200
    assert as_str.headers["content-type"].startswith("text/plain")
    assert as_str.text == "héllo"

    as_bytes = run("bytes", content=b"")
    assert as_bytes.headers["content-type"] == "application/octet-stream"
    assert as_bytes.content == b"\x00\x01\xff"

    explicit = run("response", content=b"")
    assert explicit.status_code == 201
    assert explicit.headers["content-type"] == "image/png"
    assert explicit.content == b"\x89PNG fake"

    refused = run("refuse", content=b"")
    assert refused.status_code == 422
    assert "bad pixels" in refused.text

    failed = run("fail", content=b"")
    assert failed.status_code == 500
    assert "ValueError" in failed.text
    assert "no pixel at (3, 4)" in failed.text

    # The request object: body, content type, headers (never the credentials) and query params.
    seen = httpx.post(
        url,
        params={"kind": "request", "threshold": "0.5"},
        content=b"a,b\n1,2\n",
        headers={**bearer(token), "Content-Type": "text/csv", "X-Trace": "abc-123"},
        timeout=30,
    )
    assert seen.status_code == 200, seen.text
    request = seen.json()
    assert request["body"] == "a,b\n1,2\n"
    assert request["content_type"] == "text/csv"
    assert request["params"] == {"kind": "request", "threshold": "0.5"}
    assert request["headers"]["x-trace"] == "abc-123"
    assert "authorization" not in {k.lower() for k in request["headers"]}
    # The replica carried on after the failures.
    status = status_of(http, "hd-kinds")
    assert status["calls"] == 7
    assert status["failures"] == 2  # the handler's 422 and 500
    assert status["cold_starts"] == 1


# scaling


def test_replicas_scale_up_under_load_and_back_down_to_min_scale(
    http: httpx.Client, server: ServerProcess, code: str
) -> None:
    token = create(
        http,
        "hd-scale",
        "handlers:work",
        code=code,
        synchronous={"min_scale": 1, "max_scale": 3, "concurrency": 1, "idle_timeout": 1},
    )
    first = wait_ready(http, "hd-scale")  # warmed when it was created
    assert first["cold_starts"] == 1
    answers = call_all(f"{server.endpoint}/run/hd-scale?sleep=0.3", token, [b"%d" % i for i in range(6)])
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert sorted(a.json()["text"] for a in answers) == [str(i) for i in range(6)]
    pids = {a.json()["pid"] for a in answers}
    assert len(pids) > 1, "6 concurrent calls of 0.3 s were all answered by one replica"
    loaded = status_of(http, "hd-scale")
    assert 1 < loaded["cold_starts"] <= 3
    assert loaded["calls"] == 6
    # Idle for a second, the extra replicas stop; min_scale keep running.
    settled = wait_ready(http, "hd-scale", 1, timeout=20)
    assert settled["in_flight"] == 0
    assert settled["waiting"] == 0
    assert settled["replicas"][0]["pid"] in pids


def test_scale_to_zero_and_a_cold_start_on_the_next_call(
    http: httpx.Client, server: ServerProcess, code: str
) -> None:
    token = create(
        http, "hd-zero", "handlers:work", code=code, synchronous={"min_scale": 0, "idle_timeout": 1}
    )
    assert status_of(http, "hd-zero")["replicas"] == []  # nothing runs before the first call
    url = f"{server.endpoint}/run/hd-zero"
    first = httpx.post(url, content=b"one", headers=bearer(token), timeout=30)
    assert first.status_code == 200, first.text
    assert status_of(http, "hd-zero")["cold_starts"] == 1
    wait_until(
        lambda: status_of(http, "hd-zero"),
        lambda s: s["replicas"] == [] and s["ready"] == 0 and s["starting"] == 0,
        20,
        "hd-zero scaled to zero",
    )
    second = httpx.post(url, content=b"two", headers=bearer(token), timeout=30)
    assert second.status_code == 200, second.text
    assert second.json()["text"] == "two"
    assert second.json()["pid"] != first.json()["pid"]
    status = status_of(http, "hd-zero")
    assert status["cold_starts"] == 2
    assert status["last_cold_start_seconds"] is not None


# failures


def test_a_call_past_its_timeout_answers_504_and_its_replica_is_replaced(
    http: httpx.Client, server: ServerProcess, code: str
) -> None:
    token = create(
        http, "hd-hang", "handlers:work", code=code, timeout=1, synchronous={"min_scale": 1, "max_scale": 1}
    )
    old_pid = wait_ready(http, "hd-hang")["replicas"][0]["pid"]
    url = f"{server.endpoint}/run/hd-hang"
    hung = httpx.post(url, content=b"hang", headers=bearer(token), timeout=30)
    assert hung.status_code == 504, hung.text
    assert "1 s timeout" in hung.text
    # The stuck replica was killed; min_scale brings up another.
    replaced = wait_until(
        lambda: status_of(http, "hd-hang"),
        lambda s: s["ready"] == 1 and s["replicas"][0]["pid"] != old_pid,
        20,
        "hd-hang's replica replaced",
    )
    assert "timeout" in replaced["last_error"]
    after = httpx.post(url, content=b"fine", headers=bearer(token), timeout=30)
    assert after.status_code == 200, after.text
    assert after.json() == {"pid": replaced["replicas"][0]["pid"], "text": "fine"}
    assert after.json()["pid"] != old_pid


def test_a_replica_that_dies_mid_call_answers_502_and_the_next_call_succeeds(
    http: httpx.Client, server: ServerProcess, code: str
) -> None:
    token = create(http, "hd-crash", "handlers:work", code=code, synchronous={"max_scale": 1})
    url = f"{server.endpoint}/run/hd-crash"
    before = httpx.post(url, content=b"before", headers=bearer(token), timeout=30)
    assert before.status_code == 200, before.text
    crashed = httpx.post(url, content=b"crash", headers=bearer(token), timeout=30)
    assert crashed.status_code == 502, crashed.text
    assert "exited (code 3)" in crashed.text
    after = httpx.post(url, content=b"after", headers=bearer(token), timeout=30)
    assert after.status_code == 200, after.text
    assert after.json()["text"] == "after"
    assert after.json()["pid"] != before.json()["pid"]
    status = status_of(http, "hd-crash")
    assert "exited (code 3)" in status["last_error"]
    assert status["failures"] == 1
    assert status["cold_starts"] == 2


def test_an_init_that_raises_fails_the_call_with_502_and_says_why(
    http: httpx.Client, server: ServerProcess, code: str
) -> None:
    token = create(
        http,
        "hd-badinit",
        "handlers:echo",
        init="handlers:load",
        code=code,
        environment={"variables": {"INIT_FAILS": "1"}},
        synchronous={"min_scale": 0, "max_scale": 1},
    )
    answer = httpx.post(f"{server.endpoint}/run/hd-badinit", content=b"x", headers=bearer(token), timeout=30)
    assert answer.status_code == 502, answer.text
    assert "RuntimeError: weights.onnx is missing" in answer.text
    status = status_of(http, "hd-badinit")
    assert "weights.onnx is missing" in status["last_error"]
    assert status["cold_starts"] == 0


def test_a_handler_that_cannot_be_imported_says_so(
    http: httpx.Client, server: ServerProcess, code: str
) -> None:
    token = create(http, "hd-noimport", "handlers:no_such_function", code=code, synchronous={"max_scale": 1})
    answer = httpx.post(f"{server.endpoint}/run/hd-noimport", content=b"x", headers=bearer(token), timeout=30)
    assert answer.status_code == 502, answer.text
    assert "no_such_function" in answer.text


# jobs, code folders, batching


def test_async_jobs_go_to_the_warm_replica(
    http: httpx.Client, client: Client, code: str, tmp_path: Path
) -> None:
    init_log = tmp_path / "inits"
    create(
        http,
        "hd-jobs",
        "handlers:job",
        init="handlers:load",
        code=code,
        environment={"variables": {"INIT_LOG": str(init_log)}},
        synchronous={"max_scale": 1},
        input=[{"storage_provider": "minio.default", "path": "hd-jobs/in"}],
        output=[{"storage_provider": "minio.default", "path": "hd-jobs/out"}],
    )
    for i in range(5):
        source = tmp_path / f"digit-{i}.csv"
        source.write_text(f"{i},{i * i}\n")
        client.put_file("hd-jobs/in", source)
    jobs = wait_for_jobs(client, "hd-jobs", 5, timeout=60)
    assert sorted(j["status"] for j in jobs) == ["succeeded"] * 5, [dict(j) for j in jobs]
    names = sorted(o["object_name"] for o in client.list_objects("hd-jobs", "out/"))
    assert names == [f"out/digit-{i}.json" for i in range(5)]
    answers = [json.loads(client.get_bytes("hd-jobs", f"out/digit-{i}.json")) for i in range(5)]
    assert [a["text"] for a in answers] == [f"{i},{i * i}\n" for i in range(5)]
    assert {a["content_type"] for a in answers} == {"text/csv"}  # guessed from the file's name
    assert {a["inits"] for a in answers} == {1}
    pids = {a["pid"] for a in answers}
    assert len(pids) == 1
    assert init_log.read_text().split() == [str(pid) for pid in pids]
    assert status_of(http, "hd-jobs")["calls"] == 5


def test_a_code_folder_applied_with_the_cli_runs_and_a_changed_one_replaces_it(
    http: httpx.Client, client: Client, server: ServerProcess, tmp_path: Path
) -> None:
    (tmp_path / "code" / "pkg").mkdir(parents=True)
    (tmp_path / "code" / "model.py").write_text(
        "from pkg.words import shout\n\n\ndef predict(request):\n    return shout(request.text())\n"
    )
    (tmp_path / "code" / "pkg" / "__init__.py").write_text("")
    words = tmp_path / "code" / "pkg" / "words.py"
    words.write_text("def shout(text):\n    return text.upper() + '!'\n")
    fdl = tmp_path / "apply.yaml"
    fdl.write_text(
        "functions:\n  oscar:\n  - local:\n      name: hd-apply\n      image: python\n"
        "      handler: model:predict\n      code: code\n"
    )
    applied = server.cli("apply", str(fdl))
    assert applied.returncode == 0, applied.stderr
    assert "hd-apply created" in applied.stdout
    assert client.run("hd-apply", "hello") == b"HELLO!"
    first_pid = status_of(http, "hd-apply")["replicas"][0]["pid"]

    words.write_text("def shout(text):\n    return text[::-1]\n")
    reapplied = server.cli("apply", str(fdl))
    assert reapplied.returncode == 0, reapplied.stderr
    assert "hd-apply updated" in reapplied.stdout
    assert client.run("hd-apply", "hello") == b"olleh"
    status = status_of(http, "hd-apply")
    assert [r["pid"] for r in status["replicas"]] != [first_pid]
    assert status["cold_starts"] == 1  # a new pool for the new code


def test_batching_hands_the_handler_several_calls_at_once(
    http: httpx.Client, server: ServerProcess, code: str
) -> None:
    token = create(
        http,
        "hd-batch",
        "handlers:batched",
        code=code,
        batch={"max_size": 4, "max_wait_ms": 200},
        synchronous={"min_scale": 1, "max_scale": 1},
    )
    wait_ready(http, "hd-batch")
    url = f"{server.endpoint}/run/hd-batch"
    answers = call_all(url, token, [b"a", b"b", b"c", b"d"])
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert [a.json()["text"] for a in answers] == ["a", "b", "c", "d"]
    sizes = [a.json()["size"] for a in answers]
    assert max(sizes) > 1, sizes
    assert all(1 <= s <= 4 for s in sizes)
    # Alone, a call waits at most max_wait_ms for company, then goes as a batch of one.
    alone = httpx.post(url, content=b"solo", headers=bearer(token), timeout=5)
    assert alone.status_code == 200, alone.text
    assert alone.json() == {"size": 1, "text": "solo"}


# the small server: overflow, auth, body limit


def test_calls_beyond_the_waiting_room_get_503_with_retry_after(
    small: ServerProcess, small_http: httpx.Client, small_code: str
) -> None:
    token = create(
        small_http,
        "hd-busy",
        "small:work",
        code=small_code,
        synchronous={"min_scale": 1, "max_scale": 1, "concurrency": 1},
    )
    wait_ready(small_http, "hd-busy")
    # One call runs, one waits (SLUICE_SYNC_MAX_WAITING=1): the third is refused.
    answers = call_all(f"{small.endpoint}/run/hd-busy?sleep=1", token, [b"1", b"2", b"3"])
    assert sorted(a.status_code for a in answers) == [200, 200, 503], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert "waiting" in refused.text
    assert len({a.json()["pid"] for a in answers if a.status_code == 200}) == 1


def test_who_may_call_a_handler_service_and_how_much_they_may_send(
    small: ServerProcess, small_http: httpx.Client, small_code: str
) -> None:
    token = create(small_http, "hd-auth", "small:work", code=small_code, synchronous={"max_scale": 1})
    url = f"{small.endpoint}/run/hd-auth"
    missing = httpx.post(url, content=b"{}")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic")
    assert httpx.post(url, content=b"{}", headers=bearer("0" * 64)).status_code == 401
    with_token = httpx.post(url, content=b"{}", headers=bearer(token), timeout=30)
    assert with_token.status_code == 200, with_token.text
    assert with_token.json()["size"] == 2
    assert httpx.post(url, content=b"{}", auth=ADMIN, timeout=30).status_code == 200
    # A user who may not see the private service is told nothing about it.
    added = small_http.post("/v1/users", json={"name": "mallory", "password": "mallory-password"})
    assert added.status_code == 201, added.text
    assert httpx.post(url, content=b"{}", auth=("mallory", "mallory-password")).status_code == 404
    unknown = f"{small.endpoint}/run/hd-no-such-service"
    assert httpx.post(unknown, content=b"{}").status_code == 401
    assert httpx.post(unknown, content=b"{}", auth=ADMIN).status_code == 404
    # SLUICE_MAX_BODY=4096: a declared length over it, and a chunked body growing past it.
    too_big = httpx.post(url, content=b"x" * 5000, headers=bearer(token), timeout=30)
    assert too_big.status_code == 413, too_big.text
    chunked = httpx.post(url, content=iter([b"x" * 3000, b"x" * 3000]), headers=bearer(token), timeout=30)
    assert chunked.status_code == 413, chunked.text
    at_limit = httpx.post(url, content=b"x" * 4096, headers=bearer(token), timeout=30)
    assert at_limit.status_code == 200, at_limit.text
    assert at_limit.json()["size"] == 4096


# the CLI


def test_the_cli_shows_a_handler_services_replicas(
    http: httpx.Client, client: Client, server: ServerProcess, code: str
) -> None:
    token = create(http, "hd-cli", "handlers:work", code=code, synchronous={"min_scale": 1, "max_scale": 2})
    pid = wait_ready(http, "hd-cli")["replicas"][0]["pid"]
    answer = httpx.post(f"{server.endpoint}/run/hd-cli", content=b"x", headers=bearer(token), timeout=30)
    assert answer.status_code == 200, answer.text
    assert client.replicas("hd-cli")["calls"] == 1
    shown = server.cli("replicas", "hd-cli")
    assert shown.returncode == 0, shown.stderr
    assert str(pid) in shown.stdout
    assert "ready" in shown.stdout
    assert "1 ready, 0 starting, 0 waiting; scale 1..2" in shown.stdout
    assert "1 calls, 0 failed, 1 cold starts" in shown.stdout

    script = http.post("/system/services", json={"name": "hd-script", "image": "busybox", "script": "true\n"})
    assert script.status_code == 201, script.text
    refused = server.cli("replicas", "hd-script")
    assert refused.returncode == 2
    assert "no replicas" in refused.stderr
    assert http.get("/v1/services/hd-script/replicas").status_code == 400


def test_deleting_a_handler_service_stops_its_replicas(
    http: httpx.Client, server: ServerProcess, code: str
) -> None:
    create(http, "hd-gone", "handlers:work", code=code, synchronous={"min_scale": 2, "max_scale": 2})
    pids = [r["pid"] for r in wait_ready(http, "hd-gone", 2)["replicas"]]
    assert set(pids) <= set(replica_processes(server.data_dir))
    assert http.delete("/system/services/hd-gone").status_code == 204
    wait_until(
        lambda: set(pids) & set(replica_processes(server.data_dir)),
        lambda left: not left,
        15,
        "hd-gone's replicas stopped",
    )
    assert http.get("/v1/services/hd-gone/replicas").status_code == 404


# Bugs found while these tests were written, fixed; kept so they stay fixed.


def test_a_call_waiting_behind_a_timed_out_one_gets_a_fresh_replica(
    http: httpx.Client, server: ServerProcess, code: str
) -> None:
    token = create(
        http, "hd-behind", "handlers:work", code=code, timeout=3, synchronous={"min_scale": 1, "max_scale": 1}
    )
    wait_ready(http, "hd-behind")
    url = f"{server.endpoint}/run/hd-behind"
    with ThreadPoolExecutor(2) as pool:
        hung = pool.submit(httpx.post, url, content=b"hang", headers=bearer(token), timeout=30)
        time.sleep(1.5)  # well inside the first call's 3 s: the second waits for the only replica
        behind = pool.submit(httpx.post, url, content=b"after", headers=bearer(token), timeout=30)
        assert hung.result().status_code == 504
        # 1.5 s of its own timeout remain when the stuck replica is killed: enough for a new one.
        assert behind.result().status_code == 200, behind.result().text


def test_a_failing_init_is_not_restarted_in_a_tight_loop(
    http: httpx.Client, code: str, tmp_path: Path
) -> None:
    init_log = tmp_path / "inits"
    create(
        http,
        "hd-initloop",
        "handlers:echo",
        init="handlers:load",
        code=code,
        environment={"variables": {"INIT_LOG": str(init_log), "INIT_FAILS": "1"}},
        synchronous={"min_scale": 1, "max_scale": 1},
    )
    try:
        time.sleep(2)
        attempts = len(init_log.read_text().split())
    finally:
        assert http.delete("/system/services/hd-initloop").status_code == 204
    assert attempts <= 3, f"init ran {attempts} times in 2 s"


def test_min_scale_is_not_reported_inactive_for_a_handler_service(http: httpx.Client, code: str) -> None:
    create(http, "hd-fields", "handlers:work", code=code, synchronous={"min_scale": 1, "max_scale": 1})
    shown = http.get("/system/services/hd-fields").json()
    assert "synchronous.min_scale" not in shown.get("sluice_inactive_fields", [])


def test_a_slow_cold_start_does_not_eat_the_handlers_own_time(
    http: httpx.Client, server: ServerProcess, code: str
) -> None:
    # Waiting for a replica and the handler's work each get the whole timeout: a model that takes
    # most of it to load must not have its first call killed as a stuck handler.
    token = create(
        http, "hd-slowinit", "handlers:work", init="handlers:load", code=code, timeout=2,
        environment={"variables": {"INIT_SLEEP": "1.4"}}, synchronous={"min_scale": 0, "max_scale": 1},
    )  # fmt: skip
    answer = httpx.post(
        f"{server.endpoint}/run/hd-slowinit?sleep=0.8", content=b"first", headers=bearer(token), timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert status_of(http, "hd-slowinit")["cold_starts"] == 1
