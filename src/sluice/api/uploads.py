"""Spooling a request body to disk with a size limit, so a huge body is refused, not buffered."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fastapi import Request

from sluice.errors import PayloadTooLarge


async def spool_body(request: Request, dest: Path, limit: int) -> int:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"upload of {declared} bytes is over the {limit}-byte limit")
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(dest, "wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"upload is over the {limit}-byte limit")
                handle.write(chunk)
            handle.flush()
            # On disk before the job that reads it is acknowledged; off the event loop.
            await asyncio.to_thread(os.fdatasync, handle.fileno())
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return size


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes is over the {limit}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body is over the {limit}-byte limit")
    return bytes(body)
