"""Jobs: OSCAR's `/job/{svc}` and `/system/logs` routes, and Sluice's JSON job routes under /v1."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from sluice.api.auth import invocable_service, require_user
from sluice.api.services import managed_service
from sluice.api.shapes import decode_cursor, encode_cursor, job_json, oscar_job
from sluice.api.uploads import read_body
from sluice.db.jobs import FAILED
from sluice.engine.access import Caller, can_manage_service
from sluice.errors import InvalidInput

router = APIRouter(tags=["jobs"])
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


@router.post("/job/{name}", status_code=201)
async def submit_job(name: str, request: Request) -> JSONResponse:
    """Run the service once per object in a MinIO event, or once on the posted body.

    Answers 201 with the job ids (OSCAR returns none): `{"job_id": ..., "jobs": [...]}` and the
    first id in the `X-Job-Id` header. A repeated event for the same object returns its existing job.
    """
    platform = request.app.state.platform
    await invocable_service(request, name)
    body = await read_body(request, request.app.state.settings.max_body)
    accepted = await platform.submit(name, body)
    ids = [a.job_id for a in accepted]
    content = {
        "job_id": ids[0] if ids else None,
        "jobs": [{"id": a.job_id, "created": a.created} for a in accepted],
    }
    headers = {"X-Job-Id": ids[0]} if ids else {}
    return JSONResponse(content, status_code=201, headers=headers)


@router.get("/system/logs/", include_in_schema=False)
async def oscar_logs_without_service(_: Caller = Depends(require_user)) -> None:
    raise InvalidInput("name a service: GET /system/logs/{service} lists its jobs")


@router.get("/system/logs/{name}")
async def oscar_list_jobs(
    name: str,
    request: Request,
    page: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    caller: Caller = Depends(require_user),
) -> dict[str, Any]:
    await managed_service(request.app.state.platform, caller, name, cached=True)
    platform = request.app.state.platform
    found, remaining = await platform.list_jobs(name, after=decode_cursor(page), limit=limit)
    next_page = encode_cursor(found[-1]) if remaining else ""
    return {
        "jobs": {job.id: oscar_job(job) for job in found},
        "next_page": next_page,
        "remaining_jobs": remaining,
    }


@router.get("/system/logs/{name}/{job_id}", response_class=PlainTextResponse)
async def oscar_job_log(
    name: str, job_id: str, request: Request, caller: Caller = Depends(require_user)
) -> str:
    await managed_service(request.app.state.platform, caller, name, cached=True)
    return await request.app.state.platform.job_log(name, job_id)


@router.delete("/system/logs/{name}", status_code=204)
async def oscar_delete_jobs(
    name: str, request: Request, all: bool = False, caller: Caller = Depends(require_user)
) -> Response:
    await managed_service(request.app.state.platform, caller, name, cached=True)
    await request.app.state.platform.delete_jobs(name, everything=all)
    return Response(status_code=204)


@router.delete("/system/logs/{name}/{job_id}", status_code=204)
async def oscar_delete_job(
    name: str, job_id: str, request: Request, caller: Caller = Depends(require_user)
) -> Response:
    await managed_service(request.app.state.platform, caller, name, cached=True)
    await request.app.state.platform.delete_job(name, job_id)
    return Response(status_code=204)


@router.get("/v1/services/{name}/jobs")
async def list_jobs(
    name: str,
    request: Request,
    status: str | None = Query(None, pattern="^(" + "|".join(STATUSES) + ")$"),
    page: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    caller: Caller = Depends(require_user),
) -> dict[str, Any]:
    await managed_service(request.app.state.platform, caller, name, cached=True)
    found, remaining = await request.app.state.platform.list_jobs(
        name, status=status, after=decode_cursor(page), limit=limit
    )
    return {
        "jobs": [job_json(j) for j in found],
        "remaining": remaining,
        "next_page": encode_cursor(found[-1]) if remaining else None,
    }


@router.get("/v1/jobs/failed")
async def failed_jobs(
    request: Request, limit: int = Query(100, ge=1, le=1000), caller: Caller = Depends(require_user)
) -> dict[str, Any]:
    """The dead-letter list: failed jobs with no retries left, of every service the caller manages."""
    platform = request.app.state.platform
    managed = (
        None
        if caller.is_admin
        else [r.spec.name for r in await platform.list_services() if can_manage_service(caller, r)]
    )
    found = await platform.list_failed(limit, services=managed)
    return {"jobs": [job_json(j) for j in found], "status": FAILED}


@router.get("/v1/services/{name}/jobs/{job_id}")
async def get_job(
    name: str, job_id: str, request: Request, caller: Caller = Depends(require_user)
) -> dict[str, Any]:
    await managed_service(request.app.state.platform, caller, name, cached=True)
    return job_json(await request.app.state.platform.get_job(name, job_id))


@router.post("/v1/services/{name}/jobs/{job_id}/cancel")
async def cancel_job(
    name: str, job_id: str, request: Request, caller: Caller = Depends(require_user)
) -> dict[str, Any]:
    await managed_service(request.app.state.platform, caller, name, cached=True)
    previous = await request.app.state.platform.cancel_job(name, job_id)
    return {
        "id": job_id,
        "previous_status": previous,
        **job_json(await request.app.state.platform.get_job(name, job_id)),
    }


@router.post("/v1/services/{name}/jobs/{job_id}/requeue")
async def requeue_job(
    name: str, job_id: str, request: Request, caller: Caller = Depends(require_user)
) -> dict[str, Any]:
    await managed_service(request.app.state.platform, caller, name, cached=True)
    await request.app.state.platform.requeue_job(name, job_id)
    return job_json(await request.app.state.platform.get_job(name, job_id))
