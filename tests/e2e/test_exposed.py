"""Exposed services (OSCAR's `expose`) on a real server: the service's script runs an HTTP server,
kept running, health-checked, restarted when it dies, scaled with the requests in progress, and
proxied with auth, bodies streaming both ways. The scaling policy's pure parts come first."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import socket
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import PASSWORD, ServerProcess

ADMIN = ("oscar", PASSWORD)
MB = 1000 * 1000
UPLOAD_LIMIT = 60 * MB  # the server's SLUICE_MAX_UPLOAD here: above the 50 MB bodies below
BLOCK = bytes(range(256)) * 4096  # 1 MiB of a known pattern, as the app below sends it
# A tiny web app. Its last path segment chooses: `hold` answers once the file `until` exists,
# `events` streams an event, waits for `until`, streams another; `download` sends `size` bytes,
# `upload` hashes the body (Content-Length or chunked); anything else echoes what it received.
# /healthz fails until READY_AFTER seconds have passed. Every wait is bounded (`limit`, 20 s).
APP = textwrap.dedent(
    """\
    import hashlib, json, os, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    STARTED = time.monotonic()
    READY_AFTER = float(os.environ.get("READY_AFTER", "0"))
    BLOCK = bytes(range(256)) * 4096

    def released(path, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if os.path.exists(path):
                return True
            time.sleep(0.02)
        return False

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            url = urlsplit(self.path)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            action = url.path.rsplit("/", 1)[-1]
            if self.path == "/healthz" and time.monotonic() - STARTED < READY_AFTER:
                self.reply(503, b"")
            elif action == "hold":
                released_ = released(query["until"], float(query.get("limit", 20)))
                self.reply_json({"pid": os.getpid(), "released": released_})
            elif action == "events":
                self.events(query["until"], float(query.get("limit", 20)))
            elif action == "download":
                self.download(int(query["size"]))
            elif action == "upload":
                self.upload()
            else:
                self.echo()

        do_GET = do_POST = do_PUT = do_DELETE = answer

        def echo(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.reply_json({
                "method": self.command,
                "path": self.path,
                "pid": os.getpid(),
                "body": self.rfile.read(length).decode(),
                "authorization": self.headers.get("Authorization"),
                "prefix": self.headers.get("X-Forwarded-Prefix"),
                "greeting": os.environ.get("GREETING"),
                "cookie": self.headers.get("Cookie"),
            }, [("X-App", "echo"), ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/")])

        def events(self, until, limit):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.chunk(b"data: first\\n\\n")
            self.chunk(b"data: released\\n\\n" if released(until, limit) else b"data: timed out\\n\\n")
            self.chunk(b"")

        def chunk(self, data):
            self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(data), data))
            self.wfile.flush()

        def download(self, size):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            while size > 0:
                part = BLOCK[:size]
                self.wfile.write(part)
                size -= len(part)

        def upload(self):
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "")
            length = int(self.headers.get("Content-Length") or 0)
            digest, size = hashlib.sha256(), 0
            for part in self.chunks() if chunked else self.fixed(length):
                digest.update(part)
                size += len(part)
            self.reply_json({"size": size, "sha256": digest.hexdigest(), "chunked": chunked})

        def fixed(self, length):
            while length > 0:
                part = self.rfile.read(min(length, len(BLOCK)))
                if not part:
                    return
                length -= len(part)
                yield part

        def chunks(self):
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return
                yield from self.fixed(size)
                self.rfile.readline()

        def reply_json(self, data, headers=()):
            self.reply(200, json.dumps(data).encode(), headers)

        def reply(self, status, body, headers=()):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers:
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"SLUICE_WORKERS": "2", "SLUICE_MAX_UPLOAD": str(UPLOAD_LIMIT)}
    process = ServerProcess(tmp_path_factory.mktemp("exposed") / "data", env=env).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("app") / "app.py"
    path.write_text(APP)
    return path


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.endpoint, auth=ADMIN, timeout=30) as client:
        yield client


def create(http: httpx.Client, app: Path, name: str, expose: dict[str, Any], **fields: Any) -> str:
    spec = {"name": name, "image": "python", "script": f"exec python {app}\n", "expose": expose, **fields}
    created = http.post("/system/services", json=spec)
    assert created.status_code == 201, created.text
    return created.json()["token"]


