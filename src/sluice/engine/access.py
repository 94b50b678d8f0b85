"""Who may do what: OSCAR's ownership and visibility rules as pure functions.

- The admin may do everything.
- A service's or bucket's owner may read, use and change it.
- `public`: every authenticated user may see and use it (invoke the service, read and write
  its buckets); `restricted`: the users in `allowed_users` may. Only the owner or the admin
  changes, deletes, or reads the jobs and logs of a service.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sluice.db.accounts import BucketRecord
from sluice.db.services import ServiceRecord


@dataclass(frozen=True)
class Caller:
    name: str
    is_admin: bool = False
    groups: frozenset[str] = field(default_factory=frozenset)


def _shared_with(caller: Caller, visibility: str, allowed: Iterable[str]) -> bool:
    if visibility == "public":
        return True
    return visibility == "restricted" and caller.name in allowed


def can_use_service(caller: Caller, service: ServiceRecord) -> bool:
    """See and invoke."""
    spec = service.spec
    return (
        caller.is_admin
        or caller.name == service.owner
        or _shared_with(caller, spec.visibility, spec.allowed_users)
    )


def can_manage_service(caller: Caller, service: ServiceRecord) -> bool:
    """Change, delete, and read its jobs and logs."""
    return caller.is_admin or caller.name == service.owner


def can_use_bucket(caller: Caller, bucket: BucketRecord | None) -> bool:
    """Read and write objects. A bucket nobody claimed (made outside Sluice) is the admin's."""
    if caller.is_admin:
        return True
    if bucket is None:
        return False
    return caller.name == bucket.owner or _shared_with(caller, bucket.visibility, bucket.allowed_users)


def can_manage_bucket(caller: Caller, bucket: BucketRecord | None) -> bool:
    """Delete it, change who may use it."""
    return caller.is_admin or (bucket is not None and caller.name == bucket.owner)
