"""Buckets and objects on the platform's default store: OSCAR's /system/buckets routes, Sluice's
object routes under /v1 (upload, download, list, delete) and the presigned URLs of the local store.

An upload to a service's input path is stored and its jobs committed before the answer goes out.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from sluice.api.auth import require_user
from sluice.api.shapes import iso, object_json
from sluice.api.uploads import accept_upload, upload_answer
from sluice.db.accounts import BucketRecord
from sluice.engine.access import Caller, can_manage_bucket, can_use_bucket
from sluice.engine.platform import Platform
from sluice.errors import BucketNotFound, Forbidden, InvalidInput
from sluice.storage.base import validate_bucket, validate_key

router = APIRouter(tags=["buckets"])


class BucketBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    bucket_name: str
    visibility: Literal["private", "public", "restricted"] = "private"
    allowed_users: list[str] = Field(default_factory=list)


class PresignBody(BaseModel):
    object_key: str
    operation: str = Field(pattern="^(upload|download)$")
    expires_in: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    expires: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)  # what oscar-python sends
    content_type: str | None = None


def _platform(request: Request) -> Platform:
    return request.app.state.platform


async def usable_bucket(request: Request, caller: Caller, bucket: str) -> BucketRecord | None:
    """The bucket's record if it exists and the caller may use it; to others it does not exist."""
    platform = _platform(request)
    record = await platform.bucket_record_cached(validate_bucket(bucket))
    if not can_use_bucket(caller, record) or not await platform.default_store().bucket_exists(bucket):
        raise BucketNotFound(bucket)
    return record


async def _managed_bucket(request: Request, caller: Caller, bucket: str) -> BucketRecord | None:
    record = await usable_bucket(request, caller, bucket)
    if not can_manage_bucket(caller, record):
        raise Forbidden(f"only the owner of bucket '{bucket}' or the admin may do this")
    return record


def _bucket_json(request: Request, bucket: str, record: BucketRecord | None) -> dict[str, Any]:
    if record is None:  # made outside Sluice: the admin's
        return {
            "bucket_name": bucket,
            "visibility": "private",
            "allowed_users": [],
            "owner": request.app.state.settings.admin_user,
        }
    return {
        "bucket_name": bucket,
        "visibility": record.visibility,
        "allowed_users": list(record.allowed_users),
        "owner": record.owner,
    }


@router.get("/system/buckets")
async def list_buckets(request: Request, caller: Caller = Depends(require_user)) -> list[dict[str, Any]]:
    platform = _platform(request)
    records = await platform.bucket_records()
    return [
        _bucket_json(request, name, records.get(name))
        for name in await platform.default_store().list_buckets()
        if can_use_bucket(caller, records.get(name))
    ]


@router.post("/system/buckets", status_code=201)
async def create_bucket(
    body: BucketBody, request: Request, caller: Caller = Depends(require_user)
) -> Response:
    await _platform(request).create_bucket(
        validate_bucket(body.bucket_name), caller, body.visibility, body.allowed_users
    )
    return Response(status_code=201)


@router.put("/system/buckets", status_code=204)
async def update_bucket(
    body: BucketBody, request: Request, caller: Caller = Depends(require_user)
) -> Response:
    """Change who may use a bucket (its visibility and allowed users)."""
    await _managed_bucket(request, caller, body.bucket_name)
    await _platform(request).set_bucket_visibility(body.bucket_name, body.visibility, body.allowed_users)
    return Response(status_code=204)


@router.get("/system/buckets/{bucket}")
async def get_bucket(
    bucket: str,
    request: Request,
    page: str | None = None,
    prefix: str = "",
    limit: int = Query(1000, ge=1, le=1000),
    caller: Caller = Depends(require_user),
) -> dict[str, Any]:
    record = await usable_bucket(request, caller, bucket)
    store = _platform(request).default_store()
    listing = await store.list_page(bucket, prefix, page, limit, folders=True)  # OSCAR shows folders
    return {
        **_bucket_json(request, bucket, record),
        "objects": [object_json(o) for o in listing.objects],
        "next_page": listing.next_token or "",
        "is_truncated": listing.next_token is not None,
        "returned_items": len(listing.objects),
    }


@router.delete("/system/buckets/{bucket}", status_code=204)
async def delete_bucket(bucket: str, request: Request, caller: Caller = Depends(require_user)) -> Response:
    """Delete a bucket and every object in it."""
    await _managed_bucket(request, caller, bucket)
    await _platform(request).delete_bucket(bucket)
    return Response(status_code=204)