def eventually(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s")


def healthy(http: httpx.Client, name: str, copies: int) -> bool:
    status = http.get(f"/system/services/{name}/deployment").json()
    return status["state"] == "ready" and status["active_instances"] == copies


def test_requests_reach_the_apps_copies_with_auth(
    http: httpx.Client, server: ServerProcess, app: Path
) -> None:
    token = create(
        http, app, "ex-echo", {"api_port": 5000, "min_scale": 2, "max_scale": 3, "rewrite_target": True},
        environment={"variables": {"GREETING": "hi"}},
    )  # fmt: skip
    eventually(lambda: healthy(http, "ex-echo", 2))
    url = f"{server.endpoint}/system/services/ex-echo/exposed/predict/now?x=1"
    bearer = {"Authorization": f"Bearer {token}"}
    answers = [httpx.post(url, content=b"pixels", headers=bearer).json() for _ in range(4)]
    assert {a["path"] for a in answers} == {"/predict/now?x=1"}  # rewrite_target: no prefix
    assert {a["body"] for a in answers} == {"pixels"}
    assert len({a["pid"] for a in answers}) == 2  # taking turns between the two copies
    assert all(a["authorization"] is None for a in answers)  # Sluice credentials stay in Sluice
    assert answers[0]["prefix"] == "/system/services/ex-echo/exposed"
    assert answers[0]["greeting"] == "hi"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer " + "0" * 64}).status_code == 401
    assert httpx.get(url, auth=ADMIN).headers["x-app"] == "echo"

    shown = server.cli("replicas", "ex-echo")  # the CLI shows the copies
    assert shown.returncode == 0, shown.stderr
    assert "2 healthy, 0 starting" in shown.stdout and "scale 2..3" in shown.stdout
    ports = {copy["port"] for copy in http.get("/v1/services/ex-echo/exposed").json()["replicas"]}
    assert all(str(port) in shown.stdout for port in ports)


def test_without_rewrite_the_app_sees_the_whole_path(http: httpx.Client, app: Path) -> None:
    create(http, app, "ex-whole", {"min_scale": 1, "max_scale": 1})
    eventually(lambda: healthy(http, "ex-whole", 1))
    answer = http.delete("/system/services/ex-whole/exposed/items/7")
    assert answer.json()["path"] == "/system/services/ex-whole/exposed/items/7"
    assert answer.json()["method"] == "DELETE"


def test_traffic_waits_for_the_health_check(http: httpx.Client, app: Path) -> None:
    create(
        http, app, "ex-slow", {"min_scale": 1, "max_scale": 1, "health_path": "healthz"},
        environment={"variables": {"READY_AFTER": "2"}},
    )  # fmt: skip
    early = http.get("/system/services/ex-slow/exposed/")
    assert early.status_code == 503 and "health check" in early.text
    assert early.headers["retry-after"] == "2"
    eventually(lambda: http.get("/system/services/ex-slow/exposed/").status_code == 200)


def test_a_copy_that_dies_is_restarted(http: httpx.Client, app: Path) -> None:
    create(http, app, "ex-crash", {"min_scale": 1, "max_scale": 1})
    eventually(lambda: healthy(http, "ex-crash", 1))
    pid = http.get("/system/services/ex-crash/exposed/").json()["pid"]
    os.kill(pid, signal.SIGKILL)
    answer = eventually(
        lambda: (r := http.get("/system/services/ex-crash/exposed/")).status_code == 200 and r
    )
    assert answer.json()["pid"] != pid
    status = http.get("/system/services/ex-crash/deployment").json()
    assert "exited" in status["reason"] or status["state"] == "ready"


def test_stop_start_and_delete(http: httpx.Client, app: Path) -> None:
    create(http, app, "ex-life", {"min_scale": 1, "max_scale": 1})
    eventually(lambda: healthy(http, "ex-life", 1))
    pid = http.get("/system/services/ex-life/exposed/").json()["pid"]
    assert http.post("/system/services/ex-life/stop").json()["state"] == "stopped"
    eventually(lambda: not _alive(pid))
    stopped = http.get("/system/services/ex-life/exposed/")
    assert stopped.status_code == 503 and "is stopped" in stopped.text
    assert http.post("/system/services/ex-life/start").status_code == 200
    pid = eventually(
        lambda: (r := http.get("/system/services/ex-life/exposed/")).status_code == 200 and r
    ).json()["pid"]
    assert http.delete("/system/services/ex-life").status_code == 204
    eventually(lambda: not _alive(pid))


def test_a_service_without_expose_has_no_exposed_path(http: httpx.Client) -> None:
    assert (
        http.post("/system/services", json={"name": "ex-none", "image": "i", "script": "true"}).status_code
        == 201
    )
    answer = http.get("/system/services/ex-none/exposed/")
    assert answer.status_code == 404 and "not exposed" in answer.text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):  # gone, or reaped between the two looks
        return False


