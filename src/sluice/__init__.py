"""Sluice: serverless AI inference and pipelines, wire-compatible with OSCAR.

The public front door: the client, the service model and its parser, and the exceptions.
Everything else is internal and may change.
"""

from sluice.client import AsyncClient, Client, Job, Record, ServerError, Service, Table
from sluice.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvocationFailed,
    InvocationTimeout,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    SluiceError,
    SpecError,
    Unauthorized,
)
from sluice.spec import ServiceSpec, StorageIO, parse_fdl, parse_service

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "InvocationFailed",
    "InvocationTimeout",
    "Job",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "Record",
    "ServerError",
    "Service",
    "ServiceSpec",
    "SluiceError",
    "SpecError",
    "StorageIO",
    "Table",
    "Unauthorized",
    "__version__",
    "parse_fdl",
    "parse_service",
]
