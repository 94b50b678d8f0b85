"""The upload fast path: `PUT /v1/buckets/{bucket}/objects/{key}`, answered in front of FastAPI.

Every file dropped into an input path through the API comes this way, and FastAPI's routing,
dependencies and telemetry cost about a third of an upload's server time here (0.5 ms). This
ASGI layer stores the upload itself when the request is plainly valid: credentials that prove a
caller, valid bucket and key, a bucket the caller may use, a declared size within the limit.
Anything else goes to the app untouched (the body not read), so every refusal is the route's
own answer. Once the body is being read, errors are answered here as the app would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sluice.api.auth import Authenticator
from sluice.api.gateway import send_answer, send_error
from sluice.api.uploads import accept_upload, upload_answer
from sluice.engine.access import can_use_bucket
from sluice.engine.platform import Platform
from sluice.errors import SluiceError
from sluice.storage.base import validate_bucket, validate_key

PREFIX = "/v1/buckets/"
OBJECTS = "/objects/"

Scope = dict[str, Any]


class UploadGateway:
    def __init__(self, app: Any, platform: Platform, auth: Authenticator, max_upload: int) -> None:
        self.app = app
        self.platform = platform
        self.auth = auth
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        target = _upload_target(scope)
        if target is None or not await self._plainly_valid(scope, *target):
            await self.app(scope, receive, send)
            return
        bucket, key = target
        try:
            upload = await accept_upload(
                self.platform,
                _chunks(receive),
                _header(scope, b"content-length"),
                bucket,
                key,
                self.max_upload,
            )
        except SluiceError as exc:
            await send_error(send, exc)
            return
        body, headers = upload_answer(upload, bucket)
        extra = tuple((name.lower().encode(), value.encode()) for name, value in headers.items())
        await send_answer(send, 201, b"application/json", json.dumps(body).encode(), extra)

    async def _plainly_valid(self, scope: Scope, bucket: str, key: str) -> bool:
        """Whether the route would accept this upload, judged without reading the body."""
        try:
            validate_bucket(bucket)
            validate_key(key)
            caller = await self.auth.authenticate(_header(scope, b"authorization"))
        except SluiceError:
            return False
        declared = _header(scope, b"content-length")
        if caller is None or (
            declared is not None and (not declared.isdigit() or int(declared) > self.max_upload)
        ):
            return False
        record = await self.platform.bucket_record_cached(bucket)
        return can_use_bucket(caller, record) and await self.platform.default_store().bucket_exists(bucket)


def _upload_target(scope: Scope) -> tuple[str, str] | None:
    """(bucket, key) of an object upload, else None."""
    if scope["type"] != "http" or scope["method"] != "PUT" or not scope["path"].startswith(PREFIX):
        return None
    bucket, found, key = scope["path"][len(PREFIX) :].partition(OBJECTS)
    if not found or not key or "/" in bucket:
        return None
    return bucket, key


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _chunks(receive: Any) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise SluiceError("the client went away before the upload ended")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body"):
            return