def test_paths_stay_encoded_and_cookies_pass_both_ways(http: httpx.Client, app: Path) -> None:
    create(http, app, "ex-raw", {"min_scale": 1, "max_scale": 1, "rewrite_target": True})
    eventually(lambda: healthy(http, "ex-raw", 1))
    answer = http.get(
        "/system/services/ex-raw/exposed/files/what%3Fnot%23this", headers={"Cookie": "session=s1"}
    )
    assert answer.json()["path"] == "/files/what%3Fnot%23this"  # %3F is a character, not a query
    assert answer.json()["cookie"] == "session=s1"
    assert answer.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]


# --- scaling with the load ---------------------------------------------------------------------


def copies(http: httpx.Client, name: str) -> dict[str, Any]:
    answer = http.get(f"/v1/services/{name}/exposed")
    assert answer.status_code == 200, answer.text
    return answer.json()


def hold(http: httpx.Client, name: str, until: Path) -> dict[str, Any]:
    """A request the app answers only once `until` exists (the app gives up after 20 s)."""
    answer = http.get(f"/system/services/{name}/exposed/hold", params={"until": str(until)})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_copies_follow_the_load_up_to_max_scale_and_back_to_min_scale(
    http: httpx.Client, app: Path, tmp_path: Path
) -> None:
    # One request in progress per copy is the target; 1 s of lower load removes copies.
    expose = {"min_scale": 1, "max_scale": 3, "target_in_flight": 1, "idle_timeout": 1}
    create(http, app, "ex-scale", {**expose, "rewrite_target": True})
    eventually(lambda: healthy(http, "ex-scale", 1))
    go = tmp_path / "go"
    seen: list[int] = []

    def status() -> dict[str, Any]:
        now = copies(http, "ex-scale")
        seen.append(now["copies"])
        return now

    with ThreadPoolExecutor(4) as pool:
        held = [pool.submit(hold, http, "ex-scale", go) for _ in range(4)]
        # Four requests in progress at one each: as many copies as max_scale allows, all healthy.
        eventually(lambda: (now := status())["in_flight"] == 4 and now["healthy"] == 3, 60)
        go.touch()
        answers = [future.result(timeout=60) for future in held]
    assert all(answer["released"] for answer in answers)
    assert max(seen) == 3  # never above max_scale
    # Idle for idle_timeout (1 s): back to min_scale, and the deployment route says so too.
    eventually(lambda: (now := status())["copies"] == 1 and now["healthy"] == 1)
    assert healthy(http, "ex-scale", 1)
    decisions = copies(http, "ex-scale")["decisions"]
    assert max(decision["to"] for decision in decisions) == 3
    assert decisions[-1]["to"] == 1 and decisions[-1]["peak_in_flight"] <= 1  # one copy's worth
    assert http.get("/system/services/ex-scale/exposed/").status_code == 200


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample of a /metrics scrape (None: no such series)."""
    want = ",".join(sorted(f'{key}="{value}"' for key, value in labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == want:
            return float(match.group(2))
    return None


def exposed_metrics(http: httpx.Client, name: str) -> dict[str, float | None]:
    """The exposed service's series in one scrape of /metrics."""
    text = http.get("/metrics").text
    return {
        "ready": sample(text, "sluice_exposed_copies", service=name, state="ready"),
        "starting": sample(text, "sluice_exposed_copies", service=name, state="starting"),
        "in_flight": sample(text, "sluice_exposed_requests_in_flight", service=name),
        "waiting": sample(text, "sluice_exposed_requests_waiting", service=name),
        "ups": sample(text, "sluice_exposed_scale_decisions_total", service=name, direction="up"),
        "downs": sample(text, "sluice_exposed_scale_decisions_total", service=name, direction="down"),
        "restarts": sample(text, "sluice_exposed_copy_restarts_total", service=name),
    }


