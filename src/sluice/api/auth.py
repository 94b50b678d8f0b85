"""Who is calling: HTTP Basic for the admin on /system/*, a service's token on /job and /run.

Every secret comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from fastapi import Request

from sluice.errors import Unauthorized

ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    name: str
    is_admin: bool


@dataclass(frozen=True)
class Credentials:
    admin_user: str
    admin_password: str

    def basic(self, header: str | None) -> Caller | None:
        if not header or not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials") from None
        user_ok = hmac.compare_digest(user.encode(), self.admin_user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.admin_password.encode())
        if user_ok and password_ok:
            return Caller(user, is_admin=True)
        raise Unauthorized("wrong user name or password")


def bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def require_admin(request: Request) -> Caller:
    credentials: Credentials = request.app.state.credentials
    caller = credentials.basic(request.headers.get("authorization"))
    if caller is None:
        raise Unauthorized("credentials required: HTTP Basic with the admin user")
    return caller


def check_service_token(request: Request, token: str) -> Caller:
    """For /job and /run: the service's own token, or the admin's Basic credentials."""
    header = request.headers.get("authorization")
    given = bearer(header)
    if given is not None:
        if hmac.compare_digest(given.encode(), token.encode()):
            return Caller("service-token", is_admin=False)
        raise Unauthorized("invalid token for this service")
    caller = request.app.state.credentials.basic(header)
    if caller is None:
        raise Unauthorized("a Bearer token (the service's token) or Basic credentials are required")
    return caller
