"""Service definitions: the OSCAR FDL and its validation."""

from sluice.spec.fdl import parse_fdl, parse_service
from sluice.spec.service import Environment, ServiceSpec, StorageIO, Synchronous

__all__ = ["Environment", "ServiceSpec", "StorageIO", "Synchronous", "parse_fdl", "parse_service"]
