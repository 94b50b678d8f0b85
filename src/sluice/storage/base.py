"""The storage interface every provider implements, and object-key validation shared by all.

A provider keeps objects in buckets. Example, with the local provider::

    store = LocalStorage(Path("data/buckets"))
    await store.create_bucket("plants")
    info = await store.put(Path("leaf.jpg"), "plants", "input/leaf.jpg")
    await store.get("plants", "input/leaf.jpg", Path("/tmp/leaf.jpg"))
    async for obj in store.list("plants", prefix="input/"):
        print(obj.key, obj.size)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from sluice.errors import InvalidInput, InvalidObjectKey

BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255  # a file name's limit on the local store

Operation = Literal["upload", "download"]


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime


@dataclass(frozen=True)
class Page:
    objects: list[ObjectInfo]
    next_token: str | None


@runtime_checkable
class StorageProvider(Protocol):
    """Objects in buckets. Errors: BucketNotFound, ObjectNotFound, StorageError."""

    name: str

    async def create_bucket(self, bucket: str) -> None: ...
    async def delete_bucket(self, bucket: str, force: bool = False) -> None: ...
    async def bucket_exists(self, bucket: str) -> bool: ...
    async def list_buckets(self) -> list[str]: ...

    async def put(self, src: Path, bucket: str, key: str) -> ObjectInfo:
        """Store the file at `src` as `key`, atomically: readers see the old or the new object."""
        ...

    async def get(self, bucket: str, key: str, dest: Path) -> ObjectInfo: ...
    async def stat(self, bucket: str, key: str) -> ObjectInfo: ...
    async def delete(self, bucket: str, key: str) -> None: ...

    def list(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]: ...

    async def list_page(
        self,
        bucket: str,
        prefix: str = "",
        token: str | None = None,
        limit: int = 1000,
        folders: bool = False,
    ) -> Page:
        """One page of objects; with `folders`, empty folders appear as `name/` entries of size 0."""
        ...

    def presign(self, bucket: str, key: str, operation: Operation, expires_in: int) -> str | None:
        """A URL a client can use without credentials, or None if the platform must serve it."""
        ...


def validate_bucket(bucket: str) -> str:
    if not BUCKET_PATTERN.match(bucket) or ".." in bucket:
        raise InvalidInput(
            f"invalid bucket name '{bucket}': use 3-63 lowercase letters, digits, '.' or '-', "
            "starting and ending with a letter or digit"
        )
    return bucket


def validate_key(key: str) -> str:
    """Reject keys that could escape a bucket or cannot be stored: `..`, absolute, NUL, empty parts."""
    # Every upload and job checks keys several times: a plain ASCII key passes on a few scans
    # in C (its length in characters is its length in bytes).
    parts = key.split("/")
    if (
        key.isascii()
        and key
        and "\x00" not in key
        and key[0] != "\\"
        and "" not in parts
        and "." not in parts
        and ".." not in parts
        and len(key) <= MAX_KEY_BYTES
        and max(map(len, parts)) <= MAX_SEGMENT_BYTES
    ):
        return key
    return _refuse_key(key, parts)


def _refuse_key(key: str, parts: list[str]) -> str:
    """The slow path of `validate_key`: which rule a key breaks (or a long key that is valid)."""
    if not key:
        raise InvalidObjectKey("object key is empty")
    if "\x00" in key:
        raise InvalidObjectKey("object key contains a NUL byte")
    if key.startswith("/") or key.startswith("\\"):
        raise InvalidObjectKey(f"object key '{key}' is absolute; give a path relative to the bucket")
    try:
        encoded = key.encode()
    except UnicodeEncodeError:  # a lone surrogate (a JSON escape, a file name that was not UTF-8)
        raise InvalidObjectKey("object key is not valid UTF-8") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidObjectKey(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if any(part in (".", "..") for part in parts):
        raise InvalidObjectKey(f"object key '{key}' contains a '.' or '..' segment")
    if any(part == "" for part in parts[:-1]) or parts[-1] == "":
        raise InvalidObjectKey(f"object key '{key}' has an empty path segment")
    if any(len(part.encode()) > MAX_SEGMENT_BYTES for part in parts):
        raise InvalidObjectKey(f"a segment of object key '{key}' is longer than {MAX_SEGMENT_BYTES} bytes")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: like a key, but may be empty or end with '/'."""
    if prefix:
        validate_key(prefix.removesuffix("/") or "/")
    return prefix


def join_key(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name
