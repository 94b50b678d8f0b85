"""The replicas' shared log stays bounded; what they append after a trim lands at its end."""

from __future__ import annotations

import os
from pathlib import Path

from sluice.replicas.pool import KEPT_LOG, MAX_LOG, _trim


def test_a_log_past_its_limit_keeps_its_last_part(tmp_path: Path) -> None:
    log = tmp_path / "replica.log"
    log.write_bytes(b"old line\n" * (MAX_LOG // 9 + 10) + b"last line\n")
    writer = os.open(log, os.O_WRONLY | os.O_APPEND)  # as a replica holds it
    try:
        _trim(log)
        os.write(writer, b"after the trim\n")
    finally:
        os.close(writer)
    text = log.read_bytes()
    assert len(text) < KEPT_LOG + 200
    assert text.startswith(b"[sluice] earlier lines removed")
    assert text.endswith(b"last line\nafter the trim\n")


def test_a_small_log_is_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "replica.log"
    log.write_bytes(b"hello\n")
    _trim(log)
    _trim(tmp_path / "missing.log")
    assert log.read_bytes() == b"hello\n"
