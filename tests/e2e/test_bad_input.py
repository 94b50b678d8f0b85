"""Bad input gets a 4xx (or CLI exit code 2) naming the problem, and nothing half-created remains.

Real `sluice serve` processes, the real CLI and raw HTTP over 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sluice.client import Client
from tests.server import PASSWORD, ServerProcess

ADMIN = ("oscar", PASSWORD)


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.endpoint, auth=ADMIN, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A second server with tiny limits: uploads over 1 KiB, JSON bodies over 4 KiB."""
    process = ServerProcess(
        tmp_path_factory.mktemp("limited") / "data",
        env={"SLUICE_MAX_UPLOAD": "1024", "SLUICE_MAX_BODY": "4096"},
    ).start()
    try:
        yield process
    finally:
        process.stop()


def state(http: httpx.Client) -> tuple[list[str], list[str]]:
    """The service names and bucket names the server has."""
    services = http.get("/system/services")
    buckets = http.get("/system/buckets")
    assert services.status_code == buckets.status_code == 200
    return sorted(s["name"] for s in services.json()), sorted(b["bucket_name"] for b in buckets.json())


def io(path: str, provider: str = "minio.default") -> dict[str, Any]:
    return {"storage_provider": provider, "path": path}


def service(tag: str, **changes: Any) -> dict[str, Any]:
    """A valid service with its own buckets; `changes` break it (a None value removes the field)."""
    fields: dict[str, Any] = {
        "name": f"bad-{tag}",
        "image": "alpine:3.20",
        "script": "true\n",
        "input": [io(f"bad-{tag}-in/in")],
        "output": [io(f"bad-{tag}-out/out")],
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def write_fdl(directory: Path, fields: dict[str, Any]) -> Path:
    """An FDL file with the script next to it (the `script` field becomes its relative path)."""
    directory.mkdir(parents=True, exist_ok=True)
    fields = dict(fields)
    if "script" in fields:
        (directory / "script.sh").write_text(fields["script"])
        fields["script"] = "script.sh"
    path = directory / "service.yaml"
    path.write_text(yaml.safe_dump({"functions": {"oscar": [{"e2e-cluster": fields}]}}, sort_keys=False))
    return path


# (id, service fields, what the error must say)
BAD_SERVICES = [
    ("missing-name", service("noname", name=None), ["name: required field is missing"]),
    ("missing-image", service("noimage", image=None), ["image: required field is missing"]),
    ("missing-script", service("noscript", script=None), ["script: required field is missing"]),
    (
        "typo",
        {**service("typo", image=None), "imgae": "alpine:3.20"},
        ["imgae: unknown field", "did you mean 'image'"],
    ),
    ("long-name", service("long", name="n" * 40), ["name:", "at most 39 characters"]),
    ("bad-characters", service("chars", name="Bad_Name"), ["name:", "'Bad_Name'", "lowercase"]),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in BAD_SERVICES], ids=[c[0] for c in BAD_SERVICES]
)
def test_apply_refuses_a_bad_fdl(
    fields: dict[str, Any], expected: list[str], server: ServerProcess, http: httpx.Client, tmp_path: Path
) -> None:
    before = state(http)
    result = server.cli("apply", str(write_fdl(tmp_path, fields)))
    assert result.returncode == 2, result.stdout + result.stderr
    message = flat(result.stderr)
    for fragment in expected:
        assert fragment in message
    assert "Traceback" not in result.stderr
    assert state(http) == before


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in BAD_SERVICES], ids=[c[0] for c in BAD_SERVICES]
)
def test_api_refuses_a_bad_service(fields: dict[str, Any], expected: list[str], http: httpx.Client) -> None:
    before = state(http)
    answer = http.post("/system/services", json=fields)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/plain")
    for fragment in expected:
        assert fragment in answer.text
    assert state(http) == before


def test_apply_malformed_yaml_names_the_line(
    server: ServerProcess, http: httpx.Client, tmp_path: Path
) -> None:
    (tmp_path / "script.sh").write_text("true\n")
    fdl = tmp_path / "broken.yaml"
    fdl.write_text(
        "functions:\n"
        "  oscar:\n"
        "  - e2e-cluster:\n"
        "      name: bad-yaml\n"
        "      image: alpine:3.20\n"
        "     script: script.sh\n"  # one space short: line 6
        "      input: [{path: bad-yaml-in/in}]\n"
    )
    before = state(http)
    result = server.cli("apply", str(fdl))
    assert result.returncode == 2, result.stdout + result.stderr
    message = flat(result.stderr)
    assert "invalid YAML" in message
    assert "line 6" in message
    assert str(fdl) in message
    assert state(http) == before


