"""Uploads: a request body spooled to disk with a size limit (a huge body is refused, not
buffered), stored, and its jobs committed before the answer; shared by the upload route and its
fast path (`sluice.api.fast_upload`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from sluice.api.shapes import object_json
from sluice.engine.platform import Platform, Upload
from sluice.errors import PayloadTooLarge
from sluice.storage.files import write_all


async def accept_upload(
    platform: Platform, chunks: AsyncIterator[bytes], declared: str | None, bucket: str, key: str, limit: int
) -> Upload:
    """Store the body as `bucket/key` (both validated, the bucket known to exist) and enqueue the
    jobs it triggers."""
    store = platform.default_store()
    staging_path = getattr(store, "staging_path", None)
    staged = staging_path() if staging_path else _new_temporary_file()
    await spool_chunks(chunks, declared, staged, limit)
    return await platform.store_upload(staged, bucket, key)


def _new_temporary_file() -> str:
    descriptor, name = tempfile.mkstemp(prefix="sluice-upload-")
    os.close(descriptor)  # reopened by name to be written
    return name


def upload_answer(upload: Upload, bucket: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body and headers of a stored upload's 201."""
    ids = [a.job_id for a in upload.jobs]
    headers = {"ETag": f'"{upload.info.etag}"'}
    if ids:
        headers["X-Job-Id"] = ids[0]
    return {**object_json(upload.info), "bucket": bucket, "jobs": ids}, headers


async def spool_chunks(chunks: AsyncIterator[bytes], declared: str | None, dest: str, limit: int) -> int:
    size = 0
    try:
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"upload of {declared} bytes is over the {limit}-byte limit")
        # Not synced here: the store puts it on the disk, with the other uploads of its moment,
        # before its jobs are committed and the upload acknowledged (`Platform.store_upload`).
        fd = _create(dest)
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"upload is over the {limit}-byte limit")
                write_all(fd, chunk)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)
        raise
    return size


# A bare descriptor: a Python file object costs three more system calls (fstat, isatty, lseek)
# and its buffer a copy, on every upload.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def _create(dest: str) -> int:
    """`dest` opened for writing; its folder made only if missing (not tried on every upload)."""
    try:
        return os.open(dest, _NEW_FILE, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        return os.open(dest, _NEW_FILE, 0o666)


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
