"""The tables. Times are UNIX seconds (floats): cheap to compare in the queue's hot statements."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

services = Table(
    "services",
    metadata,
    Column("name", String(39), primary_key=True),
    Column("definition", Text, nullable=False),  # ServiceSpec as JSON, script and secrets included
    Column("token", String(64), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("service", String(39), nullable=False),
    Column("status", String(16), nullable=False),  # queued|running|succeeded|failed|cancelled
    Column("bucket", String(255)),
    Column("key", Text),
    Column("etag", String(255)),
    Column("event", Text),  # the event JSON handed to the script as $EVENT
    Column("payload", LargeBinary),  # a /job body that is not a storage event: the input itself
    Column("attempts", Integer, nullable=False, server_default="0"),  # claims, crashes included
    Column("failures", Integer, nullable=False, server_default="0"),  # failed runs, against max_retries
    Column("max_retries", Integer, nullable=False, server_default="0"),
    Column("run_after", Float, nullable=False),
    Column("lease_expires", Float),
    Column("worker", String(64)),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("exit_code", Integer),
    Column("log", Text),
    Column("error", Text),
    # The claim reads only queued rows in run_after order: a partial index keeps that scan tiny.
    Index(
        "ix_jobs_claim",
        "run_after",
        postgresql_where=text("status = 'queued'"),
        sqlite_where=text("status = 'queued'"),
    ),
    Index("ix_jobs_service_created", "service", "created_at"),
    Index("ix_jobs_status_lease", "status", "lease_expires"),
)

# The idempotency ledger: one row per (service, object version) ever enqueued. Kept when jobs are
# deleted, so the reconciler never re-runs an object whose job record was cleaned up.
seen_objects = Table(
    "seen_objects",
    metadata,
    Column("service", String(39), nullable=False),
    Column("bucket", String(255), nullable=False),
    Column("key", String(1024), nullable=False),
    Column("etag", String(255), nullable=False),
    Column("job_id", String(36), nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("service", "bucket", "key", "etag"),
)

users = Table(
    "users",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("password_hash", String(255), nullable=False),  # scrypt, salted (sluice.api.passwords)
    Column("created_at", Float, nullable=False),
)

# Who owns a bucket on the platform's default store, and who else may use it (as in OSCAR).
buckets = Table(
    "buckets",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("visibility", String(16), nullable=False),  # private|public|restricted
    Column("allowed_users", Text, nullable=False),  # JSON list of user names
    Column("created_at", Float, nullable=False),
)

# S3 keys issued to a user through the store's IAM API, limited to the buckets they may use.
s3_identities = Table(
    "s3_identities",
    metadata,
    Column("user", String(255), primary_key=True),
    Column("iam_user", String(64), nullable=False),
    Column("access_key", String(128), nullable=False),
    Column("secret_key", String(255), nullable=False),  # the store needs it in clear to sign
    Column("created_at", Float, nullable=False),
)
