"""Object storage providers (local folders, S3) behind one interface."""

from sluice.storage.base import ObjectInfo, Page, StorageProvider, validate_bucket, validate_key

__all__ = ["ObjectInfo", "Page", "StorageProvider", "validate_bucket", "validate_key"]
