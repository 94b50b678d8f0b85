"""Signed URLs for objects the platform serves itself (the local store): HMAC over op, object, expiry."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote

from sluice.errors import Forbidden

KEY_FILE = "signing-key"


def load_key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


class UrlSigner:
    def __init__(self, key: bytes, base_url: str) -> None:
        self._key = key
        self._base_url = base_url

    def _signature(self, operation: str, bucket: str, key: str, expires: int) -> str:
        message = f"{operation}\n{bucket}\n{key}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def url(self, operation: str, bucket: str, key: str, expires_in: int) -> tuple[str, int]:
        expires = int(time.time()) + expires_in
        signature = self._signature(operation, bucket, key, expires)
        path = f"/v1/presigned/{quote(bucket)}/{quote(key)}"
        return f"{self._base_url}{path}?op={operation}&expires={expires}&signature={signature}", expires

    def verify(self, operation: str, bucket: str, key: str, expires: int, signature: str) -> None:
        if expires < time.time():
            raise Forbidden("this presigned URL has expired")
        expected = self._signature(operation, bucket, key, expires)
        if not hmac.compare_digest(expected, signature):
            raise Forbidden("invalid signature for this presigned URL")
