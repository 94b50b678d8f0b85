"""The Python client."""

from sluice.client.client import Client, ServerError

__all__ = ["Client", "ServerError"]
