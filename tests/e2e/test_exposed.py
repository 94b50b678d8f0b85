"""Exposed services (OSCAR's `expose`) on a real server: the service's script runs an HTTP server,
kept running, health-checked, restarted when it dies, and proxied with auth."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import PASSWORD, ServerProcess

ADMIN = ("oscar", PASSWORD)
# A tiny web app: echoes what it received; /healthz fails until READY_AFTER seconds have passed.
APP = textwrap.dedent(
    """\
    import json, os, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    STARTED = time.monotonic()
    READY_AFTER = float(os.environ.get("READY_AFTER", "0"))

    class Handler(BaseHTTPRequestHandler):
        def answer(self):
            if self.path == "/healthz" and time.monotonic() - STARTED < READY_AFTER:
                self.send_response(503)
                self.end_headers()
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.dumps({
                "method": self.command,
                "path": self.path,
                "pid": os.getpid(),
                "body": self.rfile.read(length).decode(),
                "authorization": self.headers.get("Authorization"),
                "prefix": self.headers.get("X-Forwarded-Prefix"),
                "greeting": os.environ.get("GREETING"),
                "cookie": self.headers.get("Cookie"),
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-App", "echo")
            self.send_header("Set-Cookie", "a=1; Path=/")
            self.send_header("Set-Cookie", "b=2; Path=/")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = answer

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("exposed") / "data", env={"SLUICE_WORKERS": "2"}).start()
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
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_paths_stay_encoded_and_cookies_pass_both_ways(http: httpx.Client, app: Path) -> None:
    create(http, app, "ex-raw", {"min_scale": 1, "max_scale": 1, "rewrite_target": True})
    eventually(lambda: healthy(http, "ex-raw", 1))
    answer = http.get(
        "/system/services/ex-raw/exposed/files/what%3Fnot%23this", headers={"Cookie": "session=s1"}
    )
    assert answer.json()["path"] == "/files/what%3Fnot%23this"  # %3F is a character, not a query
    assert answer.json()["cookie"] == "session=s1"
    assert answer.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
