"""Sluice's exceptions, one tree for the whole package.

    SluiceError
    ├── InvalidInput            bad user input: a 4xx that names the problem (400)
    │   ├── SpecError           a service definition that does not validate
    │   └── InvalidObjectKey    `..`, absolute paths, NUL in an object key
    ├── PayloadTooLarge         a body or upload over the configured limit (413)
    ├── Unauthorized            missing or wrong credentials (401)
    ├── Forbidden               known caller, not allowed (403)
    ├── NotFound                (404)
    │   ├── ServiceNotFound
    │   ├── JobNotFound
    │   ├── BucketNotFound
    │   └── ObjectNotFound
    ├── Conflict                already exists, or not in a state that allows it (409)
    ├── StorageError            a storage backend failed (502)
    ├── ExecutorError           an executor could not run an invocation
    ├── InvocationFailed        a synchronous invocation's script failed (502)
    ├── InvocationTimeout       a synchronous invocation ran out of time (504)
    └── Overloaded              too many requests waiting for a service (503, Retry-After)

Backends translate their drivers' errors into these at their edge; the API maps each class to one
HTTP status in `sluice.api.errors`; nothing compares error strings.
"""

from __future__ import annotations


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(SluiceError):
    status_code = 400


class SpecError(InvalidInput):
    """A service definition that does not validate; `problems` lists one line per field."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(problems))
        self.problems = problems


class InvalidObjectKey(InvalidInput):
    pass


class PayloadTooLarge(SluiceError):
    status_code = 413


class Unauthorized(SluiceError):
    status_code = 401


class Forbidden(SluiceError):
    status_code = 403


class NotFound(SluiceError):
    status_code = 404


class ServiceNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"service '{name}' not found")


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job '{job_id}' not found")


class BucketNotFound(NotFound):
    def __init__(self, bucket: str) -> None:
        super().__init__(f"bucket '{bucket}' not found")


class ObjectNotFound(NotFound):
    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"object '{key}' not found in bucket '{bucket}'")


class Conflict(SluiceError):
    status_code = 409


class StorageError(SluiceError):
    status_code = 502


class ExecutorError(SluiceError):
    status_code = 500


class InvocationFailed(SluiceError):
    status_code = 502


class InvocationTimeout(SluiceError):
    status_code = 504


class Overloaded(SluiceError):
    status_code = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
