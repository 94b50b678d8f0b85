"""Which provider serves a service's input/output path: the platform's default store, or one the
service's FDL declares under `storage_providers`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sluice.errors import InvalidInput, SpecError
from sluice.spec.service import ServiceSpec, StorageIO
from sluice.storage.base import StorageProvider

S3_TYPES = ("minio", "s3")


def open_storage(url: str | None, data_dir: Path) -> StorageProvider:
    """The platform's default store from `--storage`: 'local' (default) or an s3:// URL."""
    if url in (None, "", "local"):
        from sluice.storage.local import LocalStorage

        return LocalStorage(data_dir / "buckets")
    if url.startswith(("s3://", "http://", "https://")):
        from sluice.storage.s3 import S3Storage

        return S3Storage.from_url(url)
    raise InvalidInput(f"unknown storage '{url}': use 'local' or s3://KEY:SECRET@HOST:PORT?secure=0")


class StorageRouter:
    def __init__(self, default: StorageProvider) -> None:
        self.default = default
        self._external: dict[tuple[Any, ...], StorageProvider] = {}

    def for_io(self, spec: ServiceSpec, io: StorageIO) -> StorageProvider:
        kind, ident = io.provider_type, io.provider_id
        declared = spec.storage_providers.get(kind, {}).get(ident)
        if kind in S3_TYPES and declared is None:
            if ident == "default":
                return self.default
            raise SpecError(
                [f"storage provider '{io.storage_provider}' is not declared in storage_providers"]
            )
        if kind in S3_TYPES and declared is not None:
            return self._s3(kind, declared)
        raise SpecError([f"storage provider type '{kind}' is not supported yet (supported: minio, s3)"])

    def is_default(self, spec: ServiceSpec, io: StorageIO) -> bool:
        return self.for_io(spec, io) is self.default

    def _s3(self, kind: str, config: dict[str, Any]) -> StorageProvider:
        from sluice.storage.s3 import S3Storage

        endpoint = config.get("endpoint")
        if kind == "s3" and not endpoint:
            endpoint = None  # AWS: boto3 picks the regional endpoint
        key = (endpoint, config.get("access_key"), config.get("region"), config.get("verify", True))
        if key not in self._external:
            self._external[key] = S3Storage(
                endpoint_url=endpoint,
                access_key=str(config.get("access_key", "")),
                secret_key=str(config.get("secret_key", "")),
                region=str(config.get("region") or "us-east-1"),
                verify=bool(config.get("verify", True)),
            )
        return self._external[key]


def split_path(path: str) -> tuple[str, str]:
    """'bucket/folder/sub' -> ('bucket', 'folder/sub')."""
    bucket, _, folder = path.partition("/")
    return bucket, folder
