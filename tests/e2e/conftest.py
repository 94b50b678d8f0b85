"""One real `sluice serve` process per test module, on a free 127.0.0.1 port with its own data dir."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server import ServerProcess

# Four job slots so a test's long-running job never starves the next one; short retry backoff.
SERVER_ENV = {"SLUICE_WORKERS": "4", "SLUICE_RETRY_BASE_DELAY": "0.2"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", env=SERVER_ENV).start()
    try:
        yield process
    finally:
        process.stop()
