"""Webhooks from S3 stores announcing uploads to the platform's default store.

- `POST /v1/events/minio`: MinIO's bucket notification (`{"Records": [...]}`), for every service
  watching the objects' paths (OSCAR's per-service `/job/{svc}` takes the same format).
- `POST /v1/events/seaweedfs`: the SeaweedFS filer's webhook, translated.

Both take `Authorization: Bearer <SLUICE_WEBHOOK_TOKEN>` (or the admin's Basic credentials) and
answer only after the jobs are committed. Missed events are caught by the reconciler anyway.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter, Request

from sluice.api.auth import bearer, require_admin
from sluice.api.uploads import read_body
from sluice.errors import InvalidInput, NotFound, Unauthorized
from sluice.storage.events import ObjectCreated, minio_records, seaweed_created

router = APIRouter(tags=["events"])


async def _authorize(request: Request) -> None:
    token = bearer(request.headers.get("authorization"))
    expected = request.app.state.settings.webhook_token
    if token is not None and expected is not None:
        if hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
            return
        raise Unauthorized("invalid webhook token")
    if token is not None:
        raise Unauthorized("webhooks are off: set SLUICE_WEBHOOK_TOKEN on the server")
    await require_admin(request)


async def _json(request: Request) -> Any:
    body = await read_body(request, request.app.state.settings.max_body)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InvalidInput(f"the event must be JSON: {exc}") from None


@router.post("/v1/events/minio")
async def minio_event(request: Request) -> dict[str, Any]:
    await _authorize(request)
    created = minio_records(await _json(request))
    if created is None:
        raise InvalidInput("not a MinIO/S3 event: expected a JSON object with a 'Records' list")
    accepted = await request.app.state.platform.announce(created)
    return {"jobs": [a.job_id for a in accepted]}


@router.post("/v1/events/seaweedfs")
async def seaweedfs_event(request: Request) -> dict[str, Any]:
    await _authorize(request)
    created = seaweed_created(await _json(request))
    if created is None:
        return {"jobs": []}  # deletions, directories, other paths: nothing to run
    platform = request.app.state.platform
    try:
        # The filer's event carries no S3 ETag; the reconciler sees the store's, so ask the store.
        info = await platform.default_store().stat(created.bucket, created.key)
    except NotFound:
        return {"jobs": []}  # gone again before we looked
    accepted = await platform.announce([ObjectCreated(info.bucket, info.key, info.etag, info.size)])
    return {"jobs": [a.job_id for a in accepted]}
