"""The hot path: `POST /run/{svc}` for handler services, answered in front of FastAPI.

Routing, dependency injection and validation cost FastAPI about 0.1 ms a request here, more than
the rest of a warm call; this ASGI layer answers calls to handler services itself, with the
same rules as the routes (service token, owner, visibility; body limit; plain-text errors), and
hands everything else to the app unchanged: script services, unknown services (whose 401/404
rules live in the route), and every other path.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from sluice.api.auth import Authenticator, authorize_invocation
from sluice.engine.platform import Platform
from sluice.errors import Overloaded, PayloadTooLarge, SluiceError, Unauthorized
from sluice.replicas.process import Call

log = logging.getLogger("sluice.api")
PREFIX = "/run/"
TEXT = b"text/plain; charset=utf-8"
PRIVATE_HEADERS = frozenset({b"authorization", b"cookie"})  # never handed to a handler

Scope = dict[str, Any]


class RunGateway:
    def __init__(self, app: Any, platform: Platform, auth: Authenticator, max_body: int) -> None:
        self.app = app
        self.platform = platform
        self.auth = auth
        self.max_body = max_body
        self._platform_time: dict[str, Any] = {}  # service -> its histogram series, looked up once

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        arrived = time.monotonic()
        name = scope["path"][len(PREFIX) :]
        record = await self.platform.catalog.get(name) if name and "/" not in name else None
        if record is None or not record.spec.handler or self.platform.settings.workers == 0:
            await self.app(scope, receive, send)
            return
        try:
            authorization = None
            headers = {}  # what the handler sees: all but the caller's credentials
            for key, value in scope["headers"]:
                if key == b"authorization":
                    authorization = value.decode("latin-1")
                elif key not in PRIVATE_HEADERS:
                    headers[key.decode("latin-1")] = value.decode("latin-1")
            await authorize_invocation(self.auth, authorization, record)
            body = await _read_body(receive, headers.get("content-length"), self.max_body)
            query = scope["query_string"]
            params = dict(parse_qsl(query.decode("latin-1"))) if query else {}
            call = Call(body, headers.get("content-type", ""), headers, params)
            answer, timing = await self.platform.replicas.pool_for(record).call(call)
        except SluiceError as exc:
            await send_error(send, exc)
            return
        content_type = answer.content_type.encode("latin-1") or b"application/octet-stream"
        await send_answer(send, answer.status, content_type, answer.body)
        platform_time = time.monotonic() - arrived - timing.queue_wait - timing.handler
        series = self._platform_time.get(name)
        if series is None:
            series = self._platform_time[name] = self.platform.metrics.platform_time.labels(name)
        series.observe(platform_time)


async def _read_body(receive: Any, declared: str | None, limit: int) -> bytes:
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes is over the {limit}-byte limit")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise SluiceError("the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_error(send: Any, exc: SluiceError) -> None:
    """As the app's error handler answers (`sluice.api.errors`): plain text naming the problem."""
    if exc.status_code >= 500:
        log.error("%s: %s", type(exc).__name__, exc.message)
    extra: tuple[tuple[bytes, bytes], ...] = ()
    if isinstance(exc, Unauthorized):
        extra = ((b"www-authenticate", b'Basic realm="sluice"'),)
    elif isinstance(exc, Overloaded):
        extra = ((b"retry-after", str(exc.retry_after).encode()),)
    await send_answer(send, exc.status_code, TEXT, exc.message.encode(), extra)


async def send_answer(
    send: Any, status: int, content_type: bytes, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
