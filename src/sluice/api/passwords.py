"""Salted password hashes (scrypt, from the standard library) and a short-lived cache of
successful checks, since a deliberate ~50 ms per request would be the API's slowest step."""

from __future__ import annotations

import hashlib
import hmac
import os
import time

N, R, P = 2**14, 8, 1
CACHE_SECONDS = 60.0


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(candidate, bytes.fromhex(digest))


class VerifiedCache:
    """Remembers (user, password) pairs that checked out, keyed by a keyed hash, never the password."""

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._until: dict[tuple[str, bytes], float] = {}

    def _fingerprint(self, user: str, password: str, stored: str) -> tuple[str, bytes]:
        # The stored hash is part of the key: a changed password invalidates the entry.
        return user, hmac.new(self._key, f"{password}\0{stored}".encode(), hashlib.sha256).digest()

    def verified(self, user: str, password: str, stored: str) -> bool:
        key = self._fingerprint(user, password, stored)
        if self._until.get(key, 0.0) > time.monotonic():
            return True
        if not check_password(password, stored):
            return False
        if len(self._until) > 10_000:
            self._until.clear()
        self._until[key] = time.monotonic() + CACHE_SECONDS
        return True
