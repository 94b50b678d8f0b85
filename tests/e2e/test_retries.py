"""A retry that is due at once: the failed run's outcome and the job's next claim share a
transaction, and the new run must be tracked (its lease renewed) like any other."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx

from tests.server import PASSWORD, ServerProcess

# No backoff, and a lease short enough that a run nobody renews is taken back within the test.
SERVER_ENV = {"SLUICE_WORKERS": "1", "SLUICE_RETRY_BASE_DELAY": "0", "SLUICE_LEASE_SECONDS": "2"}


def test_a_retry_due_at_once_runs_once_and_keeps_its_lease(server: ServerProcess, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    script = (
        'echo run >> "$RUNS"\n'
        'if [ "$(wc -l < "$RUNS")" -eq 1 ]; then exit 1; fi\n'
        "sleep 5\n"  # longer than two leases: only the heartbeat keeps this run its own
        'echo done > "$TMP_OUTPUT_DIR/out.txt"\n'
    )
    client = server.client()
    created = httpx.post(
        f"{server.endpoint}/system/services",
        auth=("oscar", PASSWORD),
        json={
            "name": "again",
            "image": "alpine",
            "script": script,
            "max_retries": 2,
            "environment": {"variables": {"RUNS": str(runs)}},
        },
    )
    assert created.status_code == 201, created.text
    job_id = client.submit("again", base64.b64encode(b"x"))["job_id"]
    deadline = time.monotonic() + 60
    job = client.job("again", job_id)
    while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.job("again", job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert runs.read_text().splitlines() == ["run", "run"]  # never taken back and run a third time
