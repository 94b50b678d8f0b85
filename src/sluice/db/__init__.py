"""Metadata storage: SQLAlchemy Core on SQLite (embedded) or PostgreSQL."""
