"""OSCAR's deployment routes, answered for what Sluice keeps running: a handler service's replicas,
an exposed service's copies.

    GET  /system/services/{svc}/auth             200 if the credentials may invoke the service
    GET  /system/services/{svc}/deployment       what runs: replicas ready/starting, or "on demand"
    GET  /system/services/{svc}/deployment/logs  the replicas' output (what handlers print)
    POST /system/services/{svc}/start|stop|restart

A script service runs nothing between jobs: its deployment is "on demand", and start, stop and
restart answer 400 saying so (OSCAR answers 400 for services that are not exposed, likewise).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse

from sluice.api.auth import invocable_service, require_user
from sluice.api.services import managed_service
from sluice.db.services import ServiceRecord
from sluice.engine.access import Caller
from sluice.errors import InvalidInput
from sluice.replicas.exposed import ExposedService, ExposeScaling

router = APIRouter(tags=["deployment"])
MAX_LOG_LINES = 5000


@router.get("/system/services/{name}/auth", response_class=PlainTextResponse)
async def check_access(name: str, request: Request) -> str:
    """200 when the request's credentials (service token, OIDC token, Basic) may invoke the service."""
    await invocable_service(request, name)
    return "OK"


@router.get("/system/services/{name}/deployment")
async def deployment(name: str, request: Request, caller: Caller = Depends(require_user)) -> dict[str, Any]:
    record = await managed_service(request.app.state.platform, caller, name)
    return _status(request, record)


@router.get("/system/services/{name}/deployment/logs")
async def deployment_logs(
    name: str,
    request: Request,
    timestamps: bool = False,
    tailLines: int = Query(100, ge=1, le=MAX_LOG_LINES),
    caller: Caller = Depends(require_user),
) -> dict[str, Any]:
    record = await managed_service(request.app.state.platform, caller, name)
    if not record.spec.handler:
        return {
            "service_name": name,
            "available": False,
            "entries": [],
            "message": f"a script service logs per job: GET /system/logs/{name}/{{job}}",
        }
    lines = request.app.state.platform.replicas.log_tail(record, tailLines)
    stamp = datetime.now(UTC).isoformat() if timestamps else ""
    return {
        "service_name": name,
        "available": True,
        "entries": [{"timestamp": stamp, "message": line} for line in lines],
        "message": "",
    }


@router.post("/system/services/{name}/start")
async def start(name: str, request: Request, caller: Caller = Depends(require_user)) -> dict[str, Any]:
    record = await _replicated(request, caller, name)
    request.app.state.platform.replicas.start(record)
    return _status(request, record)


@router.post("/system/services/{name}/stop")
async def stop(name: str, request: Request, caller: Caller = Depends(require_user)) -> dict[str, Any]:
    record = await _replicated(request, caller, name)
    request.app.state.platform.replicas.stop_service(record)
    return _status(request, record)


@router.post("/system/services/{name}/restart")
async def restart(name: str, request: Request, caller: Caller = Depends(require_user)) -> dict[str, Any]:
    record = await _replicated(request, caller, name)
    replicas = request.app.state.platform.replicas
    replicas.drop(name)
    replicas.start(record)
    return _status(request, record)


async def _replicated(request: Request, caller: Caller, name: str) -> ServiceRecord:
    record = await managed_service(request.app.state.platform, caller, name)
    if not record.spec.handler and record.spec.expose is None:
        raise InvalidInput(f"service '{name}' runs a script per job: nothing runs to start, stop or restart")
    return record


def _status(request: Request, record: ServiceRecord) -> dict[str, Any]:
    """OSCAR's ServiceDeploymentStatus for what runs of the service here."""
    name = record.spec.name
    common = {"service_name": name, "namespace": "", "last_transition_time": _now()}
    replicas = request.app.state.platform.replicas
    if record.spec.expose is not None and not record.spec.handler:
        scaling = ExposeScaling.of(record.spec.expose)
        exposed = replicas.exposed_status(name) or ExposedService.idle_status(scaling)
        if replicas.is_stopped(name):
            state, reason = "stopped", f"stopped on request: POST /system/services/{name}/start"
        elif exposed["healthy"]:
            state, reason = "ready", ""
        elif exposed["copies"] or exposed["scaling"]["min_scale"]:
            state, reason = "starting", ""
        else:  # min_scale 0 and idle: not stopped, nothing to wait for but the next request
            state, reason = "scaled-to-zero", "the next request starts a copy"
        return {**common, "resource_kind": "exposed", "state": state, "active_instances": exposed["healthy"],
                "affected_instances": exposed["copies"] - exposed["healthy"],
                "reason": exposed["last_error"] or reason}  # fmt: skip
    if not record.spec.handler:
        return {**common, "resource_kind": "jobs", "state": "on-demand", "active_instances": 0,
                "affected_instances": 0, "reason": "a script service runs one process per job"}  # fmt: skip
    status = replicas.status(name) or {"ready": 0, "starting": 0, "last_error": None}
    if replicas.is_stopped(name):
        state, reason = "stopped", f"stopped on request: POST /system/services/{name}/start"
    elif status["ready"]:
        state, reason = "ready", ""
    elif status["starting"]:
        state, reason = "starting", ""
    else:
        state, reason = "scaled-to-zero", "the next call starts a replica"
    return {
        **common,
        "resource_kind": "replicas",
        "state": state,
        "active_instances": status["ready"],
        "affected_instances": status["starting"],
        "reason": status["last_error"] or reason,
    }


def _now() -> str:
    return datetime.fromtimestamp(time.time(), UTC).isoformat().replace("+00:00", "Z")
