"""The Python clients, and the typed results they return."""

from sluice.client.client import AsyncClient, Client, ServerError
from sluice.client.results import Bucket, Job, Record, Service, StoredObject, Table

__all__ = [
    "AsyncClient",
    "Bucket",
    "Client",
    "Job",
    "Record",
    "ServerError",
    "Service",
    "StoredObject",
    "Table",
]
