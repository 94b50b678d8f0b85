"""S3 keys for one user, limited to the buckets they may use, through the store's IAM API.

OSCAR hands every user MinIO keys of their own, so S3 tools and oscar-python's `Storage` helper
reach their buckets and nobody else's. Sluice does the same with any store that speaks AWS's IAM
API (SeaweedFS on its S3 port, with `-s3.iam.readOnly=false`; Ceph RGW; AWS itself): one IAM
user per Sluice user, one access key, and one inline policy listing their buckets, rewritten
whenever who-may-use-what changes.

    iam = S3Iam(store)
    identity = await iam.create(user)            # IAM user + access key
    await iam.grant(identity, ["alice-in"])     # the policy: exactly these buckets
    await iam.remove(identity)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sluice.db.accounts import S3Identity
from sluice.errors import StorageError
from sluice.storage.s3 import S3Storage

POLICY_NAME = "sluice-buckets"
IAM_NAME = re.compile(r"[\w+=,.@-]{1,56}")  # IAM's alphabet, leaving room for the prefix


class S3Iam:
    def __init__(self, store: S3Storage) -> None:
        self._client = boto3.session.Session().client(
            "iam",
            endpoint_url=store.endpoint_url,
            aws_access_key_id=store.access_key,
            aws_secret_access_key=store.secret_key,
            region_name=store.region,
            verify=store.verify,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=30
            ),
        )

    async def create(self, user: str) -> S3Identity:
        iam_user = iam_name(user)
        try:
            await self._call(self._client.create_user, UserName=iam_user)
        except StorageError as exc:
            if "EntityAlreadyExists" not in exc.message:
                raise
        key = (await self._call(self._client.create_access_key, UserName=iam_user))["AccessKey"]
        return S3Identity(user, iam_user, key["AccessKeyId"], key["SecretAccessKey"])

    async def grant(self, identity: S3Identity, buckets: Sequence[str]) -> None:
        """Replace the user's policy: object actions on these buckets, nothing else."""
        if not buckets:  # no policy at all: the keys open nothing
            await self._delete_policy(identity)
            return
        await self._call(
            self._client.put_user_policy,
            UserName=identity.iam_user,
            PolicyName=POLICY_NAME,
            PolicyDocument=json.dumps(bucket_policy(buckets)),
        )

    async def remove(self, identity: S3Identity) -> None:
        """Delete the user's policy, key and IAM user (whatever of them still exists)."""
        await self._delete_policy(identity)
        await self.remove_key(identity)
        await self._ignoring_missing(self._client.delete_user, UserName=identity.iam_user)

    async def remove_key(self, identity: S3Identity) -> None:
        await self._ignoring_missing(
            self._client.delete_access_key, UserName=identity.iam_user, AccessKeyId=identity.access_key
        )

    async def _delete_policy(self, identity: S3Identity) -> None:
        await self._ignoring_missing(
            self._client.delete_user_policy, UserName=identity.iam_user, PolicyName=POLICY_NAME
        )

    async def _ignoring_missing(self, method: Any, **kwargs: Any) -> None:
        try:
            await self._call(method, **kwargs)
        except StorageError as exc:
            if "NoSuchEntity" not in exc.message:
                raise

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(method, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise StorageError(f"S3 IAM {error.get('Code', 'error')}: {error.get('Message', exc)}") from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 IAM API unreachable: {exc}") from None


def iam_name(user: str) -> str:
    """The IAM user for a Sluice user: readable where IAM's alphabet allows, a digest otherwise."""
    if IAM_NAME.fullmatch(user):
        return f"sluice-{user}"
    return f"sluice-{hashlib.sha256(user.encode()).hexdigest()[:32]}"


# Objects only: reading, writing, listing, multipart uploads (the actions SeaweedFS, Ceph and AWS
# all know). No bucket deletion, policies, ACLs
# or notifications: who may use a bucket is Sluice's to decide, and its events are its triggers.
OBJECT_ACTIONS = [
    "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:GetBucketLocation",
    "s3:AbortMultipartUpload",  # a multipart upload's other steps are s3:PutObject
]  # fmt: skip


def bucket_policy(buckets: Sequence[str]) -> dict[str, Any]:
    resources = [f"arn:aws:s3:::{name}{suffix}" for name in sorted(buckets) for suffix in ("", "/*")]
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": OBJECT_ACTIONS, "Resource": resources}],
    }