@router.post("/system/buckets/{bucket}/presign")
async def presign(
    bucket: str, body: PresignBody, request: Request, caller: Caller = Depends(require_user)
) -> dict[str, Any]:
    await usable_bucket(request, caller, bucket)
    key = validate_key(body.object_key)
    expires_in = body.expires_in or body.expires or 3600
    url = _platform(request).default_store().presign(bucket, key, body.operation, expires_in)  # type: ignore[arg-type]
    if url is None:
        url, _expires = request.app.state.signer.url(body.operation, bucket, key, expires_in)
    return {
        "url": url,
        "method": "PUT" if body.operation == "upload" else "GET",
        "object_key": key,
        "operation": body.operation,
        "expires_at": iso(time.time() + expires_in),
        "headers": {"Content-Type": body.content_type} if body.content_type else {},
    }


# native object routes


async def _upload(request: Request, bucket: str, key: str) -> JSONResponse:
    platform = _platform(request)
    validate_bucket(bucket)
    validate_key(key)
    if not await platform.default_store().bucket_exists(bucket):
        raise BucketNotFound(bucket)
    upload = await accept_upload(
        platform,
        request.stream(),
        request.headers.get("content-length"),
        bucket,
        key,
        request.app.state.settings.max_upload,
    )
    body, headers = upload_answer(upload, bucket)
    return JSONResponse(body, status_code=201, headers=headers)


async def _download(request: Request, bucket: str, key: str) -> Response:
    store = _platform(request).default_store()
    validate_bucket(bucket)
    validate_key(key)
    open_path = getattr(store, "open_path", None)
    if open_path is not None:
        info = await store.stat(bucket, key)  # the ETag listings show, not one derived by Starlette
        return FileResponse(open_path(bucket, key), filename=Path(key).name, headers=_etag(info.etag))
    handle, temp = tempfile.mkstemp(prefix="sluice-download-")
    os.close(handle)
    try:
        info = await store.get(bucket, key, Path(temp))
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return FileResponse(
        temp, filename=Path(key).name, headers=_etag(info.etag), background=BackgroundTask(Path(temp).unlink)
    )


def _etag(etag: str) -> dict[str, str]:
    return {"etag": f'"{etag}"'}


@router.put("/v1/buckets/{bucket}/objects/{key:path}", status_code=201)
async def put_object(
    bucket: str, key: str, request: Request, caller: Caller = Depends(require_user)
) -> JSONResponse:
    """Upload the raw body as `key`. If `key` is in a service's input path, its job is created
    before this answers (ids in `jobs` and the `X-Job-Id` header)."""
    await usable_bucket(request, caller, bucket)
    return await _upload(request, bucket, key)


@router.get("/v1/buckets/{bucket}/objects/{key:path}")
async def get_object(
    bucket: str, key: str, request: Request, caller: Caller = Depends(require_user)
) -> Response:
    await usable_bucket(request, caller, bucket)
    return await _download(request, bucket, key)


@router.delete("/v1/buckets/{bucket}/objects/{key:path}", status_code=204)
async def delete_object(
    bucket: str, key: str, request: Request, caller: Caller = Depends(require_user)
) -> Response:
    await usable_bucket(request, caller, bucket)
    await _platform(request).default_store().delete(bucket, validate_key(key))
    return Response(status_code=204)


@router.get("/v1/buckets/{bucket}/objects")
async def list_objects(
    bucket: str,
    request: Request,
    prefix: str = "",
    page: str | None = None,
    limit: int = Query(1000, ge=1, le=1000),
    folders: bool = Query(False, description="also list empty folders, as `name/` entries"),
    caller: Caller = Depends(require_user),
) -> dict[str, Any]:
    await usable_bucket(request, caller, bucket)
    store = _platform(request).default_store()
    listing = await store.list_page(bucket, prefix, page, limit, folders=folders)
    return {"objects": [object_json(o) for o in listing.objects], "next_page": listing.next_token}


def _check_signature(
    request: Request, operation: str, bucket: str, key: str, expires: int, signature: str, op: str
) -> None:
    if op != operation:
        raise InvalidInput(f"this URL is for '{op}', not '{operation}'")
    request.app.state.signer.verify(operation, bucket, key, expires, signature)


@router.put("/v1/presigned/{bucket}/{key:path}", status_code=201, include_in_schema=False)
async def presigned_put(
    bucket: str, key: str, request: Request, op: str, expires: int, signature: str
) -> JSONResponse:
    _check_signature(request, "upload", bucket, key, expires, signature, op)
    return await _upload(request, bucket, key)


@router.get("/v1/presigned/{bucket}/{key:path}", include_in_schema=False)
async def presigned_get(
    bucket: str, key: str, request: Request, op: str, expires: int, signature: str
) -> Response:
    _check_signature(request, "download", bucket, key, expires, signature, op)
    return await _download(request, bucket, key)
