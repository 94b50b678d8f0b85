"""A lean load generator for the upload burst: keep-alive HTTP/1.1 connections on uvloop, each
request written as ready-made bytes, each answer parsed by httptools (the parser uvicorn uses).

On a 2-core machine the load generator shares the cores with what it measures. aiohttp's client
spent about 0.4 ms of CPU per upload (0.7 ms in a burst), a tenth of the whole run's CPU; this
one spends a small fraction of that (`async_jobs.py` prints it), so the figures say more about
the platform and less about the client. `--client aiohttp` keeps the old one for comparison.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httptools


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer's status awaited."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[int] | None = None
        self._transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:  # httptools' callback: an answer has been read whole
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(self._parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc or ConnectionError("the server closed the connection"))

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def send(self, request: bytes) -> int:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._answer

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def upload_burst(endpoint: str, authorization: str, keys: list[str], concurrency: int = 16) -> None:
    """PUT `file <i>\\n` to `/v1/buckets/bench/objects/<keys[i]>` for every key, `concurrency` at
    a time on as many connections; raises if one is not answered 201."""
    url = urlsplit(endpoint)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    head = f"Host: {host}:{port}\r\nAuthorization: {authorization}\r\n"
    requests = []
    for index, key in enumerate(keys):
        body = f"file {index}\n".encode()
        line = f"PUT /v1/buckets/bench/objects/{key} HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n"
        requests.append(line.encode() + body)
    loop = asyncio.get_running_loop()

    async def connect() -> _Connection:
        return (await loop.create_connection(_Connection, host, port))[1]

    upcoming = iter(range(len(requests)))

    async def worker() -> None:
        connection = await connect()
        try:
            for index in upcoming:  # shared: each request goes to whichever connection is free
                if not connection.open:  # the server closed it between two requests: a new one
                    connection = await connect()
                # A connection lost during a request fails the run: sent again, the upload could
                # make a second job.
                status = await connection.send(requests[index])
                if status != 201:
                    raise RuntimeError(f"upload of {keys[index]} answered {status}")
        finally:
            connection.close()

    async with asyncio.TaskGroup() as workers:  # the first failure cancels the others
        for _ in range(min(concurrency, len(keys))):
            workers.create_task(worker())
