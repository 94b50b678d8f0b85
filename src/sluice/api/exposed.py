"""`/system/services/{name}/exposed/...`: requests proxied to an exposed service's own HTTP server.

Callers authenticate as for `/run` (the service's token, its owner or the admin, users it is
shared with); their credentials (the Authorization header) are not passed on; cookies are, for
the app's own sessions. With OSCAR's `rewrite_target: true` the app
sees paths without the `/system/services/{name}/exposed` prefix; by default it sees them whole.

Bodies stream both ways: the request's body goes on to the app as it arrives (with its
Content-Length when the caller gave one, else chunked) and stops with a 413 past the upload limit;
the app's answer goes back a chunk at a time as the app sends it. Neither is held whole in memory.

    GET /v1/services/{name}/exposed    the copies: healthy, requests in progress, scaling decisions
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from fastapi import APIRouter, Depends, Request, Response
from starlette.types import Receive, Scope, Send

from sluice.api.auth import invocable_service, require_user
from sluice.api.services import managed_service
from sluice.engine.access import Caller
from sluice.errors import InvocationFailed, NotFound, PayloadTooLarge
from sluice.replicas.exposed import ExposedService, ExposeScaling, Lease

router = APIRouter(tags=["services"])
log = logging.getLogger("sluice.exposed")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# Hop-by-hop headers (RFC 9110) and those the proxy sets itself; the caller's credentials stay here.
# `expect: 100-continue` is answered by this server to the caller, not by the app.
NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host", "content-length", "authorization", "expect"}
)  # fmt: skip


@router.api_route("/system/services/{name}/exposed", methods=METHODS, include_in_schema=False)
@router.api_route("/system/services/{name}/exposed/{path:path}", methods=METHODS)
async def exposed(name: str, request: Request, path: str = "") -> Response:
    """Forward the request to the least busy healthy copy of the exposed service; stream its answer."""
    platform = request.app.state.platform
    record = await invocable_service(request, name)
    expose = record.spec.expose
    if expose is None:
        raise NotFound(f"service '{name}' is not exposed (it has no 'expose' section)")
    upload = _Upload(request, request.app.state.settings.max_upload)
    lease = await platform.replicas.exposed_lease(record)
    try:
        answer = await platform.replicas.proxy_session().request(
            request.method,
            lease.base_url + _upstream_path(request, name, expose.rewrite_target),
            data=upload.chunks(),
            headers=_forwarded_headers(request, name),
            allow_redirects=False,
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        lease.release()
        upload.raise_if_too_large()
        raise InvocationFailed(f"service '{name}' did not answer: {exc or type(exc).__name__}") from None
    except BaseException:
        lease.release()
        raise
    if upload.too_large:  # the app answered before the body ran over: the caller still gets the 413
        answer.close()
        lease.release()
        upload.raise_if_too_large()
    return _Relay(answer, upload, lease)


@router.get("/v1/services/{name}/exposed")
async def exposed_copies(
    name: str, request: Request, caller: Caller = Depends(require_user)
) -> dict[str, Any]:
    """An exposed service's copies: how many run, are healthy and starting, the requests in
    progress on each, its scaling bounds and its latest scaling decisions. For its owner and the admin."""
    platform = request.app.state.platform
    record = await managed_service(platform, caller, name)  # last_error may quote the app's output
    if record.spec.expose is None:
        raise NotFound(f"service '{name}' is not exposed (it has no 'expose' section)")
    status = platform.replicas.exposed_status(name)
    if status is None:
        status = ExposedService.idle_status(ExposeScaling.of(record.spec.expose))
    return {"service": name, "stopped": platform.replicas.is_stopped(name), **status}


def _upstream_path(request: Request, name: str, rewrite_target: bool) -> str:
    # The path as the client sent it (still percent-encoded: `%3F` stays a character, not a query).
    raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    prefix = f"/system/services/{name}/exposed"
    upstream = (raw_path[len(prefix) :] or "/") if rewrite_target else raw_path
    if request.url.query:
        upstream += "?" + request.url.query
    return upstream


def _forwarded_headers(request: Request, name: str) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
    headers["X-Forwarded-Prefix"] = f"/system/services/{name}/exposed"
    declared = request.headers.get("content-length")
    if declared is not None and "transfer-encoding" not in request.headers:
        headers["Content-Length"] = declared  # the app reads exactly that much, as sent
    return headers


class _Upload:
    """The request's body, passed on as it arrives; past `limit` bytes it stops (and the caller
    gets a 413), as a declared Content-Length over the limit does before any copy is taken."""

    def __init__(self, request: Request, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.too_large = False
        self.done = asyncio.Event()  # the whole body was read (or there is none)
        headers = request.headers
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"body of {declared} bytes is over the {limit}-byte limit")
        self.present = "transfer-encoding" in headers or (declared or "0") != "0"
        if not self.present:
            self.done.set()

    def chunks(self) -> AsyncIterator[bytes] | None:
        return self._read() if self.present else None

    def raise_if_too_large(self) -> None:
        if self.too_large:
            raise PayloadTooLarge(f"body is over the {self.limit}-byte limit")

    async def _read(self) -> AsyncIterator[bytes]:
        size = 0
        try:
            async for chunk in self.request.stream():
                size += len(chunk)
                if size > self.limit:
                    self.too_large = True
                    raise PayloadTooLarge(f"body is over the {self.limit}-byte limit")
                yield chunk
        finally:
            self.done.set()


class _Relay(Response):
    """The app's answer, sent on a chunk at a time as it arrives. The copy's lease is held until
    the last byte is sent or the caller hangs up (then the app's connection is closed too)."""

    def __init__(self, answer: aiohttp.ClientResponse, upload: _Upload, lease: Lease) -> None:
        self.answer = answer
        self.upload = upload
        self.lease = lease
        self.status_code = answer.status
        self.background = None
        # Every header as sent, repeated ones (Set-Cookie) included, in the bytes the app sent.
        self.raw_headers = [
            (key.lower().encode("latin-1"), value.encode("utf-8", "surrogateescape"))
            for key, value in answer.headers.items()
            if key.lower() not in NOT_FORWARDED
        ]
        length = answer.headers.get("content-length")
        if length is not None:
            self.raw_headers.append((b"content-length", length.encode("latin-1")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.create_task(self._relay(send))
        hangup = asyncio.create_task(self._caller_gone(receive))
        try:
            await asyncio.wait((relay, hangup), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, hangup):
                task.cancel()
            await asyncio.gather(relay, hangup, return_exceptions=True)
            complete = not relay.cancelled() and relay.exception() is None and relay.result()
            if complete:
                self.answer.release()  # read to its end: the connection serves the next request
            else:
                self.answer.close()
            self.lease.release()
        error = None if relay.cancelled() else relay.exception()
        if error is not None:
            raise error

    async def _relay(self, send: Send) -> bool:
        """Send the answer on; True once its last byte is sent."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.answer.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Left unfinished, the caller's answer ends broken off, not as if it were whole.
            log.warning("the answer of %s broke off: %s", self.answer.url, exc or type(exc).__name__)
            return False
        self.lease.release()  # the copy is done with it, however long the last bytes take to leave
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True

    async def _caller_gone(self, receive: Receive) -> None:
        """Return when the caller hangs up (listening only once its body is read: before, the
        upload reads the same messages)."""
        await self.upload.done.wait()
        while (await receive())["type"] != "http.disconnect":
            pass
