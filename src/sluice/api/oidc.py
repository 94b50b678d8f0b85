"""OIDC bearer tokens: JWTs checked against the JWKS of configured issuers.

Signature, `exp`, `iss` and (when configured) `aud` are verified; the user is the `sub` claim;
groups come from a configured claim, with EGI's `eduperson_entitlement` form
(`urn:mace:egi.eu:group:<vo>:role=member#aai.egi.eu`) reduced to the VO name.
"""

from __future__ import annotations

from typing import Any

import jwt

from sluice.engine.access import Caller
from sluice.errors import Unauthorized
from sluice.settings import OidcIssuer

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
EGI_GROUP = "urn:mace:egi.eu:group:"


class OidcVerifier:
    def __init__(self, issuers: list[OidcIssuer], reserved: frozenset[str] = frozenset()) -> None:
        """`reserved`: names no token may claim (the admin's), since names decide ownership."""
        self._reserved = reserved
        self._issuers = {issuer.issuer: issuer for issuer in issuers}
        # The key set is cached for 5 minutes, so a key the issuer withdraws stops working within
        # that time (a per-key cache would keep it forever); an unknown key id triggers a refetch
        # (PyJWKClient allows one every 30 s).
        self._keys = {i.issuer: jwt.PyJWKClient(i.jwks_url, lifespan=300) for i in issuers}

    def verify(self, token: str) -> Caller:
        """Blocking (it may fetch the issuer's keys): call it from a worker thread."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.DecodeError:
            raise Unauthorized("the bearer token is not a valid JWT") from None
        issuer = self._issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise Unauthorized(f"tokens from issuer '{unverified.get('iss')}' are not accepted here")
        try:
            key = self._keys[issuer.issuer].get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                issuer=issuer.issuer,
                audience=issuer.audience,
                options={"require": ["exp", "iss", "sub"], "verify_aud": issuer.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the bearer token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the bearer token is not meant for this server (audience)") from None
        except jwt.PyJWKClientError as exc:
            raise Unauthorized(f"cannot check the token's signature: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from None
        subject = str(claims["sub"])
        if subject in self._reserved:
            raise Unauthorized(f"a token's subject may not be '{subject}', the admin's name")
        return Caller(subject, is_admin=False, groups=frozenset(groups(claims.get(issuer.groups_claim))))


def groups(value: Any) -> list[str]:
    """Group names from a claim: a list or a space-separated string; EGI entitlements give the VO."""
    items = value.split() if isinstance(value, str) else list(value or [])
    names = []
    for item in items:
        text = str(item)
        if text.startswith(EGI_GROUP):
            text = text.removeprefix(EGI_GROUP).split(":", 1)[0]
        names.append(text)
    return names
