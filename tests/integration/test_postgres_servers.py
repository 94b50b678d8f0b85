"""Sluice on PostgreSQL and S3, the scale-out setup: two API servers share one database and one
store, hold no state of their own, and together process every file exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.pg import PostgresCluster
from tests.seaweed import SeaweedFS
from tests.server import ServerProcess, wait_for_jobs

FILES = 40


def test_two_servers_on_one_database_process_every_file_once(
    postgres: PostgresCluster, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    database = postgres.new_database()
    shared = ("--database", database, "--storage", seaweedfs.storage_url, "--reconcile-interval", "1")
    first = ServerProcess(tmp_path / "a", extra_args=shared).start()
    second = ServerProcess(tmp_path / "b", extra_args=shared).start()
    bucket = f"pg-{uuid.uuid4().hex[:12]}"
    try:
        (tmp_path / "count.sh").write_text(
            'out="$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").n"\n'
            'echo "$(wc -c < "$INPUT_FILE_PATH") $JOB_UUID" > "$out"\n'
        )
        (tmp_path / "count.yaml").write_text(
            "functions:\n  oscar:\n  - local:\n      name: pgcount\n      image: busybox\n"
            "      script: count.sh\n"
            f"      input: [{{storage_provider: minio.default, path: {bucket}/in}}]\n"
            f"      output: [{{storage_provider: minio.default, path: {bucket}/out}}]\n"
        )
        assert first.cli("apply", str(tmp_path / "count.yaml")).returncode == 0
        # The service defined through one server is visible through the other.
        with second.client() as client:
            assert client.service("pgcount")["name"] == "pgcount"
        # Half the files through each server, half straight into the store (the reconciler's).
        s3 = seaweedfs.client()
        with first.client() as a, second.client() as b:
            for i in range(FILES):
                source = tmp_path / f"f{i:02d}.txt"
                source.write_text("x" * (i + 1))
                if i % 3 == 0:
                    a.put_file(f"{bucket}/in", source)
                elif i % 3 == 1:
                    b.put_file(f"{bucket}/in", source)
                else:
                    s3.put_object(Bucket=bucket, Key=f"in/{source.name}", Body=source.read_bytes())
            jobs = wait_for_jobs(a, "pgcount", FILES, timeout=180)
        assert len(jobs) == FILES
        assert {j["status"] for j in jobs} == {"succeeded"}
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]
        assert sorted(o["Key"] for o in listed) == [f"out/f{i:02d}.txt.n" for i in range(FILES)]
        for i in (0, 1, 2, FILES - 1):
            body = s3.get_object(Bucket=bucket, Key=f"out/f{i:02d}.txt.n")["Body"].read().decode()
            assert body.split()[0] == str(i + 1)
    finally:
        first.stop()
        second.stop()
