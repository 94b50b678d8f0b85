"""`POST /run/{svc}`: synchronous invocation, OSCAR's contract plus plain HTTP.

Input: a JSON body is kept as-is and anything else is base64-decoded (OSCAR), unless the body
says what it is with a binary `Content-Type` (`image/png`, `application/octet-stream`, ...): then
its bytes are the input. Output: OSCAR's base64 text, or, when the caller asks with `Accept`
(any specific type) or `?raw=true`, the raw bytes with their content type.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from sluice.api.auth import invocable_service
from sluice.api.gateway import PRIVATE_HEADERS as PRIVATE_HEADER_NAMES
from sluice.api.uploads import read_body
from sluice.replicas.process import Call

router = APIRouter(tags=["jobs"])

# Bodies OSCAR's clients send as text: base64, JSON or a form. Any other declared type is bytes.
TEXT_TYPES = ("", "text/plain", "application/json", "application/x-www-form-urlencoded")
ANY_TYPE = ("", "*/*", "text/plain", "text/*")
PRIVATE_HEADERS = frozenset(name.decode() for name in PRIVATE_HEADER_NAMES)  # never handed to a handler


@router.post(
    "/run/{name}",
    response_class=Response,
    responses={
        200: {"description": "the output: base64 text (OSCAR), or raw bytes when asked for"},
        502: {"description": "the script failed; the body names its exit code and ends its output"},
        503: {"description": "too many calls waiting for this service (Retry-After)"},
        504: {"description": "the script ran past the service's timeout"},
    },
)
async def run_service(name: str, request: Request, raw: bool = False) -> Response:
    """Run the service's script once on the body and answer with what it wrote to TMP_OUTPUT_DIR.

    One file: its content; several: a zip; none: the script's output. Base64-encoded, as OSCAR
    answers, unless `raw=true` or an `Accept` header other than `*/*` or `text/plain`.
    """
    record = await invocable_service(request, name)
    body = await read_body(request, request.app.state.settings.max_body)
    call = Call(
        body,
        request.headers.get("content-type", ""),
        {k: v for k, v in request.headers.items() if k not in PRIVATE_HEADERS},
        dict(request.query_params),
    )
    reply = await request.app.state.platform.run(
        record,
        call,
        raw_input=_media_type(call.content_type) not in TEXT_TYPES,
        raw_output=raw or _wants_raw(request.headers.get("accept")),
    )
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type)


def _media_type(header: str | None) -> str:
    """A Content-Type header's media type, without parameters."""
    return (header or "").split(";")[0].strip().lower()


def _wants_raw(accept: str | None) -> bool:
    """True when the caller accepts only specific types: clients that take anything (curl,
    requests, browsers' `*/*`) or text get OSCAR's base64 answer."""
    accepted = {_media_type(part) for part in (accept or "").split(",")}
    return not accepted & set(ANY_TYPE)
