"""OSCAR's deployment routes on a real server: access checks, what runs, the replicas' logs, and
stop/start/restart of a handler service (a script service has nothing to start and says so); an
exposed service scaled to zero says so."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice.spec.code import pack_code
from tests.server import PASSWORD, ServerProcess

ADMIN = ("oscar", PASSWORD)
CODE = textwrap.dedent(
    """\
    import os

    def load():
        print("model loaded in", os.getpid(), flush=True)

    def handle(request):
        print("answering", request.text(), flush=True)
        return {"pid": os.getpid()}
    """
)

# A web app for an exposed service: a request answers once the file `until` exists (20 s at most).
APP = textwrap.dedent(
    """\
    import os, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            until = parse_qs(urlsplit(self.path).query).get("until")
            deadline = time.monotonic() + 20
            while until and not os.path.exists(until[0]) and time.monotonic() < deadline:
                time.sleep(0.02)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("deploy") / "data", env={"SLUICE_WORKERS": "2"}).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    folder = tmp_path_factory.mktemp("code")
    (folder / "model.py").write_text(CODE)
    with httpx.Client(base_url=server.endpoint, auth=ADMIN, timeout=30) as client:
        handler = {
            "name": "dep-handler",
            "image": "python",
            "handler": "model:handle",
            "init": "model:load",
            "code": pack_code(Path(folder)),
            "synchronous": {"min_scale": 1, "max_scale": 1},
        }
        assert client.post("/system/services", json=handler).status_code == 201
        script = {"name": "dep-script", "image": "busybox", "script": "true\n"}
        assert client.post("/system/services", json=script).status_code == 201
        assert client.post("/v1/users", json={"name": "eve", "password": "eve-password"}).status_code == 201
        yield client


def state_of(http: httpx.Client, name: str) -> dict[str, Any]:
    answer = http.get(f"/system/services/{name}/deployment")
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_state(http: httpx.Client, name: str, state: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = state_of(http, name)
        if status["state"] == state:
            return status
        time.sleep(0.1)
    raise AssertionError(f"{name} not {state} within {timeout}s: {status}")


def test_auth_route_checks_the_credentials_for_the_service(http: httpx.Client, server: ServerProcess) -> None:
    token = http.get("/system/services/dep-handler").json()["token"]
    url = f"{server.endpoint}/system/services/dep-handler/auth"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert httpx.get(url, auth=ADMIN).status_code == 200
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer " + "0" * 64}).status_code == 401
    assert httpx.get(url, auth=("eve", "eve-password")).status_code == 404  # private: not hers to see


def test_deployment_says_what_runs(http: httpx.Client) -> None:
    ready = wait_state(http, "dep-handler", "ready")
    assert ready["resource_kind"] == "replicas" and ready["active_instances"] == 1
    script = state_of(http, "dep-script")
    assert (script["resource_kind"], script["state"]) == ("jobs", "on-demand")
    assert (
        http.get("/system/services/dep-handler/deployment", auth=("eve", "eve-password")).status_code == 404
    )


def test_deployment_logs_are_what_the_replicas_printed(http: httpx.Client, server: ServerProcess) -> None:
    wait_state(http, "dep-handler", "ready")
    token = http.get("/system/services/dep-handler").json()["token"]
    call = httpx.post(
        f"{server.endpoint}/run/dep-handler", content=b"7", headers={"Authorization": f"Bearer {token}"}
    )
    assert call.status_code == 200
    logs = http.get("/system/services/dep-handler/deployment/logs", params={"tailLines": 50}).json()
    messages = [entry["message"] for entry in logs["entries"]]
    assert logs["available"] and any(m.startswith("model loaded in") for m in messages)
    assert "answering 7" in messages
    assert (
        len(
            http.get("/system/services/dep-handler/deployment/logs", params={"tailLines": 1}).json()[
                "entries"
            ]
        )
        == 1
    )
    script_logs = http.get("/system/services/dep-script/deployment/logs").json()
    assert script_logs["available"] is False and "/system/logs/dep-script/" in script_logs["message"]


def test_stop_refuses_calls_until_started_and_restart_brings_a_new_replica(
    http: httpx.Client, server: ServerProcess
) -> None:
    token = http.get("/system/services/dep-handler").json()["token"]
    url = f"{server.endpoint}/run/dep-handler"
    headers = {"Authorization": f"Bearer {token}"}
    before = httpx.post(url, content=b"a", headers=headers, timeout=30).json()["pid"]

    stopped = http.post("/system/services/dep-handler/stop").json()
    assert stopped["state"] == "stopped" and stopped["active_instances"] == 0
    refused = httpx.post(url, content=b"b", headers=headers)
    assert refused.status_code == 503 and "is stopped" in refused.text
    assert refused.headers["retry-after"] == "60"

    assert http.post("/system/services/dep-handler/start").status_code == 200
    wait_state(http, "dep-handler", "ready")
    after_start = httpx.post(url, content=b"c", headers=headers, timeout=30).json()["pid"]
    assert after_start != before

    assert http.post("/system/services/dep-handler/restart").status_code == 200
    wait_state(http, "dep-handler", "ready")
    after_restart = httpx.post(url, content=b"d", headers=headers, timeout=30).json()["pid"]
    assert after_restart not in (before, after_start)


def test_script_services_have_nothing_to_start_or_stop(http: httpx.Client) -> None:
    for action in ("start", "stop", "restart"):
        answer = http.post(f"/system/services/dep-script/{action}")
        assert answer.status_code == 400
        assert "runs a script per job" in answer.text
    assert http.post("/system/services/dep-handler/stop", auth=("eve", "eve-password")).status_code == 404


def test_logs_without_a_service_name_says_what_to_give(http: httpx.Client) -> None:
    answer = http.get("/system/logs/")
    assert answer.status_code == 400
    assert "/system/logs/{service}" in answer.text


def test_an_exposed_service_scaled_to_zero_says_so(http: httpx.Client, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    spec = {"name": "dep-zero", "image": "python", "script": f"exec python {app}\n",
            "expose": {"min_scale": 0, "max_scale": 1, "idle_timeout": 1}}  # fmt: skip
    assert http.post("/system/services", json=spec).status_code == 201
    scaled_to_zero = {"resource_kind": "exposed", "state": "scaled-to-zero", "active_instances": 0,
                      "affected_instances": 0, "reason": "the next request starts a copy"}  # fmt: skip
    before = state_of(http, "dep-zero")  # nothing ran yet: not "starting", nothing is
    assert {key: before[key] for key in scaled_to_zero} == scaled_to_zero
    assert before["service_name"] == "dep-zero" and "last_transition_time" in before
    go = tmp_path / "go"
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(http.get, "/system/services/dep-zero/exposed/", params={"until": str(go)})
        busy = wait_state(http, "dep-zero", "ready")  # the request started a copy and holds it
        assert (busy["active_instances"], busy["reason"]) == (1, "")
        go.touch()
        assert held.result(timeout=60).text == "ok"
    after = wait_state(http, "dep-zero", "scaled-to-zero")  # idle for idle_timeout: no copy left
    assert {key: after[key] for key in scaled_to_zero} == scaled_to_zero
    stopped = http.post("/system/services/dep-zero/stop").json()
    assert stopped["state"] == "stopped"  # a stop is not a scale to zero: calls get 503
