"""Statements on the services table. A service's definition is stored whole, as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update

from sluice.db.schema import services
from sluice.spec.service import ServiceSpec


@dataclass(frozen=True)
class ServiceRecord:
    spec: ServiceSpec
    token: str
    owner: str
    created_at: float
    updated_at: float


def _record(row: object) -> ServiceRecord:
    m = row._mapping  # type: ignore[attr-defined]
    spec = ServiceSpec.model_validate(json.loads(m["definition"]))
    return ServiceRecord(spec, m["token"], m["owner"], m["created_at"], m["updated_at"])


def get(connection: Connection, name: str) -> ServiceRecord | None:
    row = connection.execute(select(services).where(services.c.name == name)).first()
    return _record(row) if row else None


def list_all(connection: Connection) -> list[ServiceRecord]:
    return [_record(row) for row in connection.execute(select(services).order_by(services.c.name))]


def create(connection: Connection, spec: ServiceSpec, token: str, owner: str, now: float) -> None:
    connection.execute(
        insert(services).values(
            name=spec.name,
            definition=_definition(spec),
            token=token,
            owner=owner,
            created_at=now,
            updated_at=now,
        )
    )


def replace(connection: Connection, spec: ServiceSpec, now: float) -> bool:
    result = connection.execute(
        update(services)
        .where(services.c.name == spec.name)
        .values(definition=_definition(spec), updated_at=now)
    )
    return result.rowcount == 1


def remove(connection: Connection, name: str) -> bool:
    return connection.execute(delete(services).where(services.c.name == name)).rowcount == 1


def _definition(spec: ServiceSpec) -> str:
    # What the user wrote, not the defaults filled in: a default (say, memory) must stay
    # distinguishable from a value given. token and owner live in their own columns.
    return spec.model_dump_json(exclude_unset=True, exclude_none=True, exclude={"token", "owner"})
