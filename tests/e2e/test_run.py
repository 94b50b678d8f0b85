"""`POST /run/{svc}` against a real server: OSCAR's body and answer rules, raw HTTP, failures,
overload and auth, and the client and CLI built on it."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import pty
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice.client import Client
from tests.server import PASSWORD, SLUICE, ServerProcess

ADMIN = ("oscar", PASSWORD)
COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/result${SUFFIX:-}"\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"SLUICE_WORKERS": "2", "SLUICE_SYNC_MAX_WAITING": "1"}
    process = ServerProcess(tmp_path_factory.mktemp("run") / "data", env=env).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.endpoint, auth=ADMIN, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


def create(http: httpx.Client, name: str, script: str, **fields: Any) -> str:
    """Create the service; returns its token."""
    spec = {
        "name": name,
        "image": "busybox",
        "script": script,
        "output": [{"storage_provider": "minio.default", "path": f"{name}/out"}],
        **fields,
    }
    created = http.post("/system/services", json=spec)
    assert created.status_code == 201, created.text
    return created.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_json_body_reaches_the_script_as_is_and_one_output_comes_back_base64(http: httpx.Client) -> None:
    token = create(http, "run-copy", COPY)
    body = json.dumps({"text": "héllo", "n": 3}).encode()
    answer = http.post(
        "/run/run-copy", content=body, headers={**bearer(token), "Content-Type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    assert base64.b64decode(answer.text) == body
    # The output also went to the service's output path, as OSCAR's supervisor does.
    listed = http.get("/system/buckets/run-copy").json()["objects"]
    assert [o["object_name"] for o in listed] == ["out/result"]


def test_a_base64_body_is_decoded_before_the_script_reads_it(http: httpx.Client) -> None:
    token = create(http, "run-b64", COPY)
    data = bytes(range(256))
    answer = http.post("/run/run-b64", content=base64.b64encode(data), headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert base64.b64decode(answer.text) == data


def test_a_form_encoded_dict_arrives_as_json(http: httpx.Client) -> None:
    # What oscar-python sends for `run_service(name, input={...})`: a form labelled as JSON.
    token = create(http, "run-form", COPY)
    headers = {**bearer(token), "Content-Type": "application/json"}
    answer = http.post("/run/run-form", content=b"model=digits&threshold=0.5", headers=headers)
    assert json.loads(base64.b64decode(answer.text)) == {"model": "digits", "threshold": "0.5"}


def test_several_outputs_come_back_as_a_base64_zip(http: httpx.Client) -> None:
    script = (
        'echo a > "$TMP_OUTPUT_DIR/a.txt"\n'
        'mkdir "$TMP_OUTPUT_DIR/sub"\n'
        'echo b > "$TMP_OUTPUT_DIR/sub/b.txt"\n'
    )
    token = create(http, "run-zip", script)
    answer = http.post("/run/run-zip", content=b"{}", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(answer.text)))
    assert sorted(archive.namelist()) == ["a.txt", "sub/b.txt"]
    assert archive.read("sub/b.txt") == b"b\n"


def test_no_output_file_answers_with_what_the_script_printed(http: httpx.Client) -> None:
    token = create(http, "run-stdout", 'echo "label: 7"\necho "a warning" >&2\n')
    answer = http.post("/run/run-stdout", content=b"{}", headers=bearer(token))
    assert answer.status_code == 200
    assert answer.text == "label: 7\na warning\n"


def test_raw_bytes_in_and_out_with_their_content_type(http: httpx.Client) -> None:
    token = create(http, "run-raw", COPY, environment={"variables": {"SUFFIX": ".png"}})
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    headers = {**bearer(token), "Content-Type": "image/png", "Accept": "image/png"}
    answer = http.post("/run/run-raw", content=png, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.content == png
    assert answer.headers["content-type"] == "image/png"
    # ?raw=true does the same for clients that cannot set Accept; */* alone keeps OSCAR's base64.
    by_query = http.post(
        "/run/run-raw?raw=true", content=png, headers={**bearer(token), "Content-Type": "image/png"}
    )
    assert by_query.content == png
    oscar_style = http.post(
        "/run/run-raw", content=png, headers={**bearer(token), "Content-Type": "image/png", "Accept": "*/*"}
    )
    assert base64.b64decode(oscar_style.text) == png


def test_a_failing_script_answers_502_with_its_exit_code_and_output(http: httpx.Client) -> None:
    token = create(http, "run-fail", 'echo "model not found" >&2\nexit 3\n')
    answer = http.post("/run/run-fail", content=b"{}", headers=bearer(token))
    assert answer.status_code == 502
    assert "script exited with code 3" in answer.text
    assert "model not found" in answer.text


def test_a_script_past_its_timeout_answers_504(http: httpx.Client) -> None:
    token = create(http, "run-slow", "sleep 30\n", timeout=1)
    answer = http.post("/run/run-slow", content=b"{}", headers=bearer(token))
    assert answer.status_code == 504
    assert "1 s timeout" in answer.text


def test_calls_beyond_the_waiting_room_get_503_with_retry_after(
    http: httpx.Client, server: ServerProcess
) -> None:
    # One call at a time (max_scale 1) and one waiting (SLUICE_SYNC_MAX_WAITING=1): a third is refused.
    token = create(http, "run-busy", "sleep 2\n", synchronous={"min_scale": 0, "max_scale": 1})
    answers: list[httpx.Response] = []

    def call() -> None:
        answers.append(
            httpx.post(f"{server.endpoint}/run/run-busy", content=b"{}", headers=bearer(token), timeout=30)
        )

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 503], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert "waiting" in refused.text


def test_who_may_call(http: httpx.Client, server: ServerProcess) -> None:
    token = create(http, "run-auth", COPY)
    url = f"{server.endpoint}/run/run-auth"
    assert httpx.post(url, content=b"{}").status_code == 401
    assert httpx.post(url, content=b"{}", headers=bearer("0" * 64)).status_code == 401
    assert httpx.post(url, content=b"{}", headers=bearer(token)).status_code == 200
    assert httpx.post(url, content=b"{}", auth=ADMIN).status_code == 200  # the owner's credentials
    # A user who may not see the private service is told nothing about it.
    assert http.post("/v1/users", json={"name": "mallory", "password": "mallory-password"}).status_code == 201
    assert httpx.post(url, content=b"{}", auth=("mallory", "mallory-password")).status_code == 404
    missing = f"{server.endpoint}/run/no-such-service"
    assert httpx.post(missing, content=b"{}").status_code == 401
    assert httpx.post(missing, content=b"{}", auth=ADMIN).status_code == 404


def test_the_client_and_the_cli_return_raw_output(
    http: httpx.Client, client: Client, server: ServerProcess, tmp_path: Path
) -> None:
    create(http, "run-cli", 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/upper.txt"\n')
    assert client.run("run-cli", "hello") == b"HELLO"
    source = tmp_path / "in.txt"
    source.write_text("from a file\n")
    assert client.run("run-cli", source) == b"FROM A FILE\n"
    common = [
        SLUICE,
        "--endpoint",
        server.endpoint,
        "--user",
        "oscar",
        "--password",
        PASSWORD,
        "run",
        "run-cli",
    ]
    printed = subprocess.run([*common, str(source)], capture_output=True, timeout=60, check=True)
    assert printed.stdout == b"FROM A FILE\n"
    piped = subprocess.run(common, input=b"piped", capture_output=True, timeout=60, check=True)
    assert piped.stdout == b"PIPED"  # bytes as sent through a pipe...
    terminal, terminal_end = pty.openpty()
    try:
        subprocess.run(common, input=b"typed", stdout=terminal_end, timeout=60, check=True)
        os.close(terminal_end)
        shown = b""
        with contextlib.suppress(OSError):  # EIO once everything written was read
            while chunk := os.read(terminal, 1024):
                shown += chunk
    finally:
        os.close(terminal)
    assert shown.replace(b"\r\n", b"\n") == b"TYPED\n"  # ...and the prompt on its own line on a terminal
    saved = tmp_path / "out.txt"
    subprocess.run([*common, str(source), "-o", str(saved)], capture_output=True, timeout=60, check=True)
    assert saved.read_bytes() == b"FROM A FILE\n"
    failed = subprocess.run([*common, str(tmp_path / "missing")], capture_output=True, timeout=60)
    assert failed.returncode == 2
    assert b"no such file" in failed.stderr
