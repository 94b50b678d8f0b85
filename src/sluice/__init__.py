"""Sluice: serverless AI inference and pipelines, wire-compatible with OSCAR.

The public front door: the client, the service model and its parser, and the exceptions.
Everything else is internal and may change.
"""

import importlib

# Imported on first use: a replica process or `sluice --help` must not pay for the client's
# and pydantic's imports (hundreds of milliseconds) when it needs none of them.
_EXPORTS = {
    "AsyncClient": "sluice.client",
    "Client": "sluice.client",
    "Conflict": "sluice.errors",
    "Forbidden": "sluice.errors",
    "InvalidInput": "sluice.errors",
    "InvocationFailed": "sluice.errors",
    "InvocationTimeout": "sluice.errors",
    "Job": "sluice.client",
    "NotFound": "sluice.errors",
    "Overloaded": "sluice.errors",
    "PayloadTooLarge": "sluice.errors",
    "Record": "sluice.client",
    "ServerError": "sluice.client",
    "Service": "sluice.client",
    "ServiceSpec": "sluice.spec",
    "SluiceError": "sluice.errors",
    "SpecError": "sluice.errors",
    "StorageIO": "sluice.spec",
    "Table": "sluice.client",
    "Unauthorized": "sluice.errors",
    "parse_fdl": "sluice.spec",
    "parse_service": "sluice.spec",
}

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


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sluice' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
