"""How domain objects look on the wire: OSCAR's shapes and Sluice's native JSON."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

from sluice.db.jobs import Job
from sluice.db.services import ServiceRecord
from sluice.errors import InvalidInput
from sluice.executors.base import Executor
from sluice.storage.base import ObjectInfo

OSCAR_STATUS = {
    "queued": "Pending",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "cancelled": "Failed",
}


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def service_json(record: ServiceRecord, executor: Executor) -> dict[str, Any]:
    data = record.spec.public_dict()
    data["token"] = record.token
    data["owner"] = record.owner
    data["sluice_executor"] = executor.describe()
    if record.spec.handler:  # warm replicas: in the image with a container executor, else on the host
        where = "in containers" if executor.capabilities.runs_images else "host processes, image not used"
        data["sluice_executor"] = f"replicas ({where})"
    inactive = record.spec.inactive_fields()
    if executor.capabilities.runs_images:
        inactive = [f for f in inactive if f != "image_pull_secrets"]  # the container executor uses them
    elif record.spec.enable_gpu:
        inactive.append("enable_gpu")  # a host process gets whatever the host has: no GPU request
    if executor.capabilities.warm_scripts:  # min_scale warm containers are kept for script services
        inactive = [f for f in inactive if f != "synchronous.min_scale"]
    if inactive:
        data["sluice_inactive_fields"] = inactive
    return data


def oscar_job(job: Job) -> dict[str, Any]:
    info = {"status": OSCAR_STATUS.get(job.status, job.status), "creation_time": iso(job.created_at)}
    if job.started_at is not None:
        info["start_time"] = iso(job.started_at)
    if job.finished_at is not None:
        info["finish_time"] = iso(job.finished_at)
    return info


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "service": job.service,
        "status": job.status,
        "bucket": job.bucket,
        "key": job.key,
        "attempts": job.attempts,
        "failures": job.failures,
        "max_retries": job.max_retries,
        "exit_code": job.exit_code,
        "error": job.error,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }


def object_json(info: ObjectInfo) -> dict[str, Any]:
    return {
        "object_name": info.key,
        "size_bytes": info.size,
        "etag": info.etag,
        "last_modified": info.last_modified.isoformat().replace("+00:00", "Z"),
    }


def encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at!r}:{job.id}".encode()).decode()


def decode_cursor(page: str | None) -> tuple[float, str] | None:
    if not page:
        return None
    try:
        created, _, job_id = base64.urlsafe_b64decode(page.encode()).decode().partition(":")
        return float(created), job_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(f"invalid page token '{page}'") from None
