"""Each user's S3 keys from `/system/config` open their buckets and no one else's, on a real
SeaweedFS through its IAM API; the scope follows sharing; removing the user revokes them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from oscar_python.client import Client as OscarClient

from tests.seaweed import SeaweedFS
from tests.server import PASSWORD, ServerProcess

ADMIN = ("oscar", PASSWORD)
USERS = {"alice": "alice-password", "bob": "bob-password"}


@pytest.fixture(scope="module")
def sluice(seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("s3-keys") / "data"
    server = ServerProcess(data, extra_args=("--storage", seaweedfs.storage_url, "--reconcile-interval", "0"))
    server.start()
    with httpx.Client(base_url=server.endpoint, auth=ADMIN, timeout=30) as http:
        for name, password in USERS.items():
            assert http.post("/v1/users", json={"name": name, "password": password}).status_code == 201
    yield server
    server.stop()


@pytest.fixture(scope="module")
def buckets(sluice: ServerProcess) -> dict[str, str]:
    """A private bucket each for alice and bob, made through the API as each of them."""
    made = {}
    for name in USERS:
        bucket = f"{name}-{uuid.uuid4().hex[:10]}"
        created = httpx.post(
            f"{sluice.endpoint}/system/buckets", json={"bucket_name": bucket}, auth=(name, USERS[name])
        )
        assert created.status_code == 201, created.text
        made[name] = bucket
    return made


def config_of(sluice: ServerProcess, auth: tuple[str, str]) -> dict[str, str]:
    answer = httpx.get(f"{sluice.endpoint}/system/config", auth=auth, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["minio_provider"]


def s3_with(provider: dict[str, str]):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=provider["endpoint"],
        aws_access_key_id=provider["access_key"],
        aws_secret_access_key=provider["secret_key"],
        region_name=provider["region"],
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def allowed(action: Callable[[], object]) -> bool:
    try:
        action()
        return True
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in (
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        )
        return False


def eventually(check: Callable[[], bool], expected: bool, timeout: float = 15) -> None:
    """The store reloads identities from its filer a moment after a change."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check() == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"still {not expected} after {timeout}s")


def test_a_users_keys_open_their_buckets_only(sluice: ServerProcess, buckets: dict[str, str]) -> None:
    admin = config_of(sluice, ADMIN)
    alice = config_of(sluice, ("alice", USERS["alice"]))
    assert alice["access_key"] and alice["secret_key"]
    assert alice["access_key"] != admin["access_key"]
    assert config_of(sluice, ("alice", USERS["alice"])) == alice  # issued once, the same every time
    s3 = s3_with(alice)
    own, other = buckets["alice"], buckets["bob"]
    eventually(lambda: allowed(lambda: s3.put_object(Bucket=own, Key="in/a.txt", Body=b"mine")), True)
    assert s3.get_object(Bucket=own, Key="in/a.txt")["Body"].read() == b"mine"
    assert not allowed(lambda: s3.put_object(Bucket=other, Key="x.txt", Body=b"intrusion"))
    assert not allowed(lambda: s3.list_objects_v2(Bucket=other))
    # Objects only: the bucket itself (its deletion, its policy) stays Sluice's business.
    s3.delete_object(Bucket=own, Key="in/a.txt")
    assert not allowed(lambda: s3.delete_bucket(Bucket=own))


def test_sharing_a_bucket_widens_the_keys_and_unsharing_narrows_them(
    sluice: ServerProcess, buckets: dict[str, str]
) -> None:
    s3 = s3_with(config_of(sluice, ("alice", USERS["alice"])))
    shared = buckets["bob"]
    bob = ("bob", USERS["bob"])
    body = {"bucket_name": shared, "visibility": "restricted", "allowed_users": ["alice"]}
    assert httpx.put(f"{sluice.endpoint}/system/buckets", json=body, auth=bob).status_code == 204
    eventually(lambda: allowed(lambda: s3.list_objects_v2(Bucket=shared)), True)
    body = {"bucket_name": shared, "visibility": "private", "allowed_users": []}
    assert httpx.put(f"{sluice.endpoint}/system/buckets", json=body, auth=bob).status_code == 204
    eventually(lambda: allowed(lambda: s3.list_objects_v2(Bucket=shared)), False)


def test_oscar_pythons_storage_helper_works_with_a_users_keys(
    sluice: ServerProcess, buckets: dict[str, str], tmp_path: Path
) -> None:
    oscar = OscarClient(
        {
            "cluster_id": "c",
            "endpoint": sluice.endpoint,
            "user": "alice",
            "password": USERS["alice"],
            "ssl": False,
        }
    )
    # The helper reads /system/config through a service the user may see.
    spec = {"name": f"k-{uuid.uuid4().hex[:8]}", "image": "busybox", "script": "true", "cpu": "0.5"}
    assert (
        httpx.post(
            f"{sluice.endpoint}/system/services", json=spec, auth=("alice", USERS["alice"])
        ).status_code
        == 201
    )
    storage = oscar.create_storage_client(spec["name"])
    source = tmp_path / "note.txt"
    source.write_text("through the helper\n")
    eventually(lambda: _upload(storage, source, f"{buckets['alice']}/up"), True)
    listed = storage.list_files_from_path("minio.default", f"{buckets['alice']}/up")
    assert [o["Key"] for o in listed["Contents"]] == ["up/note.txt"]


def _upload(storage, source: Path, path: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        storage.upload_file("minio.default", str(source), path)
        return True
    except Exception:
        return False


def test_removing_the_user_revokes_their_keys(sluice: ServerProcess, buckets: dict[str, str]) -> None:
    # Its own user, so the other tests' alice keeps hers.
    with httpx.Client(base_url=sluice.endpoint, auth=ADMIN, timeout=30) as http:
        assert http.post("/v1/users", json={"name": "carol", "password": "carol-password"}).status_code == 201
        bucket = f"carol-{uuid.uuid4().hex[:10]}"
        made = http.post("/system/buckets", json={"bucket_name": bucket}, auth=("carol", "carol-password"))
        assert made.status_code == 201
        s3 = s3_with(config_of(sluice, ("carol", "carol-password")))
        eventually(lambda: allowed(lambda: s3.list_objects_v2(Bucket=bucket)), True)
        assert http.delete("/v1/users/carol").status_code == 204
    eventually(lambda: allowed(lambda: s3.list_objects_v2(Bucket=bucket)), False)
