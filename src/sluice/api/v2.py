"""KServe's Open Inference Protocol (V2) over REST, for handler services.

    GET  /v2/health/live, /v2/health/ready      the server
    GET  /v2/models/{svc}                       the model's metadata
    GET  /v2/models/{svc}/ready                 200 once a replica has loaded it (400 before; the
                                                probe starts one on a service scaled to zero)
    POST /v2/models/{svc}/infer                 {"inputs": [{"name", "shape", "datatype", "data"}]}

Calls are authorized as `/run` calls (the service's token, its owner, users it is shared with).
Errors are V2's JSON `{"error": "..."}`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from sluice import __version__
from sluice.api.auth import invocable_service
from sluice.api.uploads import read_body
from sluice.db.services import ServiceRecord
from sluice.errors import InvalidInput, SluiceError
from sluice.replicas.process import Call

router = APIRouter(prefix="/v2", tags=["kserve-v2"])


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "sluice", "version": __version__, "extensions": []}


@router.get("/models/{name}")
async def model_metadata(name: str, request: Request) -> Response:
    try:
        record = await _handler_service(request, name)
    except SluiceError as exc:
        return _error(exc)
    return JSONResponse(
        {
            "name": name,
            "versions": [],
            "platform": "sluice",
            "inputs": [],
            "outputs": [],
            "handler": record.spec.handler,
        }
    )


@router.get("/models/{name}/ready")
async def model_ready(name: str, request: Request) -> Response:
    try:
        record = await _handler_service(request, name)
    except SluiceError as exc:
        return _error(exc)
    pool = request.app.state.platform.replicas.pool_for(record)
    if pool.ready:
        return JSONResponse({"name": name, "ready": True})
    pool.warm_one()
    return JSONResponse({"name": name, "ready": False}, status_code=400)


@router.post("/models/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    platform = request.app.state.platform
    try:
        record = await _handler_service(request, name)
        body = await read_body(request, request.app.state.settings.max_body)
        call = Call(body, "application/json", params=dict(request.query_params), protocol="v2", model=name)
        answer, _ = await platform.replicas.pool_for(record).call(call)
    except SluiceError as exc:
        return _error(exc)
    if answer.status >= 400:
        return JSONResponse({"error": answer.body.decode(errors="replace")}, status_code=answer.status)
    return Response(
        answer.body, status_code=answer.status, media_type=answer.content_type or "application/json"
    )


async def _handler_service(request: Request, name: str) -> ServiceRecord:
    record = await invocable_service(request, name)
    if not record.spec.handler:
        raise InvalidInput(f"service '{name}' runs a script; the V2 protocol needs a handler service")
    if request.app.state.settings.workers == 0:
        raise InvalidInput("this server runs no replicas (--workers 0)")
    return record


def _error(exc: SluiceError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if hasattr(exc, "retry_after") else None
    return JSONResponse({"error": exc.message}, status_code=exc.status_code, headers=headers)
