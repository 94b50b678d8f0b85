"""The official OSCAR Python client (oscar-python 2.2.0), unchanged, against a real Sluice server on
a real S3 store: what an OSCAR user's notebook does must work.

"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from oscar_python.client import Client as OscarClient

from tests.seaweed import SeaweedFS
from tests.server import PASSWORD, ServerProcess

CLUSTER = "sluice-test"


@pytest.fixture(scope="module")
def sluice(seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("oscar-python") / "data"
    server = ServerProcess(
        data, extra_args=("--storage", seaweedfs.storage_url, "--reconcile-interval", "0.5")
    )
    yield server.start()
    server.stop()


@pytest.fixture
def oscar(sluice: ServerProcess) -> OscarClient:
    return OscarClient(
        {
            "cluster_id": CLUSTER,
            "endpoint": sluice.endpoint,
            "user": "oscar",
            "password": PASSWORD,
            "ssl": False,
        }
    )


def write_fdl(folder: Path, name: str, bucket: str, script: str, cpu: str = "0.5") -> Path:
    (folder / f"{name}.sh").write_text(script)
    fdl = folder / f"{name}.yaml"
    # oscar-python reads `cpu` unconditionally, so OSCAR users' FDL files always carry it.
    fdl.write_text(
        f"functions:\n  oscar:\n  - {CLUSTER}:\n      name: {name}\n      image: busybox\n"
        f"      cpu: '{cpu}'\n      memory: 256Mi\n      script: {name}.sh\n"
        f"      environment:\n        Variables:\n          GREETING: hello\n"
        f"      input:\n      - storage_provider: minio.default\n        path: {bucket}/in\n"
        f"      output:\n      - storage_provider: minio.default\n        path: {bucket}/out\n"
    )
    return fdl


def wait_for(check, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_cluster_routes(oscar: OscarClient) -> None:
    assert oscar.health_check().text == "Ok"
    assert oscar.get_cluster_info().json()["version"]
    provider = oscar.get_cluster_config().json()["minio_provider"]
    assert provider["endpoint"].startswith("http://127.0.0.1:")
    assert oscar.get_cluster_status().status_code == 200


def test_service_lifecycle_jobs_and_storage(oscar: OscarClient, tmp_path: Path) -> None:
    name = f"op-{uuid.uuid4().hex[:8]}"
    bucket = f"opb-{uuid.uuid4().hex[:10]}"
    script = (
        'echo "$GREETING from $(basename "$INPUT_FILE_PATH")"\n'
        'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n'
    )
    fdl = write_fdl(tmp_path, name, bucket, script)

    assert oscar.create_service(str(fdl)).status_code == 201
    with pytest.raises(ValueError, match="already present"):
        oscar.create_service(str(fdl))
    assert name in [s["name"] for s in oscar.list_services().json()]
    service = oscar.get_service(name).json()
    assert len(service["token"]) == 64 and service["environment"]["variables"] == {"GREETING": "hello"}

    # Update from an edited FDL file.
    write_fdl(tmp_path, name, bucket, script, cpu="1.0")
    assert oscar.update_service(name, str(fdl)).status_code == 204
    assert oscar.get_service(name).json()["cpu"] == "1.0"

    # The Storage helper uploads straight to the S3 endpoint /system/config announces; the
    # platform notices the new object and runs the service on it.
    storage = oscar.create_storage_client(name)
    source = tmp_path / "note.txt"
    source.write_text("from a notebook\n")
    storage.upload_file("minio.default", str(source), f"{bucket}/in")
    jobs = wait_for(
        lambda: {k: v for k, v in oscar.list_jobs(name).json()["jobs"].items() if v["status"] == "Succeeded"}
    )
    (job_id,) = jobs
    assert "hello from note.txt" in oscar.get_job_logs(name, job_id).text

    listed = storage.list_files_from_path("minio.default", f"{bucket}/out")
    assert [o["Key"] for o in listed["Contents"]] == ["out/note.txt"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    storage.download_file("minio.default", str(downloads), f"{bucket}/out/note.txt")
    assert (downloads / "note.txt").read_text() == "FROM A NOTEBOOK\n"

    # Jobs: OSCAR's listing shape, removal of one job and of the succeeded ones.
    page = oscar.list_jobs(name).json()
    assert set(page) == {"jobs", "next_page", "remaining_jobs"}
    assert oscar.remove_job(name, job_id).status_code == 204
    assert oscar.list_jobs(name).json()["jobs"] == {}
    assert oscar.remove_all_jobs(name).status_code == 204

    assert oscar.remove_service(name).status_code == 204
    assert name not in [s["name"] for s in oscar.list_services().json()]


def test_run_service_synchronously_and_asynchronously(oscar: OscarClient, tmp_path: Path) -> None:
    name = f"op-run-{uuid.uuid4().hex[:8]}"
    bucket = f"opr-{uuid.uuid4().hex[:10]}"
    script = 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/answer.txt"\n'
    assert oscar.create_service(str(write_fdl(tmp_path, name, bucket, script))).status_code == 201

    # A file as input, the single output file written where asked (oscar-python decodes base64).
    source = tmp_path / "question.txt"
    source.write_text("what is the label?\n")
    answer = tmp_path / "answer.txt"
    response = oscar.run_service(name, input=str(source), output=str(answer), timeout=60)
    assert response.status_code == 200
    assert answer.read_text() == "WHAT IS THE LABEL?\n"
    # A string, and a dict (which requests form-encodes): the script reads text and JSON.
    text = oscar.run_service(name, input="plain text", output=str(tmp_path / "t.txt"), timeout=60)
    assert text.status_code == 200 and (tmp_path / "t.txt").read_text() == "PLAIN TEXT"
    oscar.run_service(name, input={"model": "digits"}, output=str(tmp_path / "d.json"), timeout=60)
    assert json.loads((tmp_path / "d.json").read_text()) == {"MODEL": "DIGITS"}

    # The same call as a job.
    queued = oscar.run_service(name, input="later", async_call=True, timeout=60)
    assert queued.status_code == 201
    wait_for(lambda: [j for j in oscar.list_jobs(name).json()["jobs"].values() if j["status"] == "Succeeded"])
    assert oscar.remove_service(name).status_code == 204


def test_buckets_and_presigned_urls(oscar: OscarClient, tmp_path: Path) -> None:
    import requests

    bucket = f"opp-{uuid.uuid4().hex[:10]}"
    assert oscar.create_bucket(bucket).status_code == 201
    assert bucket in [b["bucket_name"] for b in oscar.list_buckets().json()]
    # oscar-python sends `expires` where OSCAR reads `expires_in`: both work.
    upload = oscar.presign_bucket(bucket, "in/data.bin", operation="upload", expires=120).json()
    assert requests.put(upload["url"], data=b"\x00\x01payload", timeout=30).status_code == 200
    download = oscar.presign_bucket(bucket, "in/data.bin", operation="download", expires=120).json()
    assert requests.get(download["url"], timeout=30).content == b"\x00\x01payload"
    objects = oscar.get_bucket(bucket).json()["objects"]
    assert [o["object_name"] for o in objects] == ["in/data.bin"]
    assert oscar.delete_bucket(bucket).status_code == 204


def test_unsupported_routes_answer_clearly(oscar: OscarClient) -> None:
    import requests

    with pytest.raises(requests.HTTPError) as raised:
        oscar.list_volumes()
    assert raised.value.response.status_code == 501
    assert "not supported" in raised.value.response.text
