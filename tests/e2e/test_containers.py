"""Jobs in real podman containers: the OSCAR contract inside the image, limits, clean-up.

One `sluice serve --executor container` per module, with the local busybox test image
(`tests/podman.py`); no registry is involved.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice.client import Client
from sluice.executors.container import JOB_LABEL, OWNER_LABEL, SERVICE_LABEL
from tests.podman import IMAGE, Podman
from tests.server import PASSWORD, ServerProcess, wait_for_jobs

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    return Podman.for_tests(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def registry_logins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Named registry logins, as `podman login --authfile <name>.json` writes them."""
    folder = tmp_path_factory.mktemp("registry-auth")
    for name, registry in (("team-a", "registry-a.invalid"), ("team-b", "registry-b.invalid")):
        auth = base64.b64encode(f"{name}:secret".encode()).decode()
        (folder / f"{name}.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return folder


@pytest.fixture(scope="module")
def server(
    podman: Podman, registry_logins: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {
        **podman.server_env,
        "SLUICE_WORKERS": "4",
        "SLUICE_RETRY_BASE_DELAY": "0.2",
        "SLUICE_REGISTRY_AUTH_DIR": str(registry_logins),
    }
    process = ServerProcess(tmp_path_factory.mktemp("ctr") / "data", env=env).start()
    try:
        yield process
    finally:
        process.stop()
    # Whatever happened in the tests, a stopped server leaves no container behind.
    assert podman.containers(OWNER_LABEL) == []


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.endpoint, auth=("oscar", PASSWORD), timeout=30) as c:
        yield c


def create(http: httpx.Client, name: str, script: str, **fields: Any) -> dict[str, Any]:
    spec = {
        "name": name,
        "image": IMAGE,
        "script": script,
        "cpu": "1",
        "input": [{"storage_provider": "minio.default", "path": f"{name}/in"}],
        "output": [{"storage_provider": "minio.default", "path": f"{name}/out"}],
        **fields,
    }
    created = http.post("/system/services", json=spec)
    assert created.status_code == 201, created.text
    return created.json()


def run_one(client: Client, service: str, body: bytes = b"{}", timeout: float = 60) -> dict[str, Any]:
    job_id = client.submit(service, body)["job_id"]
    return wait_for_job(client, service, job_id, timeout)


def wait_for_job(
    client: Client, service: str, job_id: str, timeout: float = 60, states: tuple[str, ...] = FINAL
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.job(service, job_id)
        if job["status"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not in {states} within {timeout}s: {job}")


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def test_the_service_says_it_runs_in_containers(http: httpx.Client) -> None:
    created = create(http, "ctr-status", "true")
    assert created["sluice_executor"] == "container (podman)"
    assert http.get("/system/services/ctr-status").json()["sluice_executor"] == "container (podman)"


def test_a_file_is_processed_inside_the_image_under_the_oscar_contract(
    http: httpx.Client, client: Client, tmp_path: Path
) -> None:
    create(
        http,
        "ctr-env",
        # /usr exists on the host, not in the busybox image: proof the script ran in the image.
        'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/copy.txt"\n'
        'env > "$TMP_OUTPUT_DIR/env.txt"\n'
        'if [ -e /usr ]; then echo host; else echo image; fi > "$TMP_OUTPUT_DIR/where.txt"\n'
        'echo "log line from $(hostname)"\n',
        environment={"variables": {"GREETING": "hello there"}, "secrets": {"TOKEN": "s3cr3t"}},
    )
    source = tmp_path / "photo.txt"
    source.write_text("pixels\n")
    client.put_file("ctr-env/in", source)
    (job,) = wait_for_jobs(client, "ctr-env", 1)
    assert job["status"] == "succeeded", job
    assert client.get_bytes("ctr-env", "out/copy.txt") == b"pixels\n"
    assert client.get_bytes("ctr-env", "out/where.txt") == b"image\n"
    env = dict(
        line.split("=", 1) for line in client.get_bytes("ctr-env", "out/env.txt").decode().splitlines()
    )
    assert Path(env["INPUT_FILE_PATH"]).name == "photo.txt"
    assert env["STORAGE_OBJECT_KEY"] == "ctr-env/in/photo.txt"
    assert env["JOB_UUID"] == job["id"]
    assert env["OSCAR_SERVICE_NAME"] == "ctr-env"
    assert '"ctr-env/in/photo.txt"' in env["EVENT"]
    assert env["GREETING"] == "hello there"
    assert env["TOKEN"] == "s3cr3t"
    assert {"TMP_INPUT_DIR", "TMP_OUTPUT_DIR", "EVENT_TIME", "OSCAR_SERVICE_TOKEN"} <= env.keys()
    # The image's own PATH, not the server's virtualenv.
    assert ".venv" not in env.get("PATH", "")
    assert "log line from" in client.log("ctr-env", job["id"])


def test_the_memory_limit_is_enforced(http: httpx.Client, client: Client) -> None:
    # The script holds as many bytes as the input says in a shell variable.
    create(
        http,
        "ctr-memory",
        'x=$(head -c "$(cat "$INPUT_FILE_PATH")" /dev/zero | tr "\\0" a)\necho "held ${#x}"\n',
        memory="48Mi",
    )
    small = run_one(client, "ctr-memory", b"4000000")
    assert small["status"] == "succeeded", small
    assert "held 4000000" in client.log("ctr-memory", small["id"])
    big = run_one(client, "ctr-memory", b"200000000")
    assert big["status"] == "failed"
    assert big["exit_code"] == 137  # killed by the kernel's OOM killer inside the container's cgroup


def test_a_timeout_removes_the_container(http: httpx.Client, client: Client, podman: Podman) -> None:
    create(http, "ctr-timeout", "echo started\nsleep 60\n", timeout=2)
    started = time.monotonic()
    job = run_one(client, "ctr-timeout", timeout=40)
    assert job["status"] == "failed"
    assert job["error"] == "timed out"
    assert time.monotonic() - started < 30
    assert "started" in client.log("ctr-timeout", job["id"])
    assert podman.containers(f"{SERVICE_LABEL}=ctr-timeout") == []


def test_cancelling_a_running_job_removes_its_container(
    http: httpx.Client, client: Client, podman: Podman
) -> None:
    create(http, "ctr-cancel", "sleep 60\n")
    job_id = client.submit("ctr-cancel", b"{}")["job_id"]
    wait_for_job(client, "ctr-cancel", job_id, states=("running",))
    label = f"{SERVICE_LABEL}=ctr-cancel"
    wait_until(lambda: podman.containers(label), 30, "the job's container starting")
    client.cancel("ctr-cancel", job_id)
    assert wait_for_job(client, "ctr-cancel", job_id)["status"] == "cancelled"
    wait_until(lambda: not podman.containers(label), 30, "the container's removal")


def test_a_missing_image_fails_the_job_with_the_engines_message(http: httpx.Client, client: Client) -> None:
    create(http, "ctr-noimage", "true", image="localhost/no-such-image:1", image_pull_policy="Never")
    job = run_one(client, "ctr-noimage")
    assert job["status"] == "failed"
    assert job["error"].startswith("podman could not run the container:"), job["error"]
    assert "no-such-image" in job["error"] and "image not known" in job["error"]
    assert job["exit_code"] is None


def test_image_pull_secrets_name_registry_logins(http: httpx.Client, client: Client) -> None:
    # Local images run whatever the logins; one login, several (merged), and a missing one.
    for name, secrets in (("ctr-secret-one", ["team-a"]), ("ctr-secret-two", ["team-a", "team-b"])):
        created = create(http, name, "echo pulled\n", image_pull_secrets=secrets)
        assert "image_pull_secrets" not in created.get("sluice_inactive_fields", [])
        job = run_one(client, name)
        assert job["status"] == "succeeded", job
    create(http, "ctr-secret-missing", "true", image_pull_secrets=["nobody"])
    job = run_one(client, "ctr-secret-missing")
    assert job["status"] == "failed"
    assert job["error"].startswith("image pull secret 'nobody' not found: no nobody.json in")
    bad = http.post("/system/services", json={"name": "ctr-secret-bad", "image": IMAGE, "script": "true",
                                              "image_pull_secrets": ["../../etc/passwd"]})  # fmt: skip
    assert bad.status_code == 400 and "not a secret name" in bad.text


def test_network_is_on_by_default_and_can_be_turned_off(http: httpx.Client, client: Client) -> None:
    script = 'cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d " "\n'
    create(http, "ctr-net-on", script)
    create(http, "ctr-net-off", script, network=False)
    on = run_one(client, "ctr-net-on")
    off = run_one(client, "ctr-net-off")
    assert on["status"] == off["status"] == "succeeded"
    assert client.log("ctr-net-off", off["id"]).split() == ["lo"]
    assert len(client.log("ctr-net-on", on["id"]).split()) > 1  # lo and the container's interface


def test_enable_gpu_without_a_gpu_fails_clearly(http: httpx.Client, client: Client) -> None:
    created = create(http, "ctr-gpu", "true", enable_gpu=True)
    assert "enable_gpu" not in created.get("sluice_inactive_fields", [])
    job = run_one(client, "ctr-gpu")
    assert job["status"] == "failed"
    assert job["error"] == "enable_gpu is set but podman reports no GPU on this host"


def test_a_multiline_secret_reaches_the_script_intact(http: httpx.Client, client: Client) -> None:
    pem = "-----BEGIN KEY-----\nline two\n-----END KEY-----"
    create(http, "ctr-multiline", 'printf %s "$PEM" > "$TMP_OUTPUT_DIR/pem.txt"\n',
           environment={"secrets": {"PEM": pem}})  # fmt: skip
    job = run_one(client, "ctr-multiline")
    assert job["status"] == "succeeded", job
    assert client.get_bytes("ctr-multiline", "out/pem.txt") == pem.encode()


def test_jobs_and_calls_of_a_service_reuse_its_warm_container(
    http: httpx.Client, client: Client, podman: Podman
) -> None:
    create(http, "ctr-warm", 'echo "$(hostname) $JOB_UUID" > "$TMP_OUTPUT_DIR/where.txt"\n')
    jobs = [run_one(client, "ctr-warm", json.dumps({"n": n}).encode()) for n in range(3)]
    assert [job["status"] for job in jobs] == ["succeeded"] * 3
    calls = [http.post("/run/ctr-warm", content=b"{}") for _ in range(3)]
    assert [call.status_code for call in calls] == [200] * 3
    answers = [base64.b64decode(call.text).decode().split() for call in calls]
    assert len({host for host, _ in answers}) == 1  # one container served the calls one by one
    assert len({job_uuid for _, job_uuid in answers}) == 3  # each call its own environment
    (kept,) = podman.containers(f"{SERVICE_LABEL}=ctr-warm")
    assert answers[0][0] == kept[:12]  # the container's hostname is its short id
    # Deleting the service removes its warm containers.
    assert http.delete("/system/services/ctr-warm").status_code == 204
    wait_until(lambda: not podman.containers(f"{SERVICE_LABEL}=ctr-warm"), 30, "the warm container's removal")


def test_min_scale_starts_a_script_services_container_before_its_first_call(
    http: httpx.Client, podman: Podman
) -> None:
    created = create(http, "ctr-ahead", "hostname\n", synchronous={"min_scale": 1})
    assert "synchronous.min_scale" not in created.get("sluice_inactive_fields", [])
    label = f"{SERVICE_LABEL}=ctr-ahead"
    wait_until(lambda: podman.containers(label), 30, "the service's container starting ahead")
    (ahead,) = podman.containers(label)
    call = http.post("/run/ctr-ahead", content=b"{}")
    assert call.status_code == 200, call.text
    assert call.text.strip() == ahead[:12]  # no output file: the answer is the log, its hostname
    assert podman.containers(label) == [ahead]
    assert http.delete("/system/services/ctr-ahead").status_code == 204
    wait_until(lambda: not podman.containers(label), 30, "the container's removal")


def test_containers_left_by_a_killed_server_are_removed_at_restart(podman: Podman, tmp_path: Path) -> None:
    # Without warm containers: one container per job, labelled with the job.
    env = {**podman.server_env, "SLUICE_WORKERS": "2", "SLUICE_WARM_CONTAINERS": "0"}
    server = ServerProcess(tmp_path / "data", env=env).start()
    try:
        with (
            server.client() as client,
            httpx.Client(base_url=server.endpoint, auth=("oscar", PASSWORD), timeout=30) as http,
        ):
            create(http, "ctr-crash", "sleep 120\n", max_retries=0)
            job_id = client.submit("ctr-crash", b"{}")["job_id"]
            label = f"{JOB_LABEL}={job_id}"
            wait_until(lambda: podman.containers(label), 30, "the job's container starting")
        server.kill()
        left = podman.containers(label)
        assert left, "a SIGKILLed server's container keeps running (conmon owns it)"
        server.start()
        # Removed before the server answered /health (the requeued job may run in a new one).
        assert not set(left) & set(podman.containers(label))
        with server.client() as client:
            client.cancel("ctr-crash", job_id)  # the requeued job would otherwise sleep again
            wait_for_job(client, "ctr-crash", job_id)
    finally:
        server.stop()
    wait_until(lambda: not podman.containers(label), 30, "the rerun's container removal")


# --- handler services: warm replicas in the service's own image ----------------------------------

HANDLER = """\
import os, socket, time

def load():
    return {"host": socket.gethostname(), "pid": os.getpid()}

def predict(request):
    text = request.text()
    if text == "hang":
        time.sleep(60)
    if text == "hog":
        hog = bytearray(400 * 1024 * 1024)  # past the service's memory limit
        return len(hog)
    print("answering", text, flush=True)
    return {"state": request.state, "text": text, "greeting": os.environ.get("GREETING"),
            "path": os.environ.get("PATH"), "in_image": not os.path.exists("/usr/local")}
"""


@pytest.fixture(scope="module")
def handler_code(tmp_path_factory: pytest.TempPathFactory) -> str:
    from sluice.spec.code import pack_code

    folder = tmp_path_factory.mktemp("handler-code")
    (folder / "model.py").write_text(HANDLER)
    return pack_code(folder)


def test_handler_replicas_run_in_the_services_image(
    http: httpx.Client, server: ServerProcess, podman: Podman, handler_code: str
) -> None:
    image = podman.ensure_python_image()
    created = create(
        http, "ctr-handler", "", image=image, handler="model:predict", init="model:load", code=handler_code,
        memory="128Mi", timeout=3, environment={"variables": {"GREETING": "hi"}},
        synchronous={"min_scale": 0, "max_scale": 1},
    )  # fmt: skip
    assert created["sluice_executor"] == "replicas (in containers)"
    token = created["token"]
    url = f"{server.endpoint}/run/ctr-handler"
    headers = {"Authorization": f"Bearer {token}"}
    answers = [httpx.post(url, content=f"call {i}".encode(), headers=headers, timeout=60) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200], answers[0].text
    first = answers[0].json()
    assert first["in_image"] and first["greeting"] == "hi"
    assert ".venv" not in first["path"]  # the image's environment, not the server's
    assert {a.json()["state"]["host"] for a in answers} == {first["state"]["host"]}  # one warm replica
    assert podman.containers(f"{SERVICE_LABEL}=ctr-handler")  # it runs as a container

    # A call past the timeout: 504, the container goes, the next call gets a new one.
    hung = httpx.post(url, content=b"hang", headers=headers, timeout=60)
    assert hung.status_code == 504
    after = httpx.post(url, content=b"after", headers=headers, timeout=60)
    assert after.status_code == 200 and after.json()["state"]["host"] != first["state"]["host"]

    # The memory limit is the container's: the replica is killed, the call answers 502.
    hog = httpx.post(url, content=b"hog", headers=headers, timeout=60)
    assert hog.status_code == 502, hog.text

    # Deleting the service removes its containers.
    assert http.delete("/system/services/ctr-handler").status_code == 204
    wait_until(lambda: not podman.containers(f"{SERVICE_LABEL}=ctr-handler"), 30, "the replicas' removal")


def test_an_exposed_service_runs_in_its_image_behind_the_proxy(
    http: httpx.Client, server: ServerProcess, podman: Podman
) -> None:
    script = (
        'mkdir -p /tmp/www && echo "hello from $(hostname)" > /tmp/www/index.html\n'
        'exec httpd -f -p "$PORT" -h /tmp/www\n'
    )
    create(http, "ctr-web", script, expose={"min_scale": 1, "max_scale": 1, "rewrite_target": True})
    wait_until(
        lambda: http.get("/system/services/ctr-web/deployment").json()["state"] == "ready",
        60,
        "the copy's health",
    )
    page = http.get("/system/services/ctr-web/exposed/index.html")
    assert page.status_code == 200, page.text
    assert page.text.startswith("hello from ") and page.text.strip() != f"hello from {os.uname().nodename}"
    assert podman.containers(f"{SERVICE_LABEL}=ctr-web")
    assert http.delete("/system/services/ctr-web").status_code == 204
    wait_until(
        lambda: not podman.containers(f"{SERVICE_LABEL}=ctr-web"), 30, "the exposed container's removal"
    )


def test_a_handler_service_with_enable_gpu_fails_clearly_without_a_gpu(
    http: httpx.Client, server: ServerProcess, podman: Podman, handler_code: str
) -> None:
    created = create(
        http, "ctr-handler-gpu", "", handler="model:predict", code=handler_code, enable_gpu=True,
        synchronous={"min_scale": 0, "max_scale": 1},
    )  # fmt: skip
    answer = httpx.post(
        f"{server.endpoint}/run/ctr-handler-gpu",
        content=b"call",
        headers={"Authorization": f"Bearer {created['token']}"},
        timeout=60,
    )
    assert answer.status_code == 502, answer.text
    assert "enable_gpu is set but podman reports no GPU on this host" in answer.text
    assert podman.containers(f"{SERVICE_LABEL}=ctr-handler-gpu") == []  # nothing was started
