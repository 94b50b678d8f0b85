"""End to end through the CLI and the API: a real `sluice serve`, the real `sluice` CLI, real HTTP.

One server for the module; every test uses its own service and bucket names.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
import yaml

from sluice.client import Client
from tests.server import PASSWORD, ServerProcess, wait_for_jobs

FINAL = ("succeeded", "failed", "cancelled")
Apply = Callable[..., Path]

UPPER_FDL = """\
functions:
  oscar:
  - e2e-cluster:
      name: upper
      image: alpine:3.20
      script: scripts/upper.sh
      memory: 128Mi
      cpu: '0.5'
      input:
      - storage_provider: minio.default
        path: upper/in
      output:
      - storage_provider: minio.default
        path: upper-out/out
"""

UPPER_SCRIPT = """\
#!/bin/sh
name=$(basename "$INPUT_FILE_PATH")
tr 'a-z' 'A-Z' < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$name.out"
echo "upper: processed $name"
"""


# helpers


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def write_fdl(directory: Path, name: str, script: str, **fields: Any) -> Path:
    """A POSIX sh script and an FDL file next to it that refers to it by a relative path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.sh").write_text(script)
    service = {"name": name, "image": "alpine:3.20", "script": f"{name}.sh", **fields}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"functions": {"oscar": [{"e2e-cluster": service}]}}, sort_keys=False))
    return path


def io(path: str, **filters: list[str]) -> dict[str, Any]:
    return {"storage_provider": "minio.default", "path": path, **filters}


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def wait_for_job(client: Client, service: str, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.job(service, job_id)
        if job["status"] in FINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} of {service} not finished within {timeout}s: {job['status']}")


