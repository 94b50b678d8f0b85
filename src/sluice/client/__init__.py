"""The Python clients."""

from sluice.client.client import AsyncClient, Client, ServerError

__all__ = ["AsyncClient", "Client", "ServerError"]
