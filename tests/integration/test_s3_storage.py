"""S3Storage against a real SeaweedFS, and SeaweedFS's upload webhook."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.stub import Stubber

import sluice.storage.s3 as s3_module
from sluice.errors import (
    BucketNotFound,
    Conflict,
    InvalidInput,
    InvalidObjectKey,
    ObjectNotFound,
    StorageError,
)
from sluice.storage.base import StorageProvider
from sluice.storage.s3 import S3Storage
from tests.integration.conftest import S3Bucket
from tests.seaweed import SeaweedFS, free_ports

run = asyncio.run


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def collect(storage: S3Storage, bucket: str, prefix: str = "") -> list[str]:
    return [info.key async for info in storage.list(bucket, prefix)]


# --- objects ------------------------------------------------------------------------------------------


def test_is_a_storage_provider(s3_storage: S3Bucket) -> None:
    assert isinstance(s3_storage.storage, StorageProvider)
    assert s3_storage.storage.name == "s3"


def test_put_get_round_trip(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    data = b"leaf pixels \x00\xff" * 1000
    put = run(store.put(write(tmp_path / "in.bin", data), bucket, "input/leaf.bin"))
    got = run(store.get(bucket, "input/leaf.bin", tmp_path / "out.bin"))

    assert (tmp_path / "out.bin").read_bytes() == data
    assert (put.bucket, put.key, put.size) == (bucket, "input/leaf.bin", len(data))
    assert got == put
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin", "out.bin"]  # no staging left over


def test_put_overwrites(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    run(store.put(write(tmp_path / "a", b"first"), bucket, "k.txt"))
    run(store.put(write(tmp_path / "b", b"second!"), bucket, "k.txt"))
    assert run(store.get(bucket, "k.txt", tmp_path / "out")).size == 7
    assert (tmp_path / "out").read_bytes() == b"second!"


def test_stat_etag_is_md5_and_time_is_utc(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    data = b"hello sluice"
    before = time.time()
    run(store.put(write(tmp_path / "f", data), bucket, "dir/f.txt"))
    info = run(store.stat(bucket, "dir/f.txt"))

    assert info.etag == hashlib.md5(data).hexdigest()
    assert info.size == len(data)
    assert info.last_modified.tzinfo is UTC
    # S3 times have one-second resolution.
    assert before - 2 <= info.last_modified.timestamp() <= time.time() + 2


def test_multipart_upload_round_trip(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    data = bytes(range(256)) * (9 * 4096)  # 9 MiB: over boto3's 8 MiB multipart threshold
    info = run(store.put(write(tmp_path / "big", data), bucket, "big.bin"))
    assert info.size == len(data)
    assert info.etag.endswith("-2")  # a multipart ETag: md5 of the part md5s, then the part count
    run(store.get(bucket, "big.bin", tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == data


def test_list_with_prefix_across_nested_keys(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    src = write(tmp_path / "f", b"x")
    keys = ["a/1.txt", "a/b/2.txt", "a/b/c/3.txt", "ab.txt", "z.txt"]
    for key in keys:
        run(store.put(src, bucket, key))

    assert run(collect(store, bucket)) == keys
    assert run(collect(store, bucket, "a/")) == ["a/1.txt", "a/b/2.txt", "a/b/c/3.txt"]
    assert run(collect(store, bucket, "a/b/")) == ["a/b/2.txt", "a/b/c/3.txt"]
    assert run(collect(store, bucket, "a")) == keys[:4]
    assert run(collect(store, bucket, "nothing/")) == []


def test_list_page_limit_two_over_five(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    src = write(tmp_path / "f", b"x")
    keys = [f"p/k{i}" for i in range(5)]
    for key in keys:
        run(store.put(src, bucket, key))

    seen: list[str] = []
    sizes: list[int] = []
    token: str | None = None
    for _ in range(10):  # bounded: 3 pages expected
        page = run(store.list_page(bucket, "p/", token, limit=2))
        seen += [o.key for o in page.objects]
        sizes.append(len(page.objects))
        token = page.next_token
        if token is None:
            break
    assert seen == keys
    assert sizes == [2, 2, 1]


def test_list_page_rejects_bad_limit_and_prefix(s3_storage: S3Bucket) -> None:
    store, bucket = s3_storage
    with pytest.raises(InvalidInput):
        run(store.list_page(bucket, limit=0))
    with pytest.raises(InvalidObjectKey):
        run(store.list_page(bucket, prefix="../"))


def test_delete(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    run(store.put(write(tmp_path / "f", b"x"), bucket, "gone.txt"))
    run(store.delete(bucket, "gone.txt"))
    with pytest.raises(ObjectNotFound):
        run(store.stat(bucket, "gone.txt"))
    with pytest.raises(ObjectNotFound):
        run(store.delete(bucket, "gone.txt"))


def test_missing_object(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    with pytest.raises(ObjectNotFound):
        run(store.get(bucket, "nope.txt", tmp_path / "out"))
    with pytest.raises(ObjectNotFound):
        run(store.stat(bucket, "nope.txt"))
    with pytest.raises(ObjectNotFound):
        run(store.delete(bucket, "nope.txt"))
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_folder_is_not_an_object(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    run(store.put(write(tmp_path / "f", b"x"), bucket, "dir/inner.txt"))
    with pytest.raises(ObjectNotFound):
        run(store.stat(bucket, "dir"))
    with pytest.raises(ObjectNotFound):
        run(store.delete(bucket, "dir"))
    assert run(collect(store, bucket)) == ["dir/inner.txt"]


def test_missing_bucket(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, _ = s3_storage
    missing = "no-such-bucket-" + "x" * 8
    src = write(tmp_path / "f", b"x")
    assert run(store.bucket_exists(missing)) is False
    for call in (
        lambda: store.stat(missing, "k"),
        lambda: store.get(missing, "k", tmp_path / "out"),
        lambda: store.put(src, missing, "k"),
        lambda: store.delete(missing, "k"),
        lambda: store.list_page(missing),
        lambda: collect(store, missing),
        lambda: store.delete_bucket(missing),
        lambda: store.delete_bucket(missing, force=True),
    ):
        with pytest.raises(BucketNotFound):
            run(call())


@pytest.mark.parametrize("key", ["../x", "/abs", "a\x00b", "a/../b", "a//b", "dir/", ""])
def test_invalid_key_rejected_before_any_network_call(s3_storage: S3Bucket, tmp_path: Path, key: str) -> None:
    store, bucket = s3_storage
    sent: list[str] = []
    store._client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.url))
    src = write(tmp_path / "f", b"x")
    for call in (
        lambda: store.put(src, bucket, key),
        lambda: store.get(bucket, key, tmp_path / "out"),
        lambda: store.stat(bucket, key),
        lambda: store.delete(bucket, key),
    ):
        with pytest.raises(InvalidObjectKey):
            run(call())
    for operation in ("upload", "download"):
        with pytest.raises(InvalidObjectKey):
            store.presign(bucket, key, operation, 60)  # type: ignore[arg-type]
    assert sent == []
    run(store.bucket_exists(bucket))
    assert len(sent) == 1  # the hook does see real calls


def test_invalid_bucket_name(s3_storage: S3Bucket) -> None:
    store, _ = s3_storage
    for name in ("UPPER", "ab", "a_b", "a..b"):
        with pytest.raises(InvalidInput):
            run(store.create_bucket(name))
        with pytest.raises(InvalidInput):
            run(store.stat(name, "k"))


# --- buckets ------------------------------------------------------------------------------------------


def test_bucket_lifecycle(s3_storage: S3Bucket) -> None:
    store, bucket = s3_storage
    other = bucket + "-b"
    assert run(store.bucket_exists(other)) is False
    run(store.create_bucket(other))
    run(store.create_bucket(other))  # already ours: a no-op
    assert run(store.bucket_exists(other)) is True
    assert {bucket, other} <= set(run(store.list_buckets()))
    run(store.delete_bucket(other))
    assert run(store.bucket_exists(other)) is False
    assert other not in run(store.list_buckets())


def test_delete_bucket_not_empty(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    run(store.put(write(tmp_path / "f", b"x"), bucket, "keep/me.txt"))
    with pytest.raises(Conflict):
        run(store.delete_bucket(bucket))
    assert run(collect(store, bucket)) == ["keep/me.txt"]  # SeaweedFS would have deleted it all

    run(store.delete_bucket(bucket, force=True))
    assert run(store.bucket_exists(bucket)) is False


def test_delete_bucket_force_in_batches(
    s3_storage: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, bucket = s3_storage
    src = write(tmp_path / "f", b"x")
    for i in range(5):
        run(store.put(src, bucket, f"n/{i}.txt"))
    calls: list[str] = []
    store._client.meta.events.register("before-call.s3.DeleteObjects", lambda **_: calls.append("x"))
    monkeypatch.setattr(s3_module, "MAX_PAGE", 2)
    run(store.delete_bucket(bucket, force=True))
    assert len(calls) == 3
    assert run(store.bucket_exists(bucket)) is False


# --- presigned URLs -----------------------------------------------------------------------------------


def test_presigned_upload_then_get(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    url = store.presign(bucket, "uploads/photo.jpg", "upload", 300)
    assert "X-Amz-Signature=" in url and f"/{bucket}/uploads/photo.jpg" in url

    response = httpx.put(url, content=b"jpeg bytes", timeout=10)
    assert response.status_code == 200, response.text
    run(store.get(bucket, "uploads/photo.jpg", tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"jpeg bytes"


def test_presigned_download(s3_storage: S3Bucket, tmp_path: Path) -> None:
    store, bucket = s3_storage
    run(store.put(write(tmp_path / "f", b"result,1\n"), bucket, "output/result.csv"))
    url = store.presign(bucket, "output/result.csv", "download", 300)

    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"result,1\n"
    assert response.headers["content-type"].startswith("text/csv")
    assert httpx.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"), timeout=10).status_code == 403


def test_presign_rejects_bad_arguments(s3_storage: S3Bucket) -> None:
    store, bucket = s3_storage
    with pytest.raises(InvalidInput):
        store.presign(bucket, "k", "upload", 0)
    with pytest.raises(InvalidInput):
        store.presign(bucket, "k", "upload", 8 * 24 * 3600)
    with pytest.raises(InvalidInput):
        store.presign(bucket, "k", "delete", 60)  # type: ignore[arg-type]


# --- configuration and error translation --------------------------------------------------------------


def test_from_url_seaweed(seaweedfs: SeaweedFS) -> None:
    store = S3Storage.from_url(seaweedfs.storage_url)
    assert store.endpoint_url == seaweedfs.endpoint_url
    assert isinstance(run(store.list_buckets()), list)


@pytest.mark.parametrize(
    ("url", "endpoint", "access", "secret", "region", "verify"),
    [
        (
            "s3://AK:SK@minio.local:9000?region=eu-west-1&secure=0",
            "http://minio.local:9000",
            "AK",
            "SK",
            "eu-west-1",
            True,
        ),
        ("s3://AK:SK@minio.local:9000", "https://minio.local:9000", "AK", "SK", "us-east-1", True),
        ("s3://AK:SK@minio.local?secure=1&verify=0", "https://minio.local", "AK", "SK", "us-east-1", False),
        ("http://AK:S%2FK%3A%40@10.0.0.1:8333/", "http://10.0.0.1:8333", "AK", "S/K:@", "us-east-1", True),
        ("https://AK:SK@[::1]:9000?region=x", "https://[::1]:9000", "AK", "SK", "x", True),
        ("s3://AK:SK@?region=eu-central-1", None, "AK", "SK", "eu-central-1", True),
    ],
)
def test_from_url(
    url: str, endpoint: str | None, access: str, secret: str, region: str, verify: bool
) -> None:
    store = S3Storage.from_url(url)
    assert (store.endpoint_url, store.access_key, store.secret_key, store.region, store.verify) == (
        endpoint,
        access,
        secret,
        region,
        verify,
    )
    assert secret not in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://AK:SK@host",
        "s3://host:9000",
        "s3://AK@host:9000",
        "s3://AK:SK@host:9000/bucket",
        "s3://AK:SK@host:9000?secure=maybe",
        "s3://AK:SK@host:9000?regoin=x",
        "s3://AK:SK@host:port",
        "http://AK:SK@host?secure=0",
    ],
)
def test_from_url_rejects(url: str) -> None:
    with pytest.raises(InvalidInput):
        S3Storage.from_url(url)


def test_repr_hides_secret() -> None:
    store = S3Storage("http://127.0.0.1:1", "AKEY", "very-secret-value")
    assert "very-secret-value" not in repr(store)
    assert "AKEY" in repr(store)


def test_unreachable_endpoint_is_storage_error() -> None:
    (port,) = free_ports(1)  # nothing listens there
    store = S3Storage(f"http://127.0.0.1:{port}", "a", "b")
    with pytest.raises(StorageError) as caught:
        run(store.stat("some-bucket", "some/key"))
    assert "stat" in caught.value.message and "some-bucket" in caught.value.message
    assert "some/key" in caught.value.message and "EndpointConnectionError" in caught.value.message


def test_client_errors_translate_by_code(tmp_path: Path) -> None:
    store = S3Storage("http://127.0.0.1:1", "a", "b")
    src = write(tmp_path / "f", b"x")
    with Stubber(store._client) as stub:
        stub.add_response("list_objects_v2", {"IsTruncated": False, "KeyCount": 0})
        stub.add_client_error("delete_bucket", "BucketNotEmpty", "whatever text", 409)
        with pytest.raises(Conflict):
            run(store.delete_bucket("full-bucket"))

        stub.add_client_error("get_object", "InternalError", "We encountered an internal error", 500)
        with pytest.raises(StorageError) as caught:
            run(store.get("my-bucket", "a/b.txt", Path("/nonexistent/never-written")))
        message = caught.value.message
        assert "get" in message and "my-bucket" in message and "a/b.txt" in message
        assert "InternalError" in message and "500" in message

        stub.add_client_error("head_bucket", "AccessDenied", "", 403)
        with pytest.raises(StorageError, match="AccessDenied"):
            run(store.bucket_exists("their-bucket"))

        stub.add_client_error("create_bucket", "BucketAlreadyExists", "", 409)
        with pytest.raises(Conflict):
            run(store.create_bucket("taken-name"))

        # Anonymous SeaweedFS answers an upload into a missing bucket with AccessDenied.
        stub.add_client_error("put_object", "AccessDenied", "Access Denied.", 403)
        stub.add_client_error("head_bucket", "404", "Not Found", 404)
        with pytest.raises(BucketNotFound):
            run(store.put(src, "gone-bucket", "k.txt"))
        stub.add_client_error("put_object", "AccessDenied", "Access Denied.", 403)
        stub.add_response("head_bucket", {})
        with pytest.raises(StorageError, match="AccessDenied"):
            run(store.put(src, "their-bucket", "k.txt"))
        stub.assert_no_pending_responses()


# --- SeaweedFS's filer webhook ------------------------------------------------------------------------


class _Hooks:
    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, dict[str, str], dict[str, Any]]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.put((self.path, dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/seaweed"

    def wait_for(self, key: str, event_type: str, timeout: float = 20) -> tuple[str, dict[str, str], dict]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                path, headers, event = self.received.get(timeout=left)
            except queue.Empty:
                break
            if event.get("key") == key and event.get("event_type") == event_type:
                return path, headers, event
        raise AssertionError(f"no {event_type} event for {key} within {timeout} s")


@pytest.fixture(scope="module")
def hooked_seaweedfs() -> Iterator[tuple[SeaweedFS, _Hooks]]:
    hooks = _Hooks()
    hooks.thread.start()
    weed = SeaweedFS(webhook_url=hooks.url, webhook_token="hook-secret")
    try:
        weed.start()
        yield weed, hooks
    finally:
        weed.stop()
        hooks.server.shutdown()
        hooks.server.server_close()


def test_webhook_reports_uploads(hooked_seaweedfs: tuple[SeaweedFS, _Hooks]) -> None:
    weed, hooks = hooked_seaweedfs
    client = weed.client()
    data = b"an input image"
    client.create_bucket(Bucket="hooked")
    client.put_object(Bucket="hooked", Key="input/img.png", Body=data)

    # Observed with SeaweedFS 4.48: one POST per filer change, "Authorization: Bearer <token>", JSON
    # {"event_type": "create",               # "update" on overwrite (old_entry + new_entry), "delete"
    #  "key": "/buckets/hooked/input/img.png",
    #  "message": {
    #    "new_entry": {
    #      "name": "img.png",
    #      "chunks": [{"size": 14, "e_tag": "<base64 md5>", "modified_ts_ns": ..., "fid": {...}}],
    #      "attributes": {"file_size": 14, "mtime": 1795299798, "crtime": ..., "ctime": ..., "atime": ...,
    #                     "mime": "text/plain; charset=utf-8", "md5": "<base64 of the 16-byte md5>",
    #                     "file_mode": 432, "inode": ...},
    #      "extended": {"Seaweed-X-Amz-ETag": "<base64 of the hex ETag text>",
    #                   "Seaweed-X-Amz-Owner": "<base64 identity name>", ...}},
    #    "new_parent_path": "/buckets/hooked/input", "delete_chunks": true, "signatures": [...]}}
    # mtime/crtime are unix seconds. Folders arrive as their own events ("is_directory": true, no
    # file_size), in no particular order relative to the file. A multipart upload also sends events under
    # /buckets/<bucket>/.uploads/ and its final entry has no "md5" (only Seaweed-X-Amz-ETag, "<md5>-N").
    path, headers, event = hooks.wait_for("/buckets/hooked/input/img.png", "create")
    assert path == "/hooks/seaweed"
    assert headers["Authorization"] == "Bearer hook-secret"
    entry = event["message"]["new_entry"]
    assert event["message"]["new_parent_path"] == "/buckets/hooked/input"
    assert entry["name"] == "img.png"
    assert not entry.get("is_directory")
    attributes = entry["attributes"]
    assert attributes["file_size"] == len(data)
    assert base64.b64decode(attributes["md5"]) == hashlib.md5(data).digest()
    assert base64.b64decode(entry["extended"]["Seaweed-X-Amz-ETag"]).decode() == hashlib.md5(data).hexdigest()
    assert abs(attributes["mtime"] - time.time()) < 60

    client.put_object(Bucket="hooked", Key="input/img.png", Body=data + b"!")
    _, _, updated = hooks.wait_for("/buckets/hooked/input/img.png", "update")
    assert updated["message"]["old_entry"]["attributes"]["file_size"] == len(data)
    assert updated["message"]["new_entry"]["attributes"]["file_size"] == len(data) + 1

    client.delete_object(Bucket="hooked", Key="input/img.png")
    _, _, deleted = hooks.wait_for("/buckets/hooked/input/img.png", "delete")
    assert deleted["message"]["old_entry"]["name"] == "img.png"
    assert "new_entry" not in deleted["message"]