def test_metrics_show_copies_requests_in_progress_and_scaling(
    http: httpx.Client, app: Path, tmp_path: Path
) -> None:
    expose = {"min_scale": 1, "max_scale": 2, "target_in_flight": 1, "idle_timeout": 1}
    create(http, app, "ex-metrics", {**expose, "rewrite_target": True})
    eventually(lambda: healthy(http, "ex-metrics", 1))
    one_idle_copy = {"ready": 1, "starting": 0, "in_flight": 0, "waiting": 0, "restarts": 0}
    assert exposed_metrics(http, "ex-metrics") == {**one_idle_copy, "ups": 0, "downs": 0}
    go = tmp_path / "go"
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(hold, http, "ex-metrics", go) for _ in range(2)]
        # Two requests held in the app at one per copy: both counted, a second copy up and ready.
        busy = eventually(
            lambda: (
                (now := exposed_metrics(http, "ex-metrics"))["in_flight"] == 2 and now["ready"] == 2 and now
            )
        )
        assert (busy["waiting"], busy["ups"], busy["downs"]) == (0, 1, 0)
        assert copies(http, "ex-metrics")["in_flight"] == 2  # the service's own status counts the same
        go.touch()
        assert all(future.result(timeout=60)["released"] for future in held)
    # Idle for idle_timeout: back to one copy, one decision down, nothing in progress.
    after = eventually(lambda: (now := exposed_metrics(http, "ex-metrics"))["downs"] and now)
    assert after == {**one_idle_copy, "ups": 1, "downs": 1}
    # A deleted service's series go with it.
    assert http.delete("/system/services/ex-metrics").status_code == 204
    eventually(lambda: exposed_metrics(http, "ex-metrics")["ready"] is None)


def test_a_request_goes_to_the_copy_with_the_fewest_in_progress(
    http: httpx.Client, app: Path, tmp_path: Path
) -> None:
    create(http, app, "ex-spread", {"min_scale": 3, "max_scale": 3, "rewrite_target": True})
    eventually(lambda: healthy(http, "ex-spread", 3))
    go = tmp_path / "go"
    held: list[Future[dict[str, Any]]] = []
    with ThreadPoolExecutor(2) as pool:
        for count in (1, 2):  # one at a time: each finds the others' load
            held.append(pool.submit(hold, http, "ex-spread", go))
            eventually(lambda count=count: copies(http, "ex-spread")["in_flight"] == count)
        loads = sorted(replica["in_flight"] for replica in copies(http, "ex-spread")["replicas"])
        assert loads == [0, 1, 1]  # the two held requests went to two copies
        # Quick requests all go to the one copy with nothing in progress (no turns taken).
        quick = {quick_pid(http, "ex-spread", settled=2) for _ in range(3)}
        go.touch()
        busy = {future.result(timeout=60)["pid"] for future in held}
    assert len(quick) == 1 and len(busy) == 2 and not quick & busy
    # With every copy idle, requests take turns.
    assert len({quick_pid(http, "ex-spread", settled=0) for _ in range(3)}) == 3


def quick_pid(http: httpx.Client, name: str, settled: int) -> int:
    """The pid of the copy that answers, once the server counts `settled` requests in progress
    (the one before may be answered a moment before the server counts it done)."""
    eventually(lambda: copies(http, name)["in_flight"] == settled)
    return http.get(f"/system/services/{name}/exposed/").json()["pid"]


def test_scaled_to_zero_a_request_waits_for_a_copy_to_start(http: httpx.Client, app: Path) -> None:
    create(http, app, "ex-zero", {"min_scale": 0, "max_scale": 2, "idle_timeout": 1, "rewrite_target": True})
    assert copies(http, "ex-zero")["copies"] == 0  # nothing runs before the first request
    first = http.get("/system/services/ex-zero/exposed/first")
    assert first.status_code == 200, first.text
    assert first.json()["path"] == "/first"
    eventually(lambda: copies(http, "ex-zero")["copies"] == 0)  # idle for 1 s: none left
    again = http.get("/system/services/ex-zero/exposed/again")
    assert again.status_code == 200, again.text
    assert again.json()["pid"] != first.json()["pid"]


def test_scaled_to_zero_a_copy_that_cannot_start_fails_the_request(http: httpx.Client) -> None:
    spec = {"name": "ex-broken", "image": "python", "script": "echo broken\nexit 3\n",
            "expose": {"min_scale": 0, "max_scale": 1, "idle_timeout": 1}}  # fmt: skip
    assert http.post("/system/services", json=spec).status_code == 201
    answer = http.get("/system/services/ex-broken/exposed/")
    assert answer.status_code == 503
    assert "could not start" in answer.text and "exited with code 3" in answer.text


# --- streaming -----------------------------------------------------------------------------------


