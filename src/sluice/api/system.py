"""Health, info, config and status; and the OSCAR routes whose features are not built yet."""

from __future__ import annotations

import logging
import platform as host
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice import __version__
from sluice.api.auth import require_admin, require_user
from sluice.engine.access import Caller
from sluice.errors import StorageError

log = logging.getLogger("sluice.api")
router = APIRouter()
fallback_router = APIRouter()  # included last: it must not shadow real routes

NOT_YET = ("volumes", "quotas", "federation", "metrics")


@router.get("/health", response_class=PlainTextResponse, tags=["system"])
async def health() -> str:
    return "Ok"


@router.get("/system/info", tags=["system"])
async def info(request: Request, _: Caller = Depends(require_user)) -> dict[str, Any]:
    return {
        "version": __version__,
        "git_commit": "",
        "architecture": host.machine(),
        "kubernetes_version": "",
        "serverless_backend": {"name": "sluice", "version": __version__},
        "executor": request.app.state.platform.executor.name,
    }


@router.get("/system/config", tags=["system"])
@router.get("/system/config/", include_in_schema=False)
async def config(request: Request, caller: Caller = Depends(require_user)) -> dict[str, Any]:
    platform = request.app.state.platform
    store = platform.default_store()
    provider = {"endpoint": "", "verify": True, "access_key": "", "secret_key": "", "region": "us-east-1"}
    if store.name == "s3":
        # The admin gets the store's own keys; a user, keys that open only their buckets (or
        # none, where the store has no IAM API).
        try:
            keys = await platform.s3_keys_for(caller)
        except StorageError as exc:
            log.warning("no S3 keys for %s: %s", caller.name, exc.message)
            keys = None
        access_key, secret_key = keys or ("", "")
        provider = {
            "endpoint": store.endpoint_url or "",
            "verify": store.verify,
            "access_key": access_key,
            "secret_key": secret_key,
            "region": store.region,
        }
    return {
        "config": {
            "name": "sluice",
            "namespace": "",
            "services_namespace": "",
            "gpu_available": False,
            "interLink_available": False,
            "yunikorn_enable": False,
            "oidc_groups": [],
        },
        "minio_provider": provider,
    }


@router.get("/metrics", response_class=PlainTextResponse, tags=["system"])
async def metrics(request: Request, _: Caller = Depends(require_admin)) -> Response:
    """Prometheus metrics (text format): calls by outcome and their latency split into queue wait,
    platform and handler time; replicas by state; cold starts; jobs by outcome."""
    registry = request.app.state.platform.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/system/status", tags=["system"])
async def status(request: Request, _: Caller = Depends(require_user)) -> dict[str, Any]:
    return await request.app.state.platform.status()


@fallback_router.api_route(
    "/system/{feature}/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False
)
@fallback_router.api_route(
    "/system/{feature}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False
)
async def not_yet(feature: str, _: Caller = Depends(require_user), rest: str = "") -> PlainTextResponse:
    if feature in NOT_YET:
        return PlainTextResponse(f"OSCAR's /system/{feature} is not supported by Sluice yet", status_code=501)
    return PlainTextResponse(f"no route /system/{feature}", status_code=404)