def minio_event(bucket: str, key: str, etag: str, size: int) -> dict[str, Any]:
    return {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{bucket}/{key}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "eventTime": "2026-01-01T00:00:00.000Z",
                "eventName": "s3:ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": quote(key), "size": size, "eTag": etag},
                },
            }
        ],
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# fixtures


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """Raw HTTP as the admin, for OSCAR's routes."""
    with httpx.Client(base_url=server.endpoint, auth=("oscar", PASSWORD), timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def apply(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Apply:
    """Write a script and its FDL into a fresh dir and create the service with `sluice apply`."""

    def make(name: str, script: str, **fields: Any) -> Path:
        fdl = write_fdl(tmp_path_factory.mktemp(name), name, script, **fields)
        result = server.cli("apply", str(fdl))
        assert result.returncode == 0, result.stderr
        assert f"service {name} created" in flat(result.stdout)
        return fdl

    return make


@dataclass
class Batch:
    inputs: dict[str, bytes]  # file name -> content
    jobs: list[dict[str, Any]]
    apply_output: str
    buckets_after_apply: str
    put_output: str


@pytest.fixture(scope="module")
def upper(server: ServerProcess, client: Client, tmp_path_factory: pytest.TempPathFactory) -> Batch:
    """`sluice apply` the upper-casing service, then `sluice put-file` 100 files in one call."""
    root = tmp_path_factory.mktemp("upper")
    fdl_dir = root / "fdl"
    (fdl_dir / "scripts").mkdir(parents=True)
    (fdl_dir / "scripts" / "upper.sh").write_text(UPPER_SCRIPT)
    (fdl_dir / "upper.yaml").write_text(UPPER_FDL)
    elsewhere = root / "elsewhere"  # the script path is relative to the FDL, not to the cwd
    elsewhere.mkdir()
    applied = server.cli("apply", str(fdl_dir / "upper.yaml"), cwd=elsewhere)
    assert applied.returncode == 0, applied.stderr
    listed = server.cli("ls")
    assert listed.returncode == 0, listed.stderr

    files = root / "files"
    files.mkdir()
    inputs = {}
    for i in range(1, 101):
        name = f"f{i:03d}.txt"
        inputs[name] = f"file number {i} says hello\nline two of {name}\n".encode()
        (files / name).write_bytes(inputs[name])
    put = server.cli("put-file", "upper/in", *(str(files / n) for n in inputs))
    assert put.returncode == 0, put.stderr
    jobs = wait_for_jobs(client, "upper", 100, timeout=180)
    return Batch(inputs, jobs, applied.stdout, listed.stdout, put.stdout)


# the main flow: apply, upload 100 files, check every output


def test_apply_creates_service_and_buckets(upper: Batch, server: ServerProcess, client: Client) -> None:
    assert "service upper created" in flat(upper.apply_output)
    assert {"upper", "upper-out"} <= set(upper.buckets_after_apply.split())
    service = client.service("upper")
    assert service["script"] == UPPER_SCRIPT  # read from scripts/upper.sh, next to the FDL
    assert [i["path"] for i in service["input"]] == ["upper/in"]
    assert [o["path"] for o in service["output"]] == ["upper-out/out"]
    services = server.cli("services")
    assert services.returncode == 0
    assert "upper" in services.stdout and "upper-out/out" in services.stdout


def test_ls_shows_new_empty_folders(server: ServerProcess, apply: Apply) -> None:
    apply("folders", 'cat "$INPUT_FILE_PATH"\n', input=[io("folders/in")], output=[io("folders/out")])
    listed = server.cli("ls", "folders")
    assert listed.returncode == 0
    assert "in" in listed.stdout.split() or "in/" in listed.stdout


def test_ls_shows_keys_with_square_brackets(
    server: ServerProcess, client: Client, http: httpx.Client, tmp_path: Path
) -> None:
    assert http.post("/system/buckets", json={"bucket_name": "brackets"}).status_code == 201
    (tmp_path / "x.txt").write_text("x")
    for key in ("docs/notes[draft].txt", "docs/odd[/x].txt"):
        client.put_file("brackets/docs", tmp_path / "x.txt", key=key)
    listed = server.cli("ls", "brackets")
    assert listed.returncode == 0, listed.stderr
    assert "docs/notes[draft].txt" in listed.stdout
    assert "docs/odd[/x].txt" in listed.stdout


def test_put_file_of_100_files_makes_100_jobs(upper: Batch) -> None:
    assert "uploaded 100 file(s) to upper/in; 100 job(s) queued" in flat(upper.put_output)
    assert len(upper.jobs) == 100
    assert sorted(j["key"] for j in upper.jobs) == sorted(f"in/{n}" for n in upper.inputs)


def test_every_output_has_the_right_content(upper: Batch, client: Client) -> None:
    objects = list(client.list_objects("upper-out", "out/"))
    assert sorted(o["object_name"] for o in objects) == sorted(f"out/{n}.out" for n in upper.inputs)
    for name, content in upper.inputs.items():
        assert client.get_bytes("upper-out", f"out/{name}.out") == content.upper()


def test_get_file_downloads_outputs(upper: Batch, server: ServerProcess, tmp_path: Path) -> None:
    for name in ("f001.txt", "f050.txt", "f100.txt"):
        result = server.cli("get-file", f"upper-out/out/{name}.out", str(tmp_path))
        assert result.returncode == 0, result.stderr
        assert (tmp_path / f"{name}.out").read_bytes() == upper.inputs[name].upper()
    to_stdout = server.cli("get-file", "upper-out/out/f042.txt.out", "-")
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert to_stdout.stdout.encode() == upper.inputs["f042.txt"].upper()


def test_cli_jobs_lists_100_succeeded(upper: Batch, server: ServerProcess) -> None:
    listed = server.cli("jobs", "upper")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("succeeded") == 100
    for job in upper.jobs:
        assert job["id"] in listed.stdout
    failed = server.cli("jobs", "upper", "--status", "failed")
    assert failed.returncode == 0, failed.stderr
    assert "succeeded" not in failed.stdout
    assert not any(job["id"] in failed.stdout for job in upper.jobs)


def test_cli_logs_show_the_scripts_stdout(upper: Batch, server: ServerProcess) -> None:
    job = next(j for j in upper.jobs if j["key"] == "in/f007.txt")
    result = server.cli("logs", "upper", job["id"])
    assert result.returncode == 0, result.stderr
    assert "upper: processed f007.txt" in result.stdout


def test_reapplying_a_changed_fdl_updates_the_service(
    server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    script = 'echo "greeting=$GREETING"\n'
    fdl = write_fdl(tmp_path, "reapply", script, environment={"variables": {"GREETING": "hello"}})
    first = server.cli("apply", str(fdl))
    assert first.returncode == 0, first.stderr
    assert "service reapply created" in flat(first.stdout)
    token = client.service("reapply")["token"]

    fdl = write_fdl(
        tmp_path, "reapply", script, memory="64Mi", environment={"Variables": {"GREETING": "bonjour"}}
    )
    second = server.cli("apply", str(fdl))
    assert second.returncode == 0, second.stderr
    assert "service reapply updated" in flat(second.stdout)

    service = client.service("reapply")
    assert service["token"] == token  # callers holding the token keep working
    assert service["environment"]["variables"] == {"GREETING": "bonjour"}
    assert service["memory"] == "64Mi"
    assert [s["name"] for s in client.services()].count("reapply") == 1
    job_id = client.submit("reapply", base64.b64encode(b"x"))["job_id"]
    job = wait_for_job(client, "reapply", job_id)
    assert job["status"] == "succeeded"
    assert "greeting=bonjour" in client.log("reapply", job_id)


def test_output_prefix_and_suffix_filters(apply: Apply, client: Client, tmp_path: Path) -> None:
    script = (
        'for f in a.json b.txt keep-c.txt keep-d.json; do echo "$f" > "$TMP_OUTPUT_DIR/$f"; done\n'
        'mkdir -p "$TMP_OUTPUT_DIR/sub" && echo deep > "$TMP_OUTPUT_DIR/sub/e.json"\n'
    )
    apply(
        "filters",
        script,
        input=[io("filters/in")],
        output=[io("filters-out/json", suffix=[".json"]), io("filters-out/keep", prefix=["keep-"])],
    )
    (tmp_path / "x.txt").write_text("go")
    upload = client.put_file("filters/in", tmp_path / "x.txt")
    assert len(upload["jobs"]) == 1
    assert wait_for_job(client, "filters", upload["jobs"][0])["status"] == "succeeded"
    keys = sorted(o["object_name"] for o in client.list_objects("filters-out"))
    assert keys == [
        "json/a.json",
        "json/keep-d.json",
        "json/sub/e.json",
        "keep/keep-c.txt",
        "keep/keep-d.json",
    ]
    assert client.get_bytes("filters-out", "keep/keep-c.txt") == b"keep-c.txt\n"


# failures, retries, timeouts


def test_failing_script_is_failed_and_requeue_runs_it_again(
    apply: Apply, server: ServerProcess, client: Client, http: httpx.Client, tmp_path: Path
) -> None:
    counter = tmp_path / "counter"
    counter.mkdir()
    script = 'echo run >> "$COUNTER_DIR/runs"\necho "something broke" >&2\nexit 3\n'
    apply(
        "fails",
        script,
        input=[io("fails/in")],
        output=[io("fails/out")],
        environment={"variables": {"COUNTER_DIR": str(counter)}},
    )
    (tmp_path / "in.txt").write_text("data")
    job_id = client.put_file("fails/in", tmp_path / "in.txt")["jobs"][0]
    job = wait_for_job(client, "fails", job_id)
    assert job["status"] == "failed"
    assert job["exit_code"] == 3
    assert "exited with code 3" in job["error"]
    assert "something broke" in client.log("fails", job_id)
    assert list(client.list_objects("fails", "out/")) == []  # no outputs from a failed run

    dead = http.get("/v1/jobs/failed")
    assert dead.status_code == 200
    assert job_id in [j["id"] for j in dead.json()["jobs"]]

    requeued = server.cli("requeue", "fails", job_id)
    assert requeued.returncode == 0, requeued.stderr
    assert f"job {job_id} queued again" in flat(requeued.stdout)
    again = wait_for_job(client, "fails", job_id)
    assert again["status"] == "failed"
    assert again["exit_code"] == 3
    assert (counter / "runs").read_text().splitlines() == ["run", "run"]  # it really ran twice


def test_retries_until_the_script_succeeds(apply: Apply, client: Client, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.mkdir()
    script = (
        'n=$(cat "$COUNTER_DIR/count" 2>/dev/null || echo 0)\n'
        "n=$((n + 1))\n"
        'echo "$n" > "$COUNTER_DIR/count"\n'
        'if [ "$n" -le 2 ]; then echo "attempt $n fails"; exit 1; fi\n'
        'echo "attempt $n works" > "$TMP_OUTPUT_DIR/result.txt"\n'
    )
    apply(
        "flaky",
        script,
        max_retries=2,
        input=[io("flaky/in")],
        output=[io("flaky/out")],
        environment={"variables": {"COUNTER_DIR": str(counter)}},
    )
    (tmp_path / "in.txt").write_text("data")
    job_id = client.put_file("flaky/in", tmp_path / "in.txt")["jobs"][0]
    job = wait_for_job(client, "flaky", job_id)
    assert job["status"] == "succeeded"
    assert job["attempts"] == 3
    assert job["exit_code"] == 0
    assert client.get_bytes("flaky", "out/result.txt") == b"attempt 3 works\n"


def test_timeout_fails_the_job(apply: Apply, client: Client) -> None:
    apply("slowpoke", "echo started\nsleep 30\necho never\n", timeout=1)
    job_id = client.submit("slowpoke", base64.b64encode(b"x"))["job_id"]
    job = wait_for_job(client, "slowpoke", job_id, timeout=30)
    assert job["status"] == "failed"
    assert "timed out" in job["error"]
    log = client.log("slowpoke", job_id)
    assert "started" in log and "never" not in log


def test_cancel_a_running_job(apply: Apply, server: ServerProcess, client: Client) -> None:
    apply("sleeper", "echo sleeping\nsleep 30\n")
    job_id = client.submit("sleeper", base64.b64encode(b"x"))["job_id"]
    wait_until(lambda: client.job("sleeper", job_id)["status"] == "running", "the job to start")
    cancelled = server.cli("cancel", "sleeper", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id}: running -> cancelled" in flat(cancelled.stdout)
    jobs = wait_for_jobs(client, "sleeper", 1, timeout=30)
    assert [(j["id"], j["status"]) for j in jobs] == [(job_id, "cancelled")]


# POST /job/{svc}


def test_job_from_a_minio_event_is_idempotent(
    apply: Apply, client: Client, http: httpx.Client, tmp_path: Path
) -> None:
    script = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$JOB_UUID.bin"\necho "key=$STORAGE_OBJECT_KEY"\n'
    apply("events", script, input=[io("events/in")], output=[io("events/out")])
    token = client.service("events")["token"]
    (tmp_path / "photo.txt").write_bytes(b"an object that already exists")
    stored = client.put_file("events/staging", tmp_path / "photo.txt", key="staging/my photo.txt")
    assert stored["jobs"] == []  # not in an input path: nothing runs on upload
    event = minio_event("events", "staging/my photo.txt", stored["etag"], stored["size_bytes"])

    first = http.post("/job/events", content=json.dumps(event), headers=bearer(token), auth=None)
    assert first.status_code == 201, first.text
    job_id = first.json()["job_id"]
    assert job_id
    assert first.headers["X-Job-Id"] == job_id
    second = http.post("/job/events", content=json.dumps(event), headers=bearer(token), auth=None)
    assert second.status_code == 201, second.text
    assert second.json()["job_id"] == job_id
    assert second.headers["X-Job-Id"] == job_id

    jobs = wait_for_jobs(client, "events", 1)
    assert [(j["id"], j["status"]) for j in jobs] == [(job_id, "succeeded")]
    assert client.get_bytes("events", f"out/{job_id}.bin") == b"an object that already exists"
    assert "key=events/staging/my photo.txt" in client.log("events", job_id)


def test_job_with_a_base64_body(apply: Apply, client: Client, http: httpx.Client) -> None:
    apply("payload", 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$JOB_UUID.bin"\n', output=[io("payload/out")])
    token = client.service("payload")["token"]
    data = bytes(range(256)) * 4
    answer = http.post("/job/payload", content=base64.b64encode(data), headers=bearer(token), auth=None)
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["job_id"]
    assert answer.headers["X-Job-Id"] == job_id
    assert wait_for_job(client, "payload", job_id)["status"] == "succeeded"
    assert client.get_bytes("payload", f"out/{job_id}.bin") == data


# OSCAR's routes


def test_oscar_job_list_shape_and_paging(upper: Batch, http: httpx.Client) -> None:
    everything = http.get("/system/logs/upper")
    assert everything.status_code == 200
    body = everything.json()
    assert set(body) == {"jobs", "next_page", "remaining_jobs"}
    for info in body["jobs"].values():
        assert info["status"] == "Succeeded"
        for field in ("creation_time", "start_time", "finish_time"):
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", info[field]), info

    seen: list[str] = []
    sizes = []
    page = None
    for _ in range(10):
        answer = http.get("/system/logs/upper", params={"limit": 30, **({"page": page} if page else {})})
        assert answer.status_code == 200
        data = answer.json()
        sizes.append(len(data["jobs"]))
        if not seen:
            assert data["remaining_jobs"] == 70
        seen.extend(data["jobs"])
        page = data["next_page"]
        if not page:
            assert data["remaining_jobs"] == 0
            break
    assert sizes == [30, 30, 30, 10]
    assert len(seen) == len(set(seen)) == 100
    assert set(seen) == {j["id"] for j in upper.jobs}


def test_oscar_remaining_jobs_counts_down(upper: Batch, http: httpx.Client) -> None:
    first = http.get("/system/logs/upper", params={"limit": 30}).json()
    second = http.get("/system/logs/upper", params={"limit": 30, "page": first["next_page"]}).json()
    assert second["remaining_jobs"] == 40


def test_oscar_job_log_is_text(upper: Batch, http: httpx.Client) -> None:
    job = next(j for j in upper.jobs if j["key"] == "in/f099.txt")
    answer = http.get(f"/system/logs/upper/{job['id']}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "upper: processed f099.txt" in answer.text


def test_oscar_delete_logs(apply: Apply, client: Client, http: httpx.Client) -> None:
    apply("cleanup", 'if grep -q bad "$INPUT_FILE_PATH"; then exit 1; fi\necho fine\n')
    ids = {
        text: client.submit("cleanup", base64.b64encode(text))["job_id"]
        for text in (b"good one", b"good two", b"bad one")
    }
    jobs = wait_for_jobs(client, "cleanup", 3)
    assert sorted(j["status"] for j in jobs) == ["failed", "succeeded", "succeeded"]

    assert http.delete("/system/logs/cleanup").status_code == 204
    left = list(client.jobs("cleanup"))
    assert [(j["id"], j["status"]) for j in left] == [(ids[b"bad one"], "failed")]
    assert list(http.get("/system/logs/cleanup").json()["jobs"]) == [ids[b"bad one"]]

    assert http.delete("/system/logs/cleanup", params={"all": "true"}).status_code == 204
    assert list(client.jobs("cleanup")) == []
    assert http.get("/system/logs/cleanup").json()["jobs"] == {}


def test_service_token_is_64_lowercase_hex(upper: Batch, apply: Apply, http: httpx.Client) -> None:
    apply("tokens", "true\n")
    tokens = []
    for name in ("upper", "tokens"):
        answer = http.get(f"/system/services/{name}")
        assert answer.status_code == 200
        assert answer.json()["name"] == name
        tokens.append(answer.json()["token"])
        assert re.fullmatch(r"[0-9a-f]{64}", tokens[-1])
    assert tokens[0] != tokens[1]
    assert http.get("/system/services/no-such-service").status_code == 404


def test_presigned_upload_creates_a_job(apply: Apply, client: Client, http: httpx.Client) -> None:
    apply(
        "signed",
        'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n',
        input=[io("signed/in")],
        output=[io("signed/out")],
    )
    answer = http.post(
        "/system/buckets/signed/presign",
        json={"object_key": "in/one.txt", "operation": "upload", "expires_in": 600},
    )
    assert answer.status_code == 200, answer.text
    presigned = answer.json()
    assert presigned["method"] == "PUT"
    assert presigned["object_key"] == "in/one.txt"
    put = httpx.put(presigned["url"], content=b"first upload, no credentials")
    assert put.status_code == 201, put.text
    [job_id] = put.json()["jobs"]
    assert wait_for_job(client, "signed", job_id)["status"] == "succeeded"
    assert client.get_bytes("signed", "out/one.txt") == b"first upload, no credentials"

    # oscar-python sends `expires` where OSCAR reads `expires_in`
    before = time.time()
    answer = http.post(
        "/system/buckets/signed/presign",
        json={"object_key": "in/two.txt", "operation": "upload", "expires": 120},
    )
    assert answer.status_code == 200, answer.text
    url = answer.json()["url"]
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    assert before + 60 < expires < time.time() + 180  # 120 s was honoured, not the 3600 s default
    put = httpx.put(url, content=b"second upload")
    assert put.status_code == 201, put.text
    [job_id] = put.json()["jobs"]
    assert wait_for_job(client, "signed", job_id)["status"] == "succeeded"
    assert client.get_bytes("signed", "out/two.txt") == b"second upload"


def test_presigned_download_and_tampered_signatures(
    client: Client, http: httpx.Client, tmp_path: Path
) -> None:
    assert http.post("/system/buckets", json={"bucket_name": "signed-dl"}).status_code == 201
    (tmp_path / "doc.txt").write_bytes(b"download me")
    client.put_file("signed-dl/docs", tmp_path / "doc.txt")

    answer = http.post(
        "/system/buckets/signed-dl/presign",
        json={"object_key": "docs/doc.txt", "operation": "download", "expires_in": 300},
    )
    assert answer.status_code == 200, answer.text
    url = answer.json()["url"]
    assert answer.json()["method"] == "GET"
    got = httpx.get(url)
    assert got.status_code == 200
    assert got.content == b"download me"

    def tamper(signed: str) -> str:
        last = signed[-1]
        return signed[:-1] + ("0" if last != "0" else "1")

    assert httpx.get(tamper(url)).status_code == 403
    upload = http.post(
        "/system/buckets/signed-dl/presign",
        json={"object_key": "docs/new.txt", "operation": "upload", "expires_in": 300},
    ).json()["url"]
    refused = httpx.put(tamper(upload), content=b"sneaky")
    assert refused.status_code == 403
    assert [o["object_name"] for o in client.list_objects("signed-dl")] == ["docs/doc.txt"]


def test_bucket_listing_pages(upper: Batch, http: httpx.Client) -> None:
    names: list[str] = []
    pages = 0
    page = ""
    while True:
        answer = http.get(
            "/system/buckets/upper-out", params={"limit": 40, **({"page": page} if page else {})}
        )
        assert answer.status_code == 200, answer.text
        data = answer.json()
        pages += 1
        assert data["bucket_name"] == "upper-out"
        assert data["returned_items"] == len(data["objects"])
        names.extend(o["object_name"] for o in data["objects"])
        page = data["next_page"]
        assert data["is_truncated"] == bool(page)
        if not page or pages > 5:
            break
    assert pages == 3
    assert len(names) == len(set(names)) == 100
    assert set(names) == {f"out/{n}.out" for n in upper.inputs}


def test_delete_keeps_buckets_and_purge_removes_them(
    apply: Apply, server: ServerProcess, client: Client, http: httpx.Client, tmp_path: Path
) -> None:
    script = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/copy.txt"\n'
    for name in ("keeper", "purged"):
        apply(name, script, input=[io(f"{name}/in")], output=[io(f"{name}-out/out")])
        (tmp_path / "a.txt").write_text(name)
        job_id = client.put_file(f"{name}/in", tmp_path / "a.txt")["jobs"][0]
        assert wait_for_job(client, name, job_id)["status"] == "succeeded"

    deleted = server.cli("delete", "keeper")
    assert deleted.returncode == 0, deleted.stderr
    assert "service keeper deleted" in flat(deleted.stdout)
    assert http.get("/system/services/keeper").status_code == 404
    assert "keeper" not in [s["name"] for s in client.services()]
    buckets = server.cli("ls").stdout.split()
    assert "keeper" in buckets and "keeper-out" in buckets
    assert client.get_bytes("keeper", "in/a.txt") == b"keeper"
    assert client.get_bytes("keeper-out", "out/copy.txt") == b"keeper"

    purged = server.cli("delete", "purged", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert "service purged deleted with its buckets" in flat(purged.stdout)
    assert http.get("/system/services/purged").status_code == 404
    buckets = server.cli("ls").stdout.split()
    assert "purged" not in buckets and "purged-out" not in buckets
    assert http.get("/system/buckets/purged").status_code == 404
    assert "keeper" in buckets  # the other service's data is untouched


def test_health_and_config(server: ServerProcess, http: httpx.Client) -> None:
    health = httpx.get(f"{server.endpoint}/health")
    assert health.status_code == 200
    assert health.text == "Ok"
    for path in ("/system/config", "/system/config/"):
        answer = http.get(path)
        assert answer.status_code == 200, path
        body = answer.json()
        assert "config" in body
        assert set(body["minio_provider"]) >= {"endpoint", "verify", "access_key", "secret_key", "region"}
        assert httpx.get(f"{server.endpoint}{path}").status_code == 401


def test_a_definition_read_from_the_api_can_be_put_back(http: httpx.Client, client: Client) -> None:
    created = http.post(
        "/system/services",
        json={
            "name": "roundtrip",
            "image": "busybox",
            "script": 'printf "%s" "$SECRET"\n',
            "enable_gpu": True,
            "environment": {"secrets": {"SECRET": "s3cr3t"}},
        },
    )
    assert created.status_code == 201, created.text
    read = http.get("/system/services/roundtrip").json()
    assert read["environment"]["secrets"] == {"SECRET": "********"}
    assert read["sluice_inactive_fields"] == ["enable_gpu"]
    put_back = http.put("/system/services", json=read)
    assert put_back.status_code == 204, put_back.text
    # The masked value sent back kept the real secret: the script still sees it.
    job_id = client.submit("roundtrip", b"{}")["job_id"]
    wait_for_jobs(client, "roundtrip", 1)
    assert client.log("roundtrip", job_id) == "s3cr3t"
