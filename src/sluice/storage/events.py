"""Storage notifications in the formats stores send, translated to the objects they announce."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus


@dataclass(frozen=True)
class ObjectCreated:
    bucket: str
    key: str
    etag: str | None = None
    size: int | None = None


def minio_records(event: Any) -> list[ObjectCreated] | None:
    """Objects created in a MinIO/S3 notification (`{"Records": [...]}`); None if it is not one."""
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        return None
    created = []
    for record in event["Records"]:
        if not isinstance(record, dict):
            continue
        name = str(record.get("eventName", "s3:ObjectCreated:Put"))
        if "ObjectCreated" not in name:
            continue
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        key = obj.get("key")
        if not bucket or not key:
            continue
        etag = obj.get("eTag") or obj.get("etag")
        size = obj.get("size")
        created.append(
            ObjectCreated(
                str(bucket),
                unquote_plus(str(key)),
                str(etag).strip('"') if etag else None,
                int(size) if isinstance(size, int) else None,
            )
        )
    return created


def seaweed_created(event: Any) -> ObjectCreated | None:
    """A SeaweedFS filer webhook for a new or changed file under /buckets/ (directories ignored).

    Shape: {"event_type": "create"|"update"|..., "key": "/buckets/<bucket>/<key>",
    "message": {"new_entry": {"is_directory": bool, ...}, ...}}. The ETag is not in a form S3
    clients see, so callers stat the object for it.
    """
    if not isinstance(event, dict) or event.get("event_type") not in ("create", "update", "rename"):
        return None
    message = event.get("message") or {}
    entry = message.get("new_entry") or {}
    if not entry or entry.get("is_directory"):
        return None
    path = str(event.get("key") or "")
    if event.get("event_type") == "rename" and message.get("new_parent_path"):
        path = f"{message['new_parent_path'].rstrip('/')}/{entry.get('name', '')}"
    parts = path.split("/", 3)  # ['', 'buckets', bucket, key]
    if len(parts) != 4 or parts[1] != "buckets" or not parts[2] or not parts[3]:
        return None
    return ObjectCreated(parts[2], parts[3])