def test_apply_missing_files(server: ServerProcess, http: httpx.Client, tmp_path: Path) -> None:
    before = state(http)
    missing_fdl = server.cli("apply", str(tmp_path / "nowhere.yaml"))
    assert missing_fdl.returncode == 2
    assert "no such file" in flat(missing_fdl.stderr)
    assert "nowhere.yaml" in flat(missing_fdl.stderr)

    fdl = write_fdl(tmp_path, service("noscriptfile"))
    (tmp_path / "script.sh").unlink()
    missing_script = server.cli("apply", str(fdl))
    assert missing_script.returncode == 2
    assert "script file 'script.sh' not found" in flat(missing_script.stderr)
    assert state(http) == before


def test_api_names_the_bad_characters_of_a_bracketed_name(http: httpx.Client) -> None:
    before = state(http)
    answer = http.post("/system/services", json=service("brackets", name="web[app]"))
    assert answer.status_code == 400
    assert "'web[app]'" in answer.text
    assert state(http) == before


def test_apply_names_the_bad_characters_of_a_bracketed_name(server: ServerProcess, tmp_path: Path) -> None:
    result = server.cli("apply", str(write_fdl(tmp_path, service("brackets", name="web[app]"))))
    assert result.returncode == 2
    assert "'web[app]'" in flat(result.stderr)


@pytest.mark.parametrize("provider", ["minio.undeclared", "webdav.dcache"])
def test_unusable_storage_provider_creates_nothing(provider: str, http: httpx.Client) -> None:
    tag = provider.replace(".", "-")
    before = state(http)
    answer = http.post("/system/services", json=service(tag, output=[io(f"bad-{tag}-out/out", provider)]))
    assert answer.status_code == 400
    assert provider.split(".")[0] in answer.text
    assert state(http) == before


def test_duplicate_service_is_a_conflict(http: httpx.Client) -> None:
    body = service("dup", name="dup-service", input=[], output=[])
    assert http.post("/system/services", json=body).status_code == 201
    again = http.post("/system/services", json={**body, "image": "other:1"})
    assert again.status_code == 409
    assert "dup-service" in again.text
    assert "already exists" in again.text
    assert http.get("/system/services/dup-service").json()["image"] == "alpine:3.20"  # unchanged


