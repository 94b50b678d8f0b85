"""A Python client for a Sluice (or OSCAR) server, over httpx.

from sluice.client import Client
with Client("http://127.0.0.1:8080", ("oscar", "password")) as client:
    client.apply("examples/digits/digits.yaml")
    client.put_file("digits/input", "examples/digits/samples/digit-0-0.csv")
    print(client.jobs("digits"))
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from sluice.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    SluiceError,
    Unauthorized,
)
from sluice.spec.fdl import parse_fdl
from sluice.spec.service import ServiceSpec

STATUS_ERRORS: dict[int, type[SluiceError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
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
    raise exc


def split_target(target: str) -> tuple[str, str]:
    """'bucket/folder/name' -> ('bucket', 'folder/name')."""
    bucket, _, rest = target.strip("/").partition("/")
    return bucket, rest


class Client:
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
        self._http = httpx.Client(base_url=self.endpoint, auth=auth, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise SluiceError(f"cannot reach {self.endpoint}: {exc}") from None
        _raise_for(response)
        return response

    # services

    def services(self) -> list[dict[str, Any]]:
        return self._request("GET", "/system/services").json()

    def service(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/system/services/{name}").json()

    def apply_spec(self, spec: ServiceSpec) -> str:
        """Create the service, or update it if it exists. Returns 'created' or 'updated'."""
        body = spec.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        try:
            self._request("POST", "/system/services", json=body)
            return "created"
        except Conflict:
            self._request("PUT", "/system/services", json=body)
            return "updated"

    def apply(self, fdl_path: str | Path) -> list[tuple[str, str]]:
        path = Path(fdl_path)
        specs = parse_fdl(path.read_text(), base_dir=path.parent, source=str(path))
        return [(spec.name, self.apply_spec(spec)) for spec in specs]

    def delete_service(self, name: str, purge: bool = False) -> None:
        self._request("DELETE", f"/system/services/{name}", params={"purge": "true"} if purge else None)

    # files

    def put_file(self, target: str, path: str | Path, key: str | None = None) -> dict[str, Any]:
        """Upload `path` into `target` ('bucket/folder'); the key is folder/<file name> unless given."""
        path = Path(path)
        bucket, folder = split_target(target)
        key = key or (f"{folder}/{path.name}" if folder else path.name)
        with path.open("rb") as handle:
            return self._request("PUT", f"/v1/buckets/{bucket}/objects/{quote(key)}", content=handle).json()

    def get_file(self, bucket: str, key: str, dest: str | Path) -> Path:
        dest = Path(dest)
        with dest.open("wb") as handle:
            self.copy_to(bucket, key, handle)
        return dest

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self._request("GET", f"/v1/buckets/{bucket}/objects/{quote(key)}").content

    def copy_to(self, bucket: str, key: str, handle: BinaryIO) -> None:
        """Stream an object into an open binary file."""
        try:
            with self._http.stream("GET", f"/v1/buckets/{bucket}/objects/{quote(key)}") as response:
                if not response.is_success:
                    response.read()
                    _raise_for(response)
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        except httpx.TransportError as exc:
            raise SluiceError(f"cannot reach {self.endpoint}: {exc}") from None

    def list_objects(self, bucket: str, prefix: str = "", folders: bool = False) -> Iterator[dict[str, Any]]:
        """Every object under `prefix` (all pages); `folders` adds empty folders as `name/` entries."""
        page: str | None = None
        while True:
            params: dict[str, Any] = {"prefix": prefix, **({"page": page} if page else {})}
            if folders:
                params["folders"] = "true"
            data = self._request("GET", f"/v1/buckets/{bucket}/objects", params=params).json()
            yield from data["objects"]
            page = data.get("next_page")
            if not page:
                return

    def buckets(self) -> list[dict[str, Any]]:
        return self._request("GET", "/system/buckets").json()

    # jobs

    def submit(self, service: str, body: bytes | str, token: str | None = None) -> dict[str, Any]:
        token = token or self.service(service)["token"]
        return self._request(
            "POST", f"/job/{service}", content=body, headers={"Authorization": f"Bearer {token}"}
        ).json()

    def jobs(self, service: str, status: str | None = None, limit: int = 1000) -> Iterator[dict[str, Any]]:
        page: str | None = None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if status:
                params["status"] = status
            if page:
                params["page"] = page
            data = self._request("GET", f"/v1/services/{service}/jobs", params=params).json()
            yield from data["jobs"]
            page = data.get("next_page")
            if not page:
                return

    def job(self, service: str, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/services/{service}/jobs/{job_id}").json()

    def failed_jobs(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/jobs/failed").json()["jobs"]

    def log(self, service: str, job_id: str) -> str:
        return self._request("GET", f"/system/logs/{service}/{job_id}").text

    def cancel(self, service: str, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/services/{service}/jobs/{job_id}/cancel").json()

    def requeue(self, service: str, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/services/{service}/jobs/{job_id}/requeue").json()

    def delete_jobs(self, service: str, everything: bool = False) -> None:
        self._request("DELETE", f"/system/logs/{service}", params={"all": "true"} if everything else None)

    # users (admin)

    def users(self) -> list[str]:
        return self._request("GET", "/v1/users").json()["users"]

    def add_user(self, name: str, password: str) -> None:
        self._request("POST", "/v1/users", json={"name": name, "password": password})

    def set_password(self, name: str, password: str) -> None:
        self._request("PUT", f"/v1/users/{name}", json={"password": password})

    def remove_user(self, name: str) -> None:
        self._request("DELETE", f"/v1/users/{name}")

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/system/status").json()
