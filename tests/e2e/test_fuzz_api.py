"""Schemathesis fuzzes every route of our own /openapi.json against a real server: whatever it
sends, no answer is a 5xx and none hangs. Bounded: a fixed number of examples per route."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.server import PASSWORD, ServerProcess

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


def test_no_request_gets_a_server_error_or_hangs(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", extra_args=("--reconcile-interval", "0")).start()
    try:
        result = subprocess.run(
            [
                SCHEMATHESIS,
                "run",
                f"{server.endpoint}/openapi.json",
                "--auth",
                f"oscar:{PASSWORD}",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "25",
                "--request-timeout",
                "10",
                "--generation-deterministic",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout[-6000:]
    assert "Tested: " in result.stdout
