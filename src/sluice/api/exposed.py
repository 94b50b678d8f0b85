"""`/system/services/{name}/exposed/...`: requests proxied to an exposed service's own HTTP server.

Callers authenticate as for `/run` (the service's token, its owner or the admin, users it is
shared with); their credentials (the Authorization header) are not passed on; cookies are, for
the app's own sessions. With OSCAR's `rewrite_target: true` the app
sees paths without the `/system/services/{name}/exposed` prefix; by default it sees them whole.
"""

from __future__ import annotations

import aiohttp
from fastapi import APIRouter, Request, Response

from sluice.api.auth import invocable_service
from sluice.api.uploads import read_body
from sluice.errors import InvocationFailed, NotFound, Overloaded

router = APIRouter(tags=["services"])
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# Hop-by-hop headers (RFC 9110) and those the proxy sets itself; the caller's credentials stay here.
NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host", "content-length", "authorization"}
)  # fmt: skip


@router.api_route("/system/services/{name}/exposed", methods=METHODS, include_in_schema=False)
@router.api_route("/system/services/{name}/exposed/{path:path}", methods=METHODS)
async def exposed(name: str, request: Request, path: str = "") -> Response:
    """Forward the request to a healthy copy of the exposed service and return its answer."""
    platform = request.app.state.platform
    record = await invocable_service(request, name)
    if record.spec.expose is None:
        raise NotFound(f"service '{name}' is not exposed (it has no 'expose' section)")
    if platform.replicas.is_stopped(name):
        raise Overloaded(f"service '{name}' is stopped: POST /system/services/{name}/start", 60)
    target = platform.replicas.exposed_target(record)
    if target is None:
        raise Overloaded(f"service '{name}' is starting: no copy answers its health check yet", 2)
    # The path as the client sent it (still percent-encoded: `%3F` stays a character, not a query).
    raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    prefix = f"/system/services/{name}/exposed"
    upstream = (raw_path[len(prefix) :] or "/") if record.spec.expose.rewrite_target else raw_path
    if request.url.query:
        upstream += "?" + request.url.query
    headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
    headers["X-Forwarded-Prefix"] = f"/system/services/{name}/exposed"
    body = await read_body(request, request.app.state.settings.max_upload)
    session = platform.replicas.proxy_session()
    try:
        async with session.request(
            request.method, target + upstream, data=body or None, headers=headers, allow_redirects=False
        ) as answer:
            content = await answer.read()
            response = Response(content, status_code=answer.status)
            # Every header as sent, repeated ones (Set-Cookie) included.
            response.raw_headers = [
                (key.lower().encode("latin-1"), value.encode("latin-1"))
                for key, value in answer.headers.items()
                if key.lower() not in NOT_FORWARDED
            ] + [(b"content-length", str(len(content)).encode())]
            return response
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise InvocationFailed(f"service '{name}' did not answer: {exc or type(exc).__name__}") from None
