"""Buckets on any S3-compatible server (AWS, MinIO, SeaweedFS, Ceph) through boto3.

    store = S3Storage.from_url("s3://ACCESS:SECRET@127.0.0.1:8333?secure=0")
    info = await store.put(Path("leaf.jpg"), "plants", "input/leaf.jpg")

Every blocking boto3 call runs in a worker thread; botocore's errors are translated into Sluice's at
this edge by error code, never by message.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sluice.errors import (
    BucketNotFound,
    Conflict,
    InvalidInput,
    InvalidObjectKey,
    ObjectNotFound,
    StorageError,
)
from sluice.storage.base import ObjectInfo, Operation, Page, validate_bucket, validate_key

T = TypeVar("T")

MAX_PAGE = 1000  # S3's own ceiling for ListObjectsV2 and DeleteObjects
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 presigned URLs cannot live longer
NOT_FOUND_CODES = frozenset({"404", "NotFound", "NoSuchKey"})
BUCKET_MISSING_CODES = frozenset({"NoSuchBucket"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


class S3Storage:
    name = "s3"

    def __init__(
        self,
        endpoint_url: str | None,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        verify: bool = True,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.verify = verify
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            verify=verify,
            config=Config(
                signature_version="s3v4",
                # Virtual-host addressing needs DNS per bucket, which self-hosted servers rarely have.
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                # Newer botocore sends CRC32 trailers by default, which several S3-compatible servers reject.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self._transfer = TransferConfig()

    def __repr__(self) -> str:
        return (
            f"S3Storage(endpoint_url={self.endpoint_url!r}, access_key={self.access_key!r}, "
            f"region={self.region!r}, verify={self.verify!r})"
        )

    @classmethod
    def from_url(cls, url: str) -> S3Storage:
        """Parse `s3://ACCESS:SECRET@host:port?region=us-east-1&secure=0` (or http:// / https://).

        `secure=0` selects plain http for s3:// URLs (https is the default); `verify=0` skips TLS
        certificate checks. Percent-encode `:`, `@` and `/` inside the credentials. Without a host,
        the endpoint is AWS's own for the region.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("s3", "http", "https"):
            raise InvalidInput(f"storage URL must start with s3://, http:// or https://: '{parts.scheme}:'")
        if parts.path not in ("", "/") or parts.fragment:
            raise InvalidInput("storage URL must not have a path or fragment: buckets are named per call")
        userinfo, at, hostport = parts.netloc.rpartition("@")
        access, colon, secret = userinfo.partition(":")
        if not at or not colon or not access or not secret:
            raise InvalidInput("storage URL must carry credentials as ACCESS:SECRET@host")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"region", "secure", "verify"}
        if unknown:
            raise InvalidInput(f"storage URL has unknown parameters: {', '.join(sorted(unknown))}")

        def flag(name: str, default: bool) -> bool:
            if name not in query:
                return default
            value = query[name][-1].lower()
            if value in TRUE_WORDS:
                return True
            if value in FALSE_WORDS:
                return False
            raise InvalidInput(f"storage URL parameter {name}={value!r} must be 0 or 1")

        if parts.scheme == "s3":
            scheme = "https" if flag("secure", True) else "http"
        else:
            if "secure" in query:
                raise InvalidInput("storage URL parameter 'secure' only applies to s3:// URLs")
            scheme = parts.scheme
        try:
            parts.port  # noqa: B018 - urlsplit validates the port lazily
        except ValueError as exc:
            raise InvalidInput(f"storage URL has an invalid port: {exc}") from None
        endpoint = f"{scheme}://{hostport}" if hostport else None
        region = query["region"][-1] if "region" in query else "us-east-1"
        if not region:
            raise InvalidInput("storage URL parameter 'region' is empty")
        return cls(endpoint, unquote(access), unquote(secret), region=region, verify=flag("verify", True))

    # error translation

    async def _run(self, operation: str, bucket: str | None, key: str | None, call: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(call)
        except ClientError as exc:
            raise self._translate(exc, operation, bucket, key) from exc
        except BotoCoreError as exc:
            raise StorageError(_describe(operation, bucket, key, type(exc).__name__, str(exc))) from exc

    @staticmethod
    def _translate(exc: ClientError, operation: str, bucket: str | None, key: str | None) -> Exception:
        code = _error_code(exc)
        if bucket is not None:
            if code in BUCKET_MISSING_CODES:
                return BucketNotFound(bucket)
            if code in NOT_FOUND_CODES:
                return ObjectNotFound(bucket, key) if key is not None else BucketNotFound(bucket)
            if code == "BucketNotEmpty":
                return Conflict(f"bucket '{bucket}' is not empty")
            if code == "BucketAlreadyExists":
                return Conflict(f"bucket name '{bucket}' is taken by another account")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = f"{code or 'no error code'} (HTTP {status})" if status else code or "no error code"
        message = str(exc.response.get("Error", {}).get("Message", ""))
        return StorageError(_describe(operation, bucket, key, detail, message))

    async def _head_object(self, operation: str, bucket: str, key: str) -> dict[str, Any]:
        try:
            return await self._run(
                operation, bucket, key, partial(self._client.head_object, Bucket=bucket, Key=key)
            )
        except ObjectNotFound:
            # HEAD has no error body, so a 404 cannot say whether the key or the bucket is missing.
            if not await self.bucket_exists(bucket):
                raise BucketNotFound(bucket) from None
            raise

    # buckets

    async def create_bucket(self, bucket: str) -> None:
        validate_bucket(bucket)
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.region != "us-east-1":
            # us-east-1 is the one region AWS rejects as an explicit location constraint.
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        await self._run("create_bucket", bucket, None, partial(self._create_bucket, kwargs))

    def _create_bucket(self, kwargs: dict[str, Any]) -> None:
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as exc:
            # Creating a bucket we already own is a no-op, as in the local provider.
            if _error_code(exc) != "BucketAlreadyOwnedByYou":
                raise

    async def delete_bucket(self, bucket: str, force: bool = False) -> None:
        validate_bucket(bucket)
        if force:
            await self._delete_all_objects(bucket)
        else:
            # Some servers (SeaweedFS by default) delete a non-empty bucket with everything in it.
            response = await self._list_objects(bucket, "", None, 1)
            if response.get("Contents"):
                raise Conflict(f"bucket '{bucket}' is not empty")
        await self._run("delete_bucket", bucket, None, partial(self._client.delete_bucket, Bucket=bucket))

    async def _delete_all_objects(self, bucket: str) -> None:
        token: str | None = None
        while True:
            response = await self._list_objects(bucket, "", token, MAX_PAGE)
            keys = [{"Key": item["Key"]} for item in response.get("Contents", [])]
            if keys:
                batch = {"Objects": keys, "Quiet": True}
                call = partial(self._client.delete_objects, Bucket=bucket, Delete=batch)
                failures = (await self._run("delete_objects", bucket, None, call)).get("Errors", [])
                if failures:
                    first = failures[0]
                    code = str(first.get("Code", "no error code"))
                    detail = f"{len(failures)} of {len(keys)} objects not deleted; {first.get('Message', '')}"
                    raise StorageError(_describe("delete_objects", bucket, first.get("Key"), code, detail))
            token = _next_token(response, bucket, token)
            if token is None:
                return

    async def bucket_exists(self, bucket: str) -> bool:
        validate_bucket(bucket)
        try:
            await self._run("head_bucket", bucket, None, partial(self._client.head_bucket, Bucket=bucket))
        except BucketNotFound:
            return False
        return True

    async def list_buckets(self) -> list[str]:
        response = await self._run("list_buckets", None, None, self._client.list_buckets)
        return sorted(item["Name"] for item in response.get("Buckets", []))

    # objects

    async def put(self, src: Path, bucket: str, key: str) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        try:
            await self._run("put", bucket, key, partial(self._upload, src, bucket, key, content_type))
        except StorageError:
            # SeaweedFS answers an upload to a missing bucket with AccessDenied, not NoSuchBucket.
            with contextlib.suppress(StorageError):
                if not await self.bucket_exists(bucket):
                    raise BucketNotFound(bucket) from None
            raise
        # The upload's response has no LastModified (and multipart hides the ETag), so ask once.
        return self._info(bucket, key, await self._head_object("put", bucket, key))

    def _upload(self, src: Path, bucket: str, key: str, content_type: str) -> None:
        # upload_fileobj (unlike upload_file) lets the ClientError with its code through.
        with src.open("rb") as stream:
            self._client.upload_fileobj(
                stream, bucket, key, ExtraArgs={"ContentType": content_type}, Config=self._transfer
            )

    async def get(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        return await self._run("get", bucket, key, partial(self._download, bucket, key, dest))

    def _download(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        response = self._client.get_object(Bucket=bucket, Key=key)
        info = self._info(bucket, key, response)
        # Stream into a sibling and rename, so a failed transfer never leaves half a file at `dest`.
        staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        body = response["Body"]
        try:
            with body, staging.open("wb") as out:
                for chunk in body.iter_chunks(1024 * 1024):
                    out.write(chunk)
            os.replace(staging, dest)
        finally:
            staging.unlink(missing_ok=True)
        return info

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        return self._info(bucket, key, await self._head_object("stat", bucket, key))

    async def delete(self, bucket: str, key: str) -> None:
        validate_bucket(bucket)
        validate_key(key)
        # S3 deletes of missing keys succeed silently; the provider contract reports them.
        await self._head_object("delete", bucket, key)
        await self._run("delete", bucket, key, partial(self._client.delete_object, Bucket=bucket, Key=key))

    async def list(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        token: str | None = None
        while True:
            page = await self.list_page(bucket, prefix, token, MAX_PAGE)
            for info in page.objects:
                yield info
            if page.next_token is None:
                return
            token = page.next_token

    async def list_page(
        self,
        bucket: str,
        prefix: str = "",
        token: str | None = None,
        limit: int = 1000,
        folders: bool = False,
    ) -> Page:
        validate_bucket(bucket)
        _validate_prefix(prefix)
        if limit < 1:
            raise InvalidInput(f"page limit must be at least 1, not {limit}")
        response = await self._list_objects(bucket, prefix, token, min(limit, MAX_PAGE))
        objects = [
            self._info(bucket, item["Key"], item)
            for item in response.get("Contents", [])
            # "folder/" placeholders made by consoles are not objects a Sluice key can name.
            if folders or not item["Key"].endswith("/")
        ]
        return Page(objects, _next_token(response, bucket, token))

    async def _list_objects(self, bucket: str, prefix: str, token: str | None, limit: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": limit}
        if token:
            kwargs["ContinuationToken"] = token
        return await self._run("list", bucket, None, partial(self._client.list_objects_v2, **kwargs))

    def presign(self, bucket: str, key: str, operation: Operation, expires_in: int) -> str:
        validate_bucket(bucket)
        validate_key(key)
        methods = {"upload": "put_object", "download": "get_object"}
        if operation not in methods:
            raise InvalidInput(f"presign operation must be 'upload' or 'download', not {operation!r}")
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise InvalidInput(f"presigned URL lifetime must be 1 to {MAX_PRESIGN_SECONDS} seconds")
        try:
            return self._client.generate_presigned_url(
                methods[operation],
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=expires_in,
            )
        except BotoCoreError as exc:
            raise StorageError(_describe("presign", bucket, key, type(exc).__name__, str(exc))) from exc

    @staticmethod
    def _info(bucket: str, key: str, item: dict[str, Any]) -> ObjectInfo:
        # HEAD/GET say ContentLength; listings say Size.
        size = item["ContentLength"] if "ContentLength" in item else item["Size"]
        modified: datetime = item["LastModified"]
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=int(size),
            etag=str(item.get("ETag", "")).strip('"'),
            last_modified=modified.astimezone(UTC),
        )


def _validate_prefix(prefix: str) -> None:
    # A prefix is acceptable when some valid key could start with it.
    if prefix:
        try:
            validate_key(prefix + "x")
        except InvalidObjectKey:
            raise InvalidObjectKey(f"prefix '{prefix}' cannot start any valid object key") from None


def _next_token(response: dict[str, Any], bucket: str, previous: str | None) -> str | None:
    if not response.get("IsTruncated"):
        return None
    token = response.get("NextContinuationToken")
    if not token or token == previous:
        # Following it would loop forever.
        raise StorageError(f"S3 list of bucket '{bucket}' returned a truncated page without a new token")
    return str(token)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe(operation: str, bucket: str | None, key: str | None, code: str, message: str) -> str:
    target = ""
    if bucket is not None:
        target = f" for bucket '{bucket}'" + (f", key '{key}'" if key is not None else "")
    text = f"S3 {operation} failed{target}: {code}"
    return f"{text}: {message}" if message else text
