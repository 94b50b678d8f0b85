"""Initial tables: services, jobs, seen_objects.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("name", sa.String(39), primary_key=True),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("service", sa.String(39), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("bucket", sa.String(255)),
        sa.Column("key", sa.Text),
        sa.Column("etag", sa.String(255)),
        sa.Column("event", sa.Text),
        sa.Column("payload", sa.LargeBinary),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_retries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("run_after", sa.Float, nullable=False),
        sa.Column("lease_expires", sa.Float),
        sa.Column("worker", sa.String(64)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("exit_code", sa.Integer),
        sa.Column("log", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["run_after"],
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
    op.create_index("ix_jobs_service_created", "jobs", ["service", "created_at"])
    op.create_index("ix_jobs_status_lease", "jobs", ["status", "lease_expires"])
    op.create_table(
        "seen_objects",
        sa.Column("service", sa.String(39), nullable=False),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("etag", sa.String(255), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("service", "bucket", "key", "etag"),
    )


def downgrade() -> None:
    op.drop_table("seen_objects")
    op.drop_table("jobs")
    op.drop_table("services")
