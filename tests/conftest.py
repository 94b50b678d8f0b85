"""Session-wide real services shared by the tests: one PostgreSQL cluster (started on first use)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PostgresCluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A fresh, empty database of each kind: storage-independent tests run on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sluice.db'}"
    return request.getfixturevalue("postgres").new_database()
