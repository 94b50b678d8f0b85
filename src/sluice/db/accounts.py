"""Statements on users and bucket ownership."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update

from sluice.db.schema import buckets, s3_identities, users


@dataclass(frozen=True)
class S3Identity:
    user: str
    iam_user: str
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class BucketRecord:
    name: str
    owner: str
    visibility: str
    allowed_users: tuple[str, ...]


def password_hash(connection: Connection, name: str) -> str | None:
    return connection.execute(select(users.c.password_hash).where(users.c.name == name)).scalar_one_or_none()


def user_names(connection: Connection) -> list[str]:
    return list(connection.execute(select(users.c.name).order_by(users.c.name)).scalars())


def add_user(connection: Connection, name: str, hashed: str, now: float) -> bool:
    """False if the user exists already."""
    if password_hash(connection, name) is not None:
        return False
    connection.execute(insert(users).values(name=name, password_hash=hashed, created_at=now))
    return True


def set_password(connection: Connection, name: str, hashed: str) -> bool:
    return (
        connection.execute(update(users).where(users.c.name == name).values(password_hash=hashed)).rowcount
        == 1
    )


def remove_user(connection: Connection, name: str) -> bool:
    return connection.execute(delete(users).where(users.c.name == name)).rowcount == 1


def _bucket(row: object) -> BucketRecord:
    m = row._mapping  # type: ignore[attr-defined]
    return BucketRecord(m["name"], m["owner"], m["visibility"], tuple(json.loads(m["allowed_users"])))


def get_bucket(connection: Connection, name: str) -> BucketRecord | None:
    row = connection.execute(select(buckets).where(buckets.c.name == name)).first()
    return _bucket(row) if row else None


def all_buckets(connection: Connection) -> list[BucketRecord]:
    return [_bucket(row) for row in connection.execute(select(buckets).order_by(buckets.c.name))]


def claim_bucket(connection: Connection, bucket: BucketRecord, now: float) -> BucketRecord:
    """Record the bucket's owner unless it has one already; returns the bucket as recorded."""
    existing = get_bucket(connection, bucket.name)
    if existing is not None:
        return existing
    connection.execute(
        insert(buckets).values(
            name=bucket.name,
            owner=bucket.owner,
            visibility=bucket.visibility,
            allowed_users=json.dumps(list(bucket.allowed_users)),
            created_at=now,
        )
    )
    return bucket


def set_bucket_visibility(connection: Connection, name: str, visibility: str, allowed: list[str]) -> bool:
    result = connection.execute(
        update(buckets)
        .where(buckets.c.name == name)
        .values(visibility=visibility, allowed_users=json.dumps(allowed))
    )
    return result.rowcount == 1


def forget_bucket(connection: Connection, name: str) -> None:
    connection.execute(delete(buckets).where(buckets.c.name == name))


def _identity(row: object) -> S3Identity:
    m = row._mapping  # type: ignore[attr-defined]
    return S3Identity(m["user"], m["iam_user"], m["access_key"], m["secret_key"])


def s3_identity(connection: Connection, user: str) -> S3Identity | None:
    row = connection.execute(select(s3_identities).where(s3_identities.c.user == user)).first()
    return _identity(row) if row else None


def all_s3_identities(connection: Connection) -> list[S3Identity]:
    rows = connection.execute(select(s3_identities).order_by(s3_identities.c.user))
    return [_identity(row) for row in rows]


def keep_s3_identity(connection: Connection, identity: S3Identity, now: float) -> S3Identity:
    """Store it, unless another server stored one for the user first: then that one is returned."""
    held = s3_identity(connection, identity.user)
    if held is not None:
        return held
    connection.execute(
        insert(s3_identities).values(
            user=identity.user,
            iam_user=identity.iam_user,
            access_key=identity.access_key,
            secret_key=identity.secret_key,
            created_at=now,
        )
    )
    return identity


def forget_s3_identity(connection: Connection, user: str) -> None:
    connection.execute(delete(s3_identities).where(s3_identities.c.user == user))
