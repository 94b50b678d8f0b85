"""Per-user S3 credentials issued through the store's IAM API.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "s3_identities",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("iam_user", sa.String(64), nullable=False),
        sa.Column("access_key", sa.String(128), nullable=False),
        sa.Column("secret_key", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("s3_identities")
