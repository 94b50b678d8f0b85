"""Integration fixtures against real services."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from sluice.db.database import Database
from sluice.errors import BucketNotFound
from sluice.storage.s3 import S3Storage
from tests.seaweed import SeaweedFS

# --- a migrated database: SQLite and PostgreSQL (the `database_url` parameters) ------------------


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.close()


# --- SeaweedFS / S3: one server for the whole session, a fresh bucket per test ---------------------


class S3Bucket(NamedTuple):
    storage: S3Storage
    bucket: str


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    weed = SeaweedFS()
    weed.start()
    try:
        yield weed
    finally:
        weed.stop()


@pytest.fixture
def s3_storage(seaweedfs: SeaweedFS) -> Iterator[S3Bucket]:
    """An S3Storage on the session's SeaweedFS and an empty bucket, created for this test alone."""
    storage = S3Storage.from_url(seaweedfs.storage_url)
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    asyncio.run(storage.create_bucket(bucket))
    yield S3Bucket(storage, bucket)
    with contextlib.suppress(BucketNotFound):
        asyncio.run(storage.delete_bucket(bucket, force=True))


# --- end of SeaweedFS / S3 fixtures -----------------------------------------------------------------
