"""/system/services: OSCAR's service CRUD (JSON bodies with the script inline).

A caller sees the services it owns and those shared with it; only the owner or the admin
changes or deletes one.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from sluice.api.auth import require_user
from sluice.api.shapes import service_json
from sluice.api.uploads import read_body
from sluice.db.services import ServiceRecord
from sluice.engine.access import Caller, can_manage_service, can_use_service
from sluice.engine.platform import Platform
from sluice.errors import Forbidden, InvalidInput, ServiceNotFound
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
        # Ours, in what GET returns: a definition read back can be put back as it is.
        data.pop("sluice_inactive_fields", None)
        data.pop("sluice_executor", None)
    return parse_service(data)


async def visible_service(
    platform: Platform, caller: Caller, name: str, *, cached: bool = False
) -> ServiceRecord:
    """The service if the caller may use it; otherwise it does not exist, as far as they know.

    `cached`: checked on the definition jobs and uploads use (a change made through another API
    server is seen within seconds), for routes that only need the permission: job listings and
    logs are polled, and a fresh read cost a query and a validation of the whole definition."""
    record = await (platform.known_service(name) if cached else platform.get_service(name))
    if not can_use_service(caller, record):
        raise ServiceNotFound(name)
    return record


async def managed_service(
    platform: Platform, caller: Caller, name: str, *, cached: bool = False
) -> ServiceRecord:
    record = await visible_service(platform, caller, name, cached=cached)
    if not can_manage_service(caller, record):
        raise Forbidden(f"only the owner of service '{name}' or the admin may do this")
    return record


@router.get("/system/services")
async def list_services(request: Request, caller: Caller = Depends(require_user)) -> list[dict[str, Any]]:
    platform = request.app.state.platform
    records = await platform.list_services()
    return [service_json(r, platform.executor) for r in records if can_use_service(caller, r)]


@router.post("/system/services", status_code=201)
async def create_service(request: Request, caller: Caller = Depends(require_user)) -> dict[str, Any]:
    spec = await _spec_from(request)
    record = await request.app.state.platform.create_service(spec, owner=caller)
    return service_json(record, request.app.state.platform.executor)


@router.put("/system/services", status_code=204)
async def update_service(request: Request, caller: Caller = Depends(require_user)) -> Response:
    spec = await _spec_from(request)
    platform = request.app.state.platform
    await managed_service(platform, caller, spec.name)
    await platform.update_service(spec, caller)
    return Response(status_code=204)


@router.get("/system/services/{name}")
async def get_service(name: str, request: Request, caller: Caller = Depends(require_user)) -> dict[str, Any]:
    platform = request.app.state.platform
    return service_json(await visible_service(platform, caller, name), platform.executor)


@router.delete("/system/services/{name}", status_code=204)
async def delete_service(
    name: str, request: Request, purge: bool = False, caller: Caller = Depends(require_user)
) -> Response:
    """Delete the service and its jobs. Its buckets and their files are kept unless `purge=true`."""
    platform = request.app.state.platform
    await managed_service(platform, caller, name)
    await platform.delete_service(name, purge=purge)
    return Response(status_code=204)


@router.get("/v1/services/{name}/replicas", tags=["services"])
async def service_replicas(
    name: str, request: Request, caller: Caller = Depends(require_user)
) -> dict[str, Any]:
    """A handler service's warm replicas: each one's state and load, calls waiting, cold starts
    (and how long the last took), calls and failures, the last error. For its owner and the admin."""
    platform = request.app.state.platform
    record = await managed_service(platform, caller, name)  # last_error may quote the init's secrets
    return {"service": name, **platform.replica_status(record)}
