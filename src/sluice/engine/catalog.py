"""Service definitions and bucket records as the engine sees them, cached briefly: a job must not
pay a query and a validation for its service's definition, nor an upload one for its bucket's
sharing. Changes made through this server are seen at once (they invalidate); another API server's
at most `ttl` seconds late."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sluice.db import accounts
from sluice.db import services as service_sql
from sluice.db.accounts import BucketRecord
from sluice.db.database import Database
from sluice.db.services import ServiceRecord

MAX_ENTRIES = 10_000
Value = TypeVar("Value")


class _Recent(Generic[Value]):
    """Values by name, each reused for `ttl` seconds after it was loaded."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.entries: dict[str, tuple[float, Value]] = {}
        self._changes = 0  # invalidations so far: a load they overtook is not kept

    async def get(self, name: str, load: Callable[[], Awaitable[Value]]) -> Value:
        hit = self.entries.get(name)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        changes = self._changes
        value = await load()
        if changes == self._changes:  # no change was made here while it loaded
            if len(self.entries) >= MAX_ENTRIES:  # names that do not exist must not grow it for ever
                self.entries.clear()
            self.entries[name] = (now, value)
        return value

    def invalidate(self, name: str) -> None:
        self._changes += 1
        self.entries.pop(name, None)


class ServiceCatalog:
    def __init__(self, db: Database, ttl: float = 2.0) -> None:
        self._db = db
        self._ttl = ttl  # bounds how stale another API server's update can look here
        self._recent: _Recent[ServiceRecord | None] = _Recent(ttl)
        self._all: tuple[float, list[ServiceRecord]] | None = None

    async def get(self, name: str) -> ServiceRecord | None:
        return await self._recent.get(name, lambda: self._db.call(service_sql.get, name))

    async def all(self) -> list[ServiceRecord]:
        records = await self._db.call(service_sql.list_all)
        now = time.monotonic()
        for record in records:
            self._recent.entries[record.spec.name] = (now, record)
        return records

    async def all_cached(self) -> list[ServiceRecord]:
        """Every service, refreshed at most every `ttl` seconds: consulted on each upload."""
        if self._all is None or time.monotonic() - self._all[0] >= self._ttl:
            self._all = (time.monotonic(), await self.all())
        return self._all[1]

    def invalidate(self, name: str) -> None:
        self._recent.invalidate(name)
        self._all = None


class BucketCatalog:
    def __init__(self, db: Database, ttl: float = 2.0) -> None:
        self._db = db
        self._recent: _Recent[BucketRecord | None] = _Recent(ttl)

    async def get(self, name: str) -> BucketRecord | None:
        return await self._recent.get(name, lambda: self._db.call(accounts.get_bucket, name))

    def invalidate(self, name: str) -> None:
        self._recent.invalidate(name)