def test_non_json_body_is_refused(http: httpx.Client) -> None:
    before = state(http)
    for body in (b"name: bad-notjson\nimage: alpine\n", b"", b"{not json"):
        answer = http.post("/system/services", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, body
        assert "JSON" in answer.text
    listed = http.post("/system/services", json=["a", "list"])
    assert listed.status_code == 400
    assert "mapping" in listed.text
    assert state(http) == before


# object keys


@pytest.mark.parametrize(
    "target",
    [
        "../../escape-raw.txt",
        "in/../../../escape-deep.txt",
        "%2e%2e/%2e%2e/escape-encoded.txt",
        "%2E%2E%2F%2E%2E%2Fescape-slashes.txt",
    ],
)
def test_object_key_cannot_leave_its_bucket(target: str, server: ServerProcess, http: httpx.Client) -> None:
    http.post("/system/buckets", json={"bucket_name": "traversal"})  # 201, or already there
    request = http.build_request(
        "PUT",
        "/v1/buckets/traversal/objects/placeholder",
        content=b"should not be stored",
        extensions={"target": f"/v1/buckets/traversal/objects/{target}".encode()},  # sent unnormalised
    )
    answer = http.send(request)
    assert 400 <= answer.status_code < 500, answer.text
    assert "'..'" in answer.text
    assert not [p for p in server.data_dir.parent.rglob("escape*")]
    assert http.get("/v1/buckets/traversal/objects").json()["objects"] == []


def test_object_key_cannot_read_outside_its_bucket(server: ServerProcess, http: httpx.Client) -> None:
    http.post("/system/buckets", json={"bucket_name": "traversal"})
    secret = (server.data_dir / "signing-key").read_text().strip()
    for target in ("../../signing-key", "%2e%2e/%2e%2e/signing-key"):
        request = http.build_request(
            "GET",
            "/v1/buckets/traversal/objects/placeholder",
            extensions={"target": f"/v1/buckets/traversal/objects/{target}".encode()},
        )
        answer = http.send(request)
        assert 400 <= answer.status_code < 500
        assert secret not in answer.text


def test_get_file_of_a_missing_object(server: ServerProcess, http: httpx.Client, tmp_path: Path) -> None:
    http.post("/system/buckets", json={"bucket_name": "gets"})
    result = server.cli("get-file", "gets/docs/missing-report.pdf", cwd=tmp_path)
    assert result.returncode == 2
    message = flat(result.stderr)
    assert "docs/missing-report.pdf" in message
    assert "not found" in message
    assert list(tmp_path.iterdir()) == []  # no empty file left behind

    no_bucket = server.cli("get-file", "no-such-bucket/a.txt", cwd=tmp_path)
    assert no_bucket.returncode == 2
    assert "no-such-bucket" in flat(no_bucket.stderr)


def test_cli_names_what_is_missing(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    no_bucket = server.cli("put-file", "no-such-bucket/in", str(tmp_path / "a.txt"))
    assert no_bucket.returncode == 2
    assert "bucket 'no-such-bucket' not found" in flat(no_bucket.stderr)

    no_file = server.cli("put-file", "no-such-bucket/in", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"))
    assert no_file.returncode == 2
    assert "no such file" in flat(no_file.stderr)
    assert "b.txt" in flat(no_file.stderr)

    no_service = server.cli("delete", "no-such-service")
    assert no_service.returncode == 2
    assert "service 'no-such-service' not found" in flat(no_service.stderr)


# size limits


def test_upload_over_the_limit_is_refused(limited: ServerProcess, tmp_path: Path) -> None:
    with limited.client() as client, httpx.Client(base_url=limited.endpoint, auth=ADMIN) as http:
        assert http.post("/system/services", json=service("big", name="big", output=[])).status_code == 201
        assert http.get("/system/services/big").json()["input"][0]["path"] == "bad-big-in/in"

        sized = http.put("/v1/buckets/bad-big-in/objects/in/large.bin", content=b"x" * 2048)
        assert sized.status_code == 413
        assert "1024" in sized.text

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
            for _ in range(8):
                yield b"y" * 512

        streamed = http.put("/v1/buckets/bad-big-in/objects/in/streamed.bin", content=chunks())
        assert streamed.status_code == 413

        (tmp_path / "large.bin").write_bytes(b"z" * 4096)
        cli = limited.cli("put-file", "bad-big-in/in", str(tmp_path / "large.bin"))
        assert cli.returncode != 0
        assert "1024" in flat(cli.stderr)
        assert "Traceback" not in cli.stderr

        assert [o for o in client.list_objects("bad-big-in") if not o["object_name"].endswith("/")] == []
        assert list(client.jobs("big")) == []

        small = http.put("/v1/buckets/bad-big-in/objects/other/small.bin", content=b"s" * 512)
        assert small.status_code == 201  # the limit is the only reason the others were refused


def test_put_file_over_the_limit_exits_2(limited: ServerProcess, tmp_path: Path) -> None:
    with httpx.Client(base_url=limited.endpoint, auth=ADMIN) as http:
        http.post("/system/buckets", json={"bucket_name": "big-cli"})
    (tmp_path / "large.bin").write_bytes(b"z" * 4096)
    result = limited.cli("put-file", "big-cli/in", str(tmp_path / "large.bin"))
    assert "1024" in flat(result.stderr)
    assert result.returncode == 2


def test_json_body_over_the_limit_is_refused(limited: ServerProcess) -> None:
    with httpx.Client(base_url=limited.endpoint, auth=ADMIN) as http:
        before = state(http)
        huge = service("huge", script="echo " + "x" * (1024 * 1024 + 1) + "\n")
        answer = http.post("/system/services", json=huge)
        assert answer.status_code == 413
        assert "4096" in answer.text
        assert state(http) == before


# credentials


def test_credentials_are_checked(server: ServerProcess, http: httpx.Client) -> None:
    endpoint = server.endpoint
    wrong = httpx.get(f"{endpoint}/system/services", auth=("oscar", "not-the-password"))
    assert wrong.status_code == 401
    assert "wrong user name or password" in wrong.text
    assert httpx.get(f"{endpoint}/system/services", auth=("someone", PASSWORD)).status_code == 401
    missing = httpx.get(f"{endpoint}/system/services")
    assert missing.status_code == 401
    assert "credentials required" in missing.text

    for name in ("tok-a", "tok-b"):
        created = http.post("/system/services", json=service(name, name=name, input=[], output=[]))
        assert created.status_code == 201
    token_b = http.get("/system/services/tok-b").json()["token"]

    other = httpx.post(
        f"{endpoint}/job/tok-a", content=b"eA==", headers={"Authorization": f"Bearer {token_b}"}
    )
    assert other.status_code == 401
    assert "invalid token" in other.text
    garbage = httpx.post(f"{endpoint}/job/tok-a", content=b"eA==", headers={"Authorization": "Bearer nope"})
    assert garbage.status_code == 401
    anonymous = httpx.post(f"{endpoint}/job/tok-a", content=b"eA==")
    assert anonymous.status_code == 401
    assert http.get("/v1/services/tok-a/jobs").json()["jobs"] == []  # nothing ran

    # Without admin credentials, a missing service looks like a wrong token: names cannot be probed.
    unknown = httpx.post(
        f"{endpoint}/job/no-such-service", content=b"eA==", headers={"Authorization": f"Bearer {token_b}"}
    )
    assert unknown.status_code == 401
    as_admin = httpx.post(f"{endpoint}/job/no-such-service", content=b"eA==", auth=ADMIN)
    assert as_admin.status_code == 404
    assert "no-such-service" in as_admin.text


def test_volumes_are_not_supported_yet(http: httpx.Client) -> None:
    answer = http.get("/system/volumes")
    assert answer.status_code == 501
    assert "not supported" in answer.text
