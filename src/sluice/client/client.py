"""Python clients for a Sluice (or OSCAR) server, over httpx: `AsyncClient` and its blocking twin
`Client`, which works in scripts and in Jupyter alike.

    from sluice import Client
    with Client("http://127.0.0.1:8080", ("oscar", "password")) as client:
        client.apply("examples/digits/digits.yaml")
        client.put_file("digits/input", "examples/digits/samples/digit-1579-0.csv")
        print(list(client.jobs("digits")))

    async with AsyncClient("http://127.0.0.1:8080", token=oidc_token) as client:
        print(await client.services())
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import httpx

from sluice.client.results import Bucket, Job, Record, Service, StoredObject, Table, wrap_all
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
    Unauthorized,
)
from sluice.spec.fdl import parse_fdl
from sluice.spec.service import ServiceSpec

T = TypeVar("T")

STATUS_ERRORS: dict[int, type[SluiceError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
    502: InvocationFailed,
    503: Overloaded,
    504: InvocationTimeout,
}


class ServerError(SluiceError):
    """The server answered with an error it did not classify (5xx)."""


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    message = response.text.strip() or response.reason_phrase
    error = STATUS_ERRORS.get(response.status_code)
    if error is None:
        raise ServerError(f"{response.status_code} {message}")
    exc = error.__new__(error)
    SluiceError.__init__(exc, message)
    if isinstance(exc, Overloaded):
        exc.retry_after = int(response.headers.get("retry-after", "1") or 1)
    raise exc


def split_target(target: str) -> tuple[str, str]:
    """'bucket/folder/name' -> ('bucket', 'folder/name')."""
    bucket, _, rest = target.strip("/").partition("/")
    return bucket, rest


class AsyncClient:
    """The client, written once, asynchronously; `Client` is its blocking twin, derived from it."""

    def __init__(
        self,
        endpoint: str,
        auth: tuple[str, str] | None = None,
        *,
        token: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        """`auth` is (user, password) for HTTP Basic; `token` an OIDC bearer token instead."""
        self.endpoint = endpoint.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._http = httpx.AsyncClient(base_url=self.endpoint, auth=auth, headers=headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise SluiceError(f"no answer from {self.endpoint} in time ({method} {path})") from None
        except httpx.TransportError as exc:
            raise SluiceError(f"cannot reach {self.endpoint}: {exc or type(exc).__name__}") from None
        _raise_for(response)
        return response

    # services

    async def services(self) -> Table[Service]:
        return wrap_all(Service, (await self._request("GET", "/system/services")).json())

    async def service(self, name: str) -> Service:
        return Service((await self._request("GET", f"/system/services/{name}")).json())

    async def apply_spec(self, spec: ServiceSpec) -> str:
        """Create the service, or update it if it exists. Returns 'created' or 'updated'."""
        body = spec.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        try:
            await self._request("POST", "/system/services", json=body)
            return "created"
        except Conflict:
            await self._request("PUT", "/system/services", json=body)
            return "updated"

    async def apply(self, fdl_path: str | Path) -> list[tuple[str, str]]:
        path = Path(fdl_path)
        specs = parse_fdl(path.read_text(), base_dir=path.parent, source=str(path))
        return [(spec.name, await self.apply_spec(spec)) for spec in specs]

    async def replicas(self, name: str) -> Record:
        """A handler service's replicas: state, load, queue, cold starts, last error."""
        return Record((await self._request("GET", f"/v1/services/{name}/replicas")).json())

    async def exposed(self, name: str) -> Record:
        """An exposed service's copies: healthy, requests in progress, scaling decisions."""
        return Record((await self._request("GET", f"/v1/services/{name}/exposed")).json())

    async def delete_service(self, name: str, purge: bool = False) -> None:
        await self._request("DELETE", f"/system/services/{name}", params={"purge": "true"} if purge else None)

    # files

    async def put_file(self, target: str, path: str | Path, key: str | None = None) -> Record:
        """Upload `path` into `target` ('bucket/folder'); the key is folder/<file name> unless given."""
        path = Path(path)
        bucket, folder = split_target(target)
        key = key or (f"{folder}/{path.name}" if folder else path.name)
        response = await self._request(
            "PUT", f"/v1/buckets/{bucket}/objects/{quote(key)}", content=_chunks(path)
        )
        return Record(response.json())

    async def get_file(self, bucket: str, key: str, dest: str | Path) -> Path:
        dest = Path(dest)
        with dest.open("wb") as handle:
            await self.copy_to(bucket, key, handle)
        return dest

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        return (await self._request("GET", f"/v1/buckets/{bucket}/objects/{quote(key)}")).content

    async def copy_to(self, bucket: str, key: str, handle: BinaryIO) -> None:
        """Stream an object into an open binary file."""
        try:
            async with self._http.stream("GET", f"/v1/buckets/{bucket}/objects/{quote(key)}") as response:
                if not response.is_success:
                    await response.aread()
                    _raise_for(response)
                async for chunk in response.aiter_bytes():
                    handle.write(chunk)
        except httpx.TransportError as exc:
            raise SluiceError(f"cannot reach {self.endpoint}: {exc}") from None

    async def list_objects(
        self, bucket: str, prefix: str = "", folders: bool = False
    ) -> AsyncIterator[StoredObject]:
        """Every object under `prefix` (all pages); `folders` adds empty folders as `name/` entries."""
        page: str | None = None
        while True:
            params: dict[str, Any] = {"prefix": prefix, **({"page": page} if page else {})}
            if folders:
                params["folders"] = "true"
            data = (await self._request("GET", f"/v1/buckets/{bucket}/objects", params=params)).json()
            for item in data["objects"]:
                yield StoredObject(item)
            page = data.get("next_page")
            if not page:
                return

    async def buckets(self) -> Table[Bucket]:
        return wrap_all(Bucket, (await self._request("GET", "/system/buckets")).json())

    # jobs

    async def submit(self, service: str, body: bytes | str, token: str | None = None) -> Record:
        """Queue one job on `body` (`POST /job`); the answer holds its `job_id`."""
        token = token or (await self.service(service))["token"]
        response = await self._request(
            "POST", f"/job/{service}", content=body, headers={"Authorization": f"Bearer {token}"}
        )
        return Record(response.json())

    async def run(
        self,
        service: str,
        data: bytes | str | Path,
        *,
        content_type: str = "application/octet-stream",
        token: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Call the service synchronously on `data` (bytes, text, or a file's path) and return its
        output as raw bytes: one output file's content, a zip of several, or the script's output."""
        if isinstance(data, Path):
            data = data.read_bytes()
        elif isinstance(data, str):
            data = data.encode()
        token = token or (await self.service(service))["token"]
        response = await self._request(
            "POST",
            f"/run/{service}",
            content=data,
            params={"raw": "true"},
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
            timeout=timeout if timeout is not None else self._http.timeout,
        )
        return response.content

    async def jobs(self, service: str, status: str | None = None, limit: int = 1000) -> AsyncIterator[Job]:
        page: str | None = None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if status:
                params["status"] = status
            if page:
                params["page"] = page
            data = (await self._request("GET", f"/v1/services/{service}/jobs", params=params)).json()
            for item in data["jobs"]:
                yield Job(item)
            page = data.get("next_page")
            if not page:
                return

    async def job(self, service: str, job_id: str) -> Job:
        return Job((await self._request("GET", f"/v1/services/{service}/jobs/{job_id}")).json())

    async def failed_jobs(self) -> Table[Job]:
        return wrap_all(Job, (await self._request("GET", "/v1/jobs/failed")).json()["jobs"])

    async def log(self, service: str, job_id: str) -> str:
        return (await self._request("GET", f"/system/logs/{service}/{job_id}")).text

    async def cancel(self, service: str, job_id: str) -> Job:
        return Job((await self._request("POST", f"/v1/services/{service}/jobs/{job_id}/cancel")).json())

    async def requeue(self, service: str, job_id: str) -> Job:
        return Job((await self._request("POST", f"/v1/services/{service}/jobs/{job_id}/requeue")).json())

    async def delete_jobs(self, service: str, everything: bool = False) -> None:
        await self._request(
            "DELETE", f"/system/logs/{service}", params={"all": "true"} if everything else None
        )

    # users (admin)

    async def users(self) -> list[str]:
        return (await self._request("GET", "/v1/users")).json()["users"]

    async def add_user(self, name: str, password: str) -> None:
        await self._request("POST", "/v1/users", json={"name": name, "password": password})

    async def set_password(self, name: str, password: str) -> None:
        await self._request("PUT", f"/v1/users/{name}", json={"password": password})

    async def remove_user(self, name: str) -> None:
        await self._request("DELETE", f"/v1/users/{name}")

    async def status(self) -> Record:
        return Record((await self._request("GET", "/system/status")).json())


async def _chunks(path: Path, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """A file as an async stream of chunks, so an upload never holds the whole file in memory."""
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk


class _LoopThread:
    """An event loop in a daemon thread, so blocking code (and Jupyter, whose own loop is busy)
    can drive the async client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sluice-client", daemon=True)
        self._thread.start()

    def run(self, awaitable: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(_awaited(awaitable), self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class Client:
    """The blocking client: every public method of `AsyncClient`, run to completion.

    Its methods are made from AsyncClient's (see `_blocking`), never written twice.

        with Client("http://127.0.0.1:8080", ("oscar", "password")) as client:
            client.apply("examples/digits/digits.yaml")
            for job in client.jobs("digits"):
                print(job["id"], job["status"])
    """

    def __init__(
        self,
        endpoint: str,
        auth: tuple[str, str] | None = None,
        *,
        token: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._loop = _LoopThread()
        self._async = AsyncClient(endpoint, auth, token=token, timeout=timeout)
        self.endpoint = self._async.endpoint

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self._async.close())
        self._loop.stop()


def _blocking(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        def iterate(self: Client, *args: Any, **kwargs: Any) -> Iterator[Any]:
            stream = getattr(self._async, name)(*args, **kwargs)
            try:
                while True:
                    try:
                        yield self._loop.run(stream.__anext__())
                    except StopAsyncIteration:
                        return
            finally:  # also when the caller stops early: close the stream on its own loop
                self._loop.run(stream.aclose())

        return iterate

    @functools.wraps(method)
    def call(self: Client, *args: Any, **kwargs: Any) -> Any:
        return self._loop.run(getattr(self._async, name)(*args, **kwargs))

    return call


for _name, _method in inspect.getmembers(AsyncClient, inspect.isfunction):
    if not _name.startswith("_") and _name != "close":
        setattr(Client, _name, _blocking(_name, _method))
