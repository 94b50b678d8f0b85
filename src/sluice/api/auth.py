"""Who is calling. HTTP Basic: the admin (from settings) or a user the admin created; Bearer: an
OIDC token from a configured issuer. `/job` and `/run` also take the service's own token (see
`check_invocation`). Every secret comparison is constant-time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac

from fastapi import Request

from sluice.api.oidc import OidcVerifier
from sluice.api.passwords import VerifiedCache
from sluice.db import accounts
from sluice.db.database import Database
from sluice.db.services import ServiceRecord
from sluice.engine.access import Caller, can_use_service
from sluice.errors import Forbidden, NotFound, ServiceNotFound, Unauthorized

CREDENTIALS_REQUIRED = "credentials required: HTTP Basic, or a Bearer token from a configured OIDC issuer"


class Authenticator:
    def __init__(self, admin_user: str, admin_password: str, db: Database, oidc: OidcVerifier | None) -> None:
        self.admin_user = admin_user
        self._admin_password = admin_password
        self._db = db
        self._oidc = oidc
        self._verified = VerifiedCache()

    async def authenticate(self, header: str | None) -> Caller | None:
        """The caller the Authorization header proves, None if there is none; Unauthorized if wrong."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            return await self._basic(value.strip())
        if scheme.lower() == "bearer":
            if self._oidc is None:
                raise Unauthorized("bearer tokens are not accepted here: no OIDC issuer is configured")
            return await asyncio.to_thread(self._oidc.verify, value.strip())
        raise Unauthorized(f"unsupported authorization scheme '{scheme}': use Basic or Bearer")

    async def _basic(self, encoded: str) -> Caller:
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials") from None
        user_ok = hmac.compare_digest(user.encode(), self.admin_user.encode())
        if hmac.compare_digest(password.encode(), self._admin_password.encode()) and user_ok:
            return Caller(user, is_admin=True)
        stored = None if user_ok else await self._db.call(accounts.password_hash, user)
        if stored is not None and await asyncio.to_thread(self._verified.verified, user, password, stored):
            return Caller(user)
        raise Unauthorized("wrong user name or password")


def bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


async def require_user(request: Request) -> Caller:
    """Any authenticated caller: the admin, a user, or an OIDC identity."""
    caller = await request.app.state.auth.authenticate(request.headers.get("authorization"))
    if caller is None:
        raise Unauthorized(CREDENTIALS_REQUIRED)
    return caller


async def require_admin(request: Request) -> Caller:
    caller = await require_user(request)
    if not caller.is_admin:
        raise Forbidden("only the admin may do this")
    return caller


async def invocable_service(request: Request, name: str) -> ServiceRecord:
    """For /job and /run: the service, if the request may invoke it.

    Only a caller with valid credentials learns whether a service exists (404); others get 401.
    """
    try:
        record = await request.app.state.platform.get_service(name)
    except NotFound:
        if await request.app.state.auth.authenticate(request.headers.get("authorization")) is None:
            raise Unauthorized("a Bearer token (the service's token) or credentials are required") from None
        raise
    await check_invocation(request, record)
    return record


async def check_invocation(request: Request, service: ServiceRecord) -> Caller:
    """For /job and /run: the service's own token, or a caller allowed to use the service."""
    return await authorize_invocation(request.app.state.auth, request.headers.get("authorization"), service)


async def authorize_invocation(auth: Authenticator, header: str | None, service: ServiceRecord) -> Caller:
    """The check behind `check_invocation`, given the Authorization header (the /run fast path has
    no Request object)."""
    given = bearer(header)
    if given is not None and hmac.compare_digest(given.encode(), service.token.encode()):
        return Caller("service-token")
    try:
        caller = await auth.authenticate(header)
    except Unauthorized:
        if given is not None:
            raise Unauthorized("invalid token for this service") from None
        raise
    if caller is None:
        raise Unauthorized("a Bearer token (the service's token) or credentials are required")
    if not can_use_service(caller, service):
        raise ServiceNotFound(service.spec.name)  # as for reads: its existence is not theirs to know
    return caller
