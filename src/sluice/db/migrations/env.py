"""Alembic environment: run against the connection Sluice hands over (see sluice.db.database)."""

from __future__ import annotations

from alembic import context

from sluice.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
