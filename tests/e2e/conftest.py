"""One real `sluice serve` process per test module, on a free 127.0.0.1 port with its own data dir."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server import ServerProcess

# Four job slots so a test's long-running job never starves the next one; short retry backoff.
SERVER_ENV = {"SLUICE_WORKERS": "4", "SLUICE_RETRY_BASE_DELAY": "0.2"}


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A module may set its own SERVER_ENV (short leases, no backoff, ...) instead of this one."""
    env = getattr(request.module, "SERVER_ENV", SERVER_ENV)
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", env=env).start()
    try:
        yield process
    finally:
        process.stop()
