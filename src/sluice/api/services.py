"""/system/services: OSCAR's service CRUD (JSON bodies with the script inline)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from sluice.api.auth import Caller, require_admin
from sluice.api.shapes import service_json
from sluice.api.uploads import read_body
from sluice.errors import InvalidInput
from sluice.spec.fdl import parse_service
from sluice.spec.service import ServiceSpec

router = APIRouter(tags=["services"])


async def _spec_from(request: Request) -> ServiceSpec:
    body = await read_body(request, request.app.state.settings.max_body)
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidInput(f"the body must be a JSON service definition: {exc}") from None
    if isinstance(data, dict):
        data.pop("sluice_inactive_fields", None)  # ours, in what GET returns: a definition read back
    return parse_service(data)


@router.get("/system/services")
async def list_services(request: Request, _: Caller = Depends(require_admin)) -> list[dict[str, Any]]:
    return [service_json(r) for r in await request.app.state.platform.list_services()]


@router.post("/system/services", status_code=201)
async def create_service(request: Request, caller: Caller = Depends(require_admin)) -> dict[str, Any]:
    spec = await _spec_from(request)
    record = await request.app.state.platform.create_service(spec, owner=caller.name)
    return service_json(record)


@router.put("/system/services", status_code=204)
async def update_service(request: Request, _: Caller = Depends(require_admin)) -> Response:
    spec = await _spec_from(request)
    await request.app.state.platform.update_service(spec)
    return Response(status_code=204)


@router.get("/system/services/{name}")
async def get_service(name: str, request: Request, _: Caller = Depends(require_admin)) -> dict[str, Any]:
    return service_json(await request.app.state.platform.get_service(name))


@router.delete("/system/services/{name}", status_code=204)
async def delete_service(
    name: str, request: Request, purge: bool = False, _: Caller = Depends(require_admin)
) -> Response:
    """Delete the service and its jobs. Its buckets and their files are kept unless `purge=true`."""
    await request.app.state.platform.delete_service(name, purge=purge)
    return Response(status_code=204)
