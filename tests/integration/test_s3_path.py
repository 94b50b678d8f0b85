"""The platform on a real S3 store (SeaweedFS): objects put with boto3, not through Sluice, are
processed, announced by the store's webhook or found by the reconciler."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import free_port
from tests.seaweed import SeaweedFS
from tests.server import ServerProcess, wait_for_jobs

WEBHOOK_TOKEN = "hook-" + uuid.uuid4().hex


def _apply(server: ServerProcess, tmp: Path, name: str, bucket: str) -> None:
    (tmp / f"{name}.sh").write_text(
        'wc -c < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").len"\n'
    )
    fdl = tmp / f"{name}.yaml"
    fdl.write_text(
        f"functions:\n  oscar:\n  - local:\n      name: {name}\n      image: busybox\n"
        f"      script: {name}.sh\n"
        f"      input: [{{storage_provider: minio.default, path: {bucket}/in}}]\n"
        f"      output: [{{storage_provider: minio.default, path: {bucket}/out}}]\n"
    )
    result = server.cli("apply", str(fdl))
    assert result.returncode == 0, result.stderr


def _wait_object(weed: SeaweedFS, bucket: str, key: str, timeout: float = 60) -> bytes:
    s3 = weed.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            time.sleep(0.2)
    raise AssertionError(f"{bucket}/{key} never appeared")


@pytest.fixture
def reconciling_server(seaweedfs: SeaweedFS, tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path / "data", extra_args=("--storage", seaweedfs.storage_url, "--reconcile-interval", "1")
    ).start()
    yield server
    server.stop()


def test_object_put_with_boto3_is_found_by_the_reconciler(
    reconciling_server: ServerProcess, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    bucket = f"rec-{uuid.uuid4().hex[:12]}"
    _apply(reconciling_server, tmp_path, "s3rec", bucket)
    seaweedfs.client().put_object(Bucket=bucket, Key="in/hello.txt", Body=b"hello s3\n")
    assert _wait_object(seaweedfs, bucket, "out/hello.txt.len").strip() == b"9"
    with reconciling_server.client() as client:
        jobs = wait_for_jobs(client, "s3rec", 1)
    assert [(j["key"], j["status"]) for j in jobs] == [("in/hello.txt", "succeeded")]
    # Later rounds of the reconciler do not run the same object again.
    time.sleep(2.5)
    with reconciling_server.client() as client:
        assert len(list(client.jobs("s3rec"))) == 1


def test_object_put_with_boto3_is_announced_by_the_seaweedfs_webhook(tmp_path: Path) -> None:
    port = free_port()
    weed = SeaweedFS(webhook_url=f"http://127.0.0.1:{port}/v1/events/seaweedfs", webhook_token=WEBHOOK_TOKEN)
    weed.start()
    # The reconciler is off: only the webhook can make this job.
    server = ServerProcess(
        tmp_path / "data",
        port=port,
        env={"SLUICE_WEBHOOK_TOKEN": WEBHOOK_TOKEN},
        extra_args=("--storage", weed.storage_url, "--reconcile-interval", "0"),
    )
    try:
        server.start()
        bucket = f"hook-{uuid.uuid4().hex[:12]}"
        _apply(server, tmp_path, "s3hook", bucket)
        weed.client().put_object(Bucket=bucket, Key="in/ping.txt", Body=b"ping\n")
        assert _wait_object(weed, bucket, "out/ping.txt.len").strip() == b"5"
        with server.client() as client:
            jobs = wait_for_jobs(client, "s3hook", 1)
            assert [(j["key"], j["status"]) for j in jobs] == [("in/ping.txt", "succeeded")]
    finally:
        server.stop()
        weed.stop()
