"""Buckets as folders under one root directory: the embedded, zero-setup provider.

Writes go to a temporary file under `<root>/.tmp` and are renamed into place, so a reader or a
crash never sees half an object. The ETag is derived from the file's identity (inode, size,
mtime), so listing never reads file contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG

from sluice.errors import BucketNotFound, Conflict, ObjectNotFound
from sluice.storage.base import ObjectInfo, Operation, Page, validate_bucket, validate_key, validate_prefix
from sluice.storage.durable import sync_files
from sluice.storage.files import copy_into

TMP_DIR = ".tmp"
INLINE_BYTES = 256 * 1024  # smaller files are copied on the event loop: a thread hop costs more


class LocalStorage:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        # Paths inside are joined as strings: pathlib's joins were a third of these operations'
        # CPU, and every upload and job goes through several.
        self._root = str(self.root)
        self._staging_dir = os.path.join(self._root, TMP_DIR)

    # buckets

    def _bucket_dir(self, bucket: str) -> str:
        return os.path.join(self._root, validate_bucket(bucket))

    def _existing_bucket(self, bucket: str) -> str:
        path = self._bucket_dir(bucket)
        if not os.path.isdir(path):
            raise BucketNotFound(bucket)
        return path

    async def create_bucket(self, bucket: str) -> None:
        Path(self._bucket_dir(bucket)).mkdir(exist_ok=True)

    async def delete_bucket(self, bucket: str, force: bool = False) -> None:
        path = self._existing_bucket(bucket)
        if force:
            await asyncio.to_thread(shutil.rmtree, path)
            return
        if os.listdir(path):
            raise Conflict(f"bucket '{bucket}' is not empty")
        os.rmdir(path)

    async def bucket_exists(self, bucket: str) -> bool:
        return os.path.isdir(self._bucket_dir(bucket))

    async def list_buckets(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name != TMP_DIR)

    async def make_folder(self, bucket: str, folder: str) -> None:
        """Local buckets show folders; create a service's input/output folders so users see them."""
        os.makedirs(os.path.join(self._existing_bucket(bucket), validate_key(folder)), exist_ok=True)

    # objects

    def _object_path(self, bucket: str, key: str) -> str:
        return os.path.join(self._existing_bucket(bucket), validate_key(key))

    def path_of(self, bucket: str, key: str) -> str:
        """The file that holds (or would hold) an object."""
        return self._object_path(bucket, key)

    def make_durable(self, paths: list[str]) -> None:
        """Put these objects' files, and their names in their folders, on the disk (blocking:
        call it from a thread). Many at once cost little more than one."""
        sync_files(paths, self._root)

    def _info(self, bucket: str, key: str, stat: os.stat_result) -> ObjectInfo:
        identity = f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=stat.st_size,
            etag=hashlib.md5(identity, usedforsecurity=False).hexdigest(),
            last_modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    async def put(self, src: Path, bucket: str, key: str) -> ObjectInfo:
        dest = self._object_path(bucket, key)
        return await asyncio.to_thread(self._put_sync, src, dest, bucket, key)

    def _put_sync(self, src: Path, dest: str, bucket: str, key: str) -> ObjectInfo:
        staging = self._new_staging_name()
        try:
            shutil.copyfile(src, staging)
        except BaseException:
            _unlink_quietly(staging)
            raise
        return self._publish(staging, dest, bucket, key)

    async def adopt(self, staging: Path | str, bucket: str, key: str) -> ObjectInfo:
        """Move a finished file (already on this filesystem) into place: no copy. The file is
        the store's from then on: moved, or removed if it cannot be stored."""
        try:
            dest = self._object_path(bucket, key)
        except BaseException:  # the bucket is gone, say: nothing may stay in the staging area
            _unlink_quietly(staging)
            raise
        if os.path.islink(staging):  # a link would point into a folder about to be cleared: copy
            return await asyncio.to_thread(self._put_sync, staging, dest, bucket, key)
        return self._publish(staging, dest, bucket, key)  # a rename: cheaper than a thread hop

    def staging_path(self) -> str:
        """A fresh path on the same filesystem, for callers that write an upload before `adopt`."""
        return self._new_staging_name()

    def _new_staging_name(self) -> str:
        return os.path.join(self._staging_dir, uuid.uuid4().hex)

    def _publish(self, staging: Path | str, dest: str, bucket: str, key: str) -> ObjectInfo:
        # The rename is tried first and its errors say what was in the way: checking beforehand
        # cost more than the rename itself, on every object stored.
        try:
            try:
                self._replace(staging, dest)
            except FileNotFoundError:  # a folder the bucket does not have yet
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                self._replace(staging, dest)
        except IsADirectoryError:
            _unlink_quietly(staging)
            raise Conflict(f"'{key}' is a folder in bucket '{bucket}'") from None
        except (FileExistsError, NotADirectoryError):
            _unlink_quietly(staging)
            message = f"cannot store '{key}' in bucket '{bucket}': a parent folder is an object"
            raise Conflict(message) from None
        except BaseException:
            _unlink_quietly(staging)
            raise
        return self._info(bucket, key, os.stat(dest))

    def _replace(self, staging: Path | str, dest: str) -> None:
        try:
            os.replace(staging, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # `adopt` of a file on another filesystem: copy it next to the bucket first.
            nearby = self._new_staging_name()
            try:
                shutil.copyfile(staging, nearby)
                os.replace(nearby, dest)
                _unlink_quietly(staging)  # moved, as far as the caller knows
            finally:
                _unlink_quietly(nearby)

    async def get(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        path = self._object_path(bucket, key)
        stat = _object_stat(path, bucket, key)
        try:
            # Into `dest`'s own file if it has one: the workspace reuses its input files.
            if stat.st_size <= INLINE_BYTES:
                copy_into(path, dest)
            else:
                await asyncio.to_thread(copy_into, path, dest)
        except FileNotFoundError:  # deleted since
            raise ObjectNotFound(bucket, key) from None
        return self._info(bucket, key, stat)

    def open_path(self, bucket: str, key: str) -> Path:
        """The object's file, for zero-copy streaming by the API."""
        path = self._object_path(bucket, key)
        if not os.path.isfile(path):
            raise ObjectNotFound(bucket, key)
        return Path(path)

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        return self._info(bucket, key, _object_stat(self._object_path(bucket, key), bucket, key))

    async def delete(self, bucket: str, key: str) -> None:
        path = self._object_path(bucket, key)
        try:
            if os.path.isdir(path):  # a folder is not an object: deleting "f" never removes "f/..."
                if os.listdir(path):
                    raise ObjectNotFound(bucket, key)
                os.rmdir(path)  # an empty folder, as listed with `folders`
                return
            os.unlink(path)
        except FileNotFoundError:
            raise ObjectNotFound(bucket, key) from None

    def _walk(self, bucket: str, prefix: str, empty_folders: bool = False) -> list[ObjectInfo]:
        """Objects under `prefix`, sorted by key; with `empty_folders`, an empty folder is listed
        as a `folder/` entry of size 0, as S3 consoles show folder markers."""
        base = self._existing_bucket(bucket)
        validate_prefix(prefix)
        # Only descend into the folder the prefix names, not the whole bucket.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = os.path.join(base, folder) if folder else base
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, base)
            if empty_folders and not dirnames and not filenames and rel_dir != ".":
                marker = f"{rel_dir}/"
                if marker.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        info = self._info(bucket, marker, os.stat(dirpath))
                        found.append(dataclasses.replace(info, size=0))
            for filename in filenames:
                key = filename if rel_dir == "." else f"{rel_dir}/{filename}"
                if key.startswith(prefix):
                    try:
                        found.append(self._info(bucket, key, os.stat(os.path.join(dirpath, filename))))
                    except FileNotFoundError:
                        continue  # deleted while listing
        found.sort(key=lambda info: info.key)
        return found

    async def list(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for info in await asyncio.to_thread(self._walk, bucket, prefix):
            yield info

    async def list_page(
        self,
        bucket: str,
        prefix: str = "",
        token: str | None = None,
        limit: int = 1000,
        folders: bool = False,
    ) -> Page:
        objects = await asyncio.to_thread(self._walk, bucket, prefix, folders)
        if token:
            objects = [o for o in objects if o.key > token]
        page = objects[:limit]
        next_token = page[-1].key if len(objects) > limit else None
        return Page(page, next_token)

    def presign(self, bucket: str, key: str, operation: Operation, expires_in: int) -> str | None:
        return None  # the platform serves local objects itself, under a signed URL


def _unlink_quietly(path: Path | str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _object_stat(path: str, bucket: str, key: str) -> os.stat_result:
    """The object's file status; ObjectNotFound if no object has that key: nothing there, a
    folder, or a path through an object ("a.txt/b") or through a link loop."""
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectNotFound(bucket, key) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ObjectNotFound(bucket, key) from None
        raise
    if not S_ISREG(stat.st_mode):
        raise ObjectNotFound(bucket, key)
    return stat
