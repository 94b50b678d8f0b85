"""The frames a server and a replica exchange over their socket pair.

A frame is a fixed header, `!QBII` (call id, kind, metadata length, body length), then the
metadata as JSON and the body as raw bytes, so payloads are never encoded twice. Both ends
import this module; it must stay light (no third-party imports): it runs in every replica.
"""

from __future__ import annotations

import json
import struct
from typing import Any

HEADER = struct.Struct("!QBII")
MAX_META = 1024 * 1024

# server -> replica
CALL = 1  # meta: {"content_type", "headers", "params"}; body: the request body
ASSIGN = 6  # to a spare: become a service's replica; meta: {"args", "env", "cwd", "log"}
# replica -> server
READY = 2  # after init returned; meta: {"pid"}
INIT_FAILED = 3  # meta: {"error"}
RESULT = 4  # meta: {"content_type", "status"}; body: the answer
ERROR = 5  # the handler raised; meta: {"status", "error"}


def encode(call_id: int, kind: int, meta: dict[str, Any], body: bytes = b"") -> bytes:
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    return HEADER.pack(call_id, kind, len(meta_bytes), len(body)) + meta_bytes + body


def decode_meta(data: bytes) -> dict[str, Any]:
    return json.loads(data) if data else {}