def test_a_streamed_answer_arrives_chunk_by_chunk(http: httpx.Client, app: Path, tmp_path: Path) -> None:
    create(http, app, "ex-events", {"min_scale": 1, "max_scale": 1, "rewrite_target": True})
    eventually(lambda: healthy(http, "ex-events", 1))
    go = tmp_path / "go"
    received = ""
    url = "/system/services/ex-events/exposed/events"
    with http.stream("GET", url, params={"until": str(go)}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/event-stream"
        for text in answer.iter_text():
            received += text
            if "data: first" in received:
                go.touch()  # only now does the app send the rest: a buffering proxy never gets here
    assert received == "data: first\n\ndata: released\n\n"


def test_a_caller_that_hangs_up_frees_its_copy(http: httpx.Client, app: Path, tmp_path: Path) -> None:
    create(http, app, "ex-hangup", {"min_scale": 1, "max_scale": 1, "rewrite_target": True})
    eventually(lambda: healthy(http, "ex-hangup", 1))
    never = tmp_path / "never"  # the app would wait for it 120 s
    url = "/system/services/ex-hangup/exposed/events"
    with http.stream("GET", url, params={"until": str(never), "limit": 120}) as answer:
        texts = answer.iter_text()  # kept: a dropped iterator closes the answer, a hang-up
        assert next(texts).startswith("data: first")
        assert copies(http, "ex-hangup")["in_flight"] == 1
    # Left unread, the answer's connection is closed: the request no longer counts, long before
    # the app's answer would end.
    eventually(lambda: copies(http, "ex-hangup")["in_flight"] == 0)


def pattern(size: int) -> Iterator[bytes]:
    while size > 0:
        part = BLOCK[:size]
        size -= len(part)
        yield part


def digest_of(parts: Iterable[bytes]) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    for part in parts:
        digest.update(part)
        size += len(part)
    return size, digest.hexdigest()


def peak_memory(pid: int, reset: bool = False) -> int:
    """The process's peak resident memory in bytes; `reset` starts a new peak from now."""
    if reset:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


def test_large_bodies_stream_through_in_bounded_memory(
    http: httpx.Client, server: ServerProcess, app: Path
) -> None:
    assert server.process is not None
    create(http, app, "ex-big", {"min_scale": 1, "max_scale": 1, "rewrite_target": True})
    eventually(lambda: healthy(http, "ex-big", 1))
    url = "/system/services/ex-big/exposed"
    size = 50 * MB
    _, expected = digest_of(pattern(size))
    before = peak_memory(server.process.pid, reset=True)

    sized = http.post(f"{url}/upload", content=pattern(size), headers={"Content-Length": str(size)})
    assert sized.json() == {"size": size, "sha256": expected, "chunked": False}
    chunked = http.post(f"{url}/upload", content=pattern(10 * MB))  # no length: sent on chunked
    assert chunked.json() == {"size": 10 * MB, "sha256": digest_of(pattern(10 * MB))[1], "chunked": True}
    with http.stream("GET", f"{url}/download", params={"size": size}) as download:
        assert download.headers["content-length"] == str(size)
        assert digest_of(download.iter_raw()) == (size, expected)

    grown = peak_memory(server.process.pid) - before
    assert grown < 25 * MB, f"the server's memory peaked {grown / MB:.0f} MB higher: a body was held whole"


def raw_request(port: int, head: str, body: Iterable[bytes] = ()) -> bytes:
    """Send a request as bytes (a declared length with no body, a chunked body cut short) and
    read the answer's head; httpx would not send either."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode())
        for part in body:
            sock.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer and (data := sock.recv(65536)):
            answer += data
        return answer


def test_bodies_over_the_upload_limit_get_413(http: httpx.Client, server: ServerProcess, app: Path) -> None:
    create(http, app, "ex-limit", {"min_scale": 1, "max_scale": 1, "rewrite_target": True})
    eventually(lambda: healthy(http, "ex-limit", 1))
    credentials = base64.b64encode(":".join(ADMIN).encode()).decode()
    head = (
        "POST /system/services/ex-limit/exposed/upload HTTP/1.1\r\nHost: sluice\r\n"
        f"Authorization: Basic {credentials}\r\n"
    )
    declared = raw_request(server.port, head + f"Content-Length: {UPLOAD_LIMIT + 1}\r\n\r\n")
    assert declared.startswith(b"HTTP/1.1 413"), declared
    # Chunked, no length declared: refused once the streamed body runs past the limit.
    blocks = UPLOAD_LIMIT // len(BLOCK) + 1
    chunks = (b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK) for _ in range(blocks))
    streamed = raw_request(server.port, head + "Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert streamed.startswith(b"HTTP/1.1 413"), streamed
    within = http.post("/system/services/ex-limit/exposed/upload", content=b"x" * 1000)
    assert within.json()["size"] == 1000  # the limit was the only reason
