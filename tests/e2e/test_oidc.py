"""OIDC bearer tokens, end to end: a real `sluice serve` configured with one issuer whose JWKS a tiny
HTTP server in this test serves on 127.0.0.1, and real RS256 tokens signed with PyJWT.

The server checks each token's signature against the issuer's keys (fetched, cached, and fetched
again for a key id it does not know), its `iss`, `aud` and `exp`, and takes the user from `sub`.
An OIDC user needs no account; what they may do follows the same ownership and visibility rules as
a Basic user. One Sluice server for the module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.server import PASSWORD, ServerProcess

ISSUER = "https://issuer.test"
AUDIENCE = "sluice"
SUB = "user-123@egi.eu"
OTHER_SUB = "user-456@egi.eu"
ENTITLEMENTS = ["urn:mace:egi.eu:group:vo.example.eu:role=member#aai.egi.eu"]
ADMIN = ("oscar", PASSWORD)
ALICE = ("alice", "alice-password-1")
FINAL = ("succeeded", "failed", "cancelled")
SCRIPT = 'echo "processed $(cat "$INPUT_FILE_PATH")"\n'
BODY = b'{"action": "ok"}'


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class Key:
    """An RSA key pair with a key id."""

    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str) -> Key:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        public = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": kid or self.kid})

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class JwksServer:
    """The issuer's key set at http://127.0.0.1:PORT/jwks; keys can be added while it runs."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/jwks":
                    self.send_error(404)
                    return
                with owner._lock:
                    owner.fetches += 1
                    body = json.dumps({"keys": list(owner.keys)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:  # quiet
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/jwks"

    def add(self, key: Key) -> None:
        with self._lock:
            self.keys.append(key.jwk())

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(10)


def claims(**changes: Any) -> dict[str, Any]:
    """A valid token's claims; a change to None removes that claim."""
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": SUB,
        "iat": now,
        "exp": now + 600,
        "eduperson_entitlement": ENTITLEMENTS,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}".strip()}  # an empty token: just "Bearer"


def definition(name: str, visibility: str = "private", allowed: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "name": name,
        "image": "alpine:3.20",
        "script": SCRIPT,
        "visibility": visibility,
        "allowed_users": list(allowed),
        "input": [{"storage_provider": "minio.default", "path": f"{name}-in/in"}],
        "output": [{"storage_provider": "minio.default", "path": f"{name}-out/out"}],
        "environment": {"secrets": {"API_KEY": f"secret-of-{name}"}},
    }


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


# fixtures


@pytest.fixture(scope="module")
def signing_key() -> Key:
    return Key.generate("key-1")


@pytest.fixture(scope="module")
def jwks(signing_key: Key) -> Iterator[JwksServer]:
    server = JwksServer()
    server.add(signing_key)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jwks: JwksServer) -> Iterator[ServerProcess]:
    issuers = [
        {
            "issuer": ISSUER,
            "jwks_url": jwks.url,
            "audience": AUDIENCE,
            "groups_claim": "eduperson_entitlement",
        }
    ]
    process = ServerProcess(
        tmp_path_factory.mktemp("oidc") / "data",
        env={"SLUICE_WORKERS": "4", "SLUICE_OIDC_ISSUERS": json.dumps(issuers)},
    ).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """Raw HTTP with no default credentials."""
    with httpx.Client(base_url=server.endpoint, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def token(signing_key: Key) -> str:
    """A valid token of user-123@egi.eu."""
    return signing_key.sign(claims())


@pytest.fixture(scope="module")
def world(http: httpx.Client) -> dict[str, str]:
    """Services made with Basic credentials: the admin's public, restricted and private ones, alice's
    private one. Returns their tokens."""
    added = http.post("/v1/users", json={"name": ALICE[0], "password": ALICE[1]}, auth=ADMIN)
    assert added.status_code == 201, added.text
    made = {}
    for name, visibility, allowed, owner in [
        ("admin-public", "public", (), ADMIN),
        ("admin-restricted", "restricted", (SUB,), ADMIN),
        ("admin-private", "private", (), ADMIN),
        ("alice-private", "private", (), ALICE),
    ]:
        created = http.post("/system/services", json=definition(name, visibility, allowed), auth=owner)
        assert created.status_code == 201, created.text
        made[name] = created.json()["token"]
    return made


def names(http: httpx.Client, **request: Any) -> set[str]:
    response = http.get("/system/services", **request)
    assert response.status_code == 200, response.text
    return {s["name"] for s in response.json()}


def job_ids(http: httpx.Client, service: str) -> list[str]:
    response = http.get(f"/v1/services/{service}/jobs", auth=ADMIN)
    assert response.status_code == 200, response.text
    return sorted(j["id"] for j in response.json()["jobs"])


def state(http: httpx.Client) -> tuple[list[tuple[str, str]], list[str]]:
    """Every service with its owner, and every bucket, as the admin sees them."""
    services = http.get("/system/services", auth=ADMIN).json()
    buckets = http.get("/system/buckets", auth=ADMIN).json()
    return sorted((s["name"], s["owner"]) for s in services), sorted(b["bucket_name"] for b in buckets)


# a valid token


def test_a_valid_token_lists_the_services_its_user_may_see(
    http: httpx.Client, world: dict[str, str], token: str
) -> None:
    seen = names(http, headers=bearer(token))
    assert {"admin-public", "admin-restricted"} <= seen
    assert not {"admin-private", "alice-private"} & seen
    assert not any(
        t in http.get("/system/services", headers=bearer(token)).text
        for t in (world["admin-private"], world["alice-private"])
    )


def test_a_valid_token_creates_a_service_owned_by_its_subject(
    http: httpx.Client, world: dict[str, str], token: str, signing_key: Key
) -> None:
    created = http.post("/system/services", json=definition("oidc-own"), headers=bearer(token))
    assert created.status_code == 201, created.text
    assert created.json()["owner"] == SUB

    mine = http.get("/system/services/oidc-own", headers=bearer(token))
    assert mine.status_code == 200
    assert mine.json()["owner"] == SUB
    assert mine.json()["environment"]["secrets"] == {"API_KEY": "********"}
    assert http.get("/system/services/oidc-own", auth=ADMIN).json()["owner"] == SUB
    assert http.get("/system/buckets/oidc-own-out", headers=bearer(token)).json()["owner"] == SUB

    # nobody else sees it: not a Basic user, not another OIDC user
    other = signing_key.sign(claims(sub=OTHER_SUB))
    for request in ({"auth": ALICE}, {"headers": bearer(other)}):
        assert http.get("/system/services/oidc-own", **request).status_code == 404
        assert "oidc-own" not in names(http, **request)
        assert http.get("/system/buckets/oidc-own-out", **request).status_code == 404

    # its owner runs it and reads its jobs and logs with the same token
    submitted = http.post("/job/oidc-own", content=BODY, headers=bearer(token))
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job_id"]
    job = wait_until(
        lambda: (
            (j := http.get(f"/v1/services/oidc-own/jobs/{job_id}", headers=bearer(token)).json())["status"]
            in FINAL
            and j
        ),
        "the owner's job finished",
    )
    assert job["status"] == "succeeded"
    log = http.get(f"/system/logs/oidc-own/{job_id}", headers=bearer(token))
    assert log.status_code == 200 and "processed" in log.text
    assert http.get(f"/system/logs/oidc-own/{job_id}", headers=bearer(other)).status_code == 404

    updated = definition("oidc-own")
    updated["environment"]["variables"] = {"MODE": "updated"}
    assert http.put("/system/services", json=updated, headers=bearer(other)).status_code == 404
    assert http.put("/system/services", json=updated, headers=bearer(token)).status_code == 204
    assert http.get("/system/services/oidc-own", auth=ADMIN).json()["environment"]["variables"] == {
        "MODE": "updated"
    }
    assert http.delete("/system/services/oidc-own", headers=bearer(other)).status_code == 404
    assert http.delete("/system/services/oidc-own", headers=bearer(token)).status_code == 204
    assert http.get("/system/services/oidc-own", auth=ADMIN).status_code == 404


def test_an_oidc_user_is_no_admin(http: httpx.Client, world: dict[str, str], token: str) -> None:
    assert http.get("/v1/users", headers=bearer(token)).status_code == 403
    added = http.post(
        "/v1/users", json={"name": "sneaky", "password": "sneaky-password"}, headers=bearer(token)
    )
    assert added.status_code == 403
    assert "sneaky" not in http.get("/v1/users", auth=ADMIN).json()["users"]
    config = http.get("/system/config", headers=bearer(token))
    assert config.status_code == 200
    assert (
        config.json()["minio_provider"]["access_key"] == config.json()["minio_provider"]["secret_key"] == ""
    )


# tokens that prove nothing


def _tampered(key: Key) -> str:
    header, _, signature = key.sign(claims()).split(".")
    return ".".join([header, b64url_json(claims(sub="oscar")), signature])


def _unsigned(kid: str | None) -> str:
    header = {"alg": "none", "typ": "JWT", **({"kid": kid} if kid else {})}
    return f"{b64url_json(header)}.{b64url_json(claims())}."


def _hmac_with_public_key(key: Key) -> str:
    """The classic key confusion: HS256 with the issuer's public key as the shared secret."""
    signing_input = f"{b64url_json({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{b64url_json(claims())}"
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


STRANGER = Key.generate("key-never-published")

# name -> (make the token from the published key, a phrase the 401 must contain)
BAD_TOKENS: dict[str, tuple[Callable[[Key], str], str]] = {
    "expired": (
        lambda k: k.sign(claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        "expired",
    ),
    "wrong-audience": (lambda k: k.sign(claims(aud="another-service")), "audience"),
    "no-audience": (lambda k: k.sign(claims(aud=None)), "aud"),
    "unknown-issuer": (lambda k: k.sign(claims(iss="https://evil.test")), "issuer"),
    "no-issuer": (lambda k: k.sign(claims(iss=None)), "issuer"),
    "no-subject": (lambda k: k.sign(claims(sub=None)), "sub"),
    "no-expiry": (lambda k: k.sign(claims(exp=None)), "exp"),
    "not-yet-valid": (lambda k: k.sign(claims(nbf=int(time.time()) + 3600)), "not yet valid"),
    "key-not-in-jwks": (lambda k: STRANGER.sign(claims()), "signing key"),
    "other-key-same-kid": (lambda k: STRANGER.sign(claims(), kid=k.kid), "signature"),
    "tampered-payload": (_tampered, "signature"),
    "garbage": (lambda k: "this-is-not-a-jwt", "not a valid JWT"),
    "three-garbage-parts": (lambda k: "abc.def.ghi", "not a valid JWT"),
    "empty": (lambda k: "", "not a valid JWT"),
    "alg-none": (lambda k: _unsigned(k.kid), "alg value is not allowed"),
    "alg-none-no-kid": (lambda k: _unsigned(None), "signing key"),
    "hs256-with-public-key": (_hmac_with_public_key, "alg value is not allowed"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_a_bad_token_is_refused_and_changes_nothing(
    http: httpx.Client, world: dict[str, str], signing_key: Key, case: str
) -> None:
    make, phrase = BAD_TOKENS[case]
    bad = bearer(make(signing_key))
    before, jobs_before = state(http), job_ids(http, "admin-public")

    listed = http.get("/system/services", headers=bad)
    assert listed.status_code == 401, listed.text
    assert phrase.lower() in listed.text.lower(), listed.text
    assert "admin-public" not in listed.text

    created = http.post("/system/services", json=definition(f"bad-{case}"), headers=bad)
    assert created.status_code == 401, created.text
    job = http.post("/job/admin-public", content=BODY, headers=bad)
    assert job.status_code == 401, job.text
    deleted = http.delete("/system/services/admin-public", headers=bad)
    assert deleted.status_code == 401, deleted.text

    assert state(http) == before
    assert job_ids(http, "admin-public") == jobs_before


def test_an_expired_token_is_named_as_expired(
    http: httpx.Client, world: dict[str, str], signing_key: Key
) -> None:
    """A client can tell the user to log in again."""
    expired = signing_key.sign(claims(exp=int(time.time()) - 60))
    response = http.get("/system/services", headers=bearer(expired))
    assert response.status_code == 401
    assert response.text == "the bearer token has expired"


# keys


def test_a_new_key_is_fetched_when_a_token_names_it(
    http: httpx.Client, world: dict[str, str], jwks: JwksServer, signing_key: Key, token: str
) -> None:
    """Key rotation: the issuer publishes a second key while the server runs; a token signed with it
    is accepted without a restart, since the unknown key id makes the server fetch the key set again.
    PyJWT fetches again for an unknown key id at most once per 30 s cooldown (so random key ids
    cannot make the server hammer the issuer): acceptance may take up to that long."""
    assert http.get("/system/services", headers=bearer(token)).status_code == 200  # keys cached by now
    rotated = Key.generate("key-2")
    new_token = bearer(rotated.sign(claims()))
    refused = http.get("/system/services", headers=new_token)
    assert refused.status_code == 401  # not published yet
    assert "key-2" in refused.text

    jwks.add(rotated)
    fetches = jwks.fetches
    accepted = wait_until(
        lambda: (r := http.get("/system/services", headers=new_token)).status_code == 200 and r,
        "a token signed with the newly published key is accepted",
        timeout=45,
    )
    assert {"admin-public", "admin-restricted"} <= {s["name"] for s in accepted.json()}
    assert 1 <= jwks.fetches - fetches <= 2  # fetched again, but not once per refused request
    assert http.get("/system/services", headers=bearer(token)).status_code == 200  # the old key still works

    created = http.post("/system/services", json=definition("by-rotated-key"), headers=new_token)
    assert created.status_code == 201, created.text
    assert created.json()["owner"] == SUB


# invoking and seeing services


def test_the_token_invokes_a_public_service(http: httpx.Client, world: dict[str, str], token: str) -> None:
    submitted = http.post("/job/admin-public", content=BODY, headers=bearer(token))
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job_id"]
    assert job_id in job_ids(http, "admin-public")
    job = wait_until(
        lambda: (
            (j := http.get(f"/v1/services/admin-public/jobs/{job_id}", auth=ADMIN).json())["status"] in FINAL
            and j
        ),
        "the job finished",
    )
    assert job["status"] == "succeeded"
    # using a service is not managing it
    assert http.get("/system/logs/admin-public", headers=bearer(token)).status_code == 403
    assert http.get(f"/v1/services/admin-public/jobs/{job_id}", headers=bearer(token)).status_code == 403
    assert http.delete("/system/services/admin-public", headers=bearer(token)).status_code == 403
    assert http.get("/system/services/admin-public", auth=ADMIN).status_code == 200


@pytest.mark.parametrize("service", ["alice-private", "admin-private"])
def test_the_token_may_not_invoke_someone_elses_private_service(
    http: httpx.Client, world: dict[str, str], token: str, service: str
) -> None:
    before = job_ids(http, service)
    refused = http.post(f"/job/{service}", content=BODY, headers=bearer(token))
    # As for reads: a private service someone else owns does not exist, as far as they know.
    assert refused.status_code == 404, refused.text
    assert service in refused.text
    assert job_ids(http, service) == before
    hidden = http.get(f"/system/services/{service}", headers=bearer(token))
    assert hidden.status_code == 404
    assert world[service] not in hidden.text
    assert http.get(f"/system/buckets/{service}-out", headers=bearer(token)).status_code == 404


def test_a_restricted_service_is_visible_to_the_users_it_names(
    http: httpx.Client, world: dict[str, str], token: str, signing_key: Key
) -> None:
    seen = http.get("/system/services/admin-restricted", headers=bearer(token))
    assert seen.status_code == 200
    assert seen.json()["allowed_users"] == [SUB]
    assert "admin-restricted" in names(http, headers=bearer(token))
    assert http.get("/system/buckets/admin-restricted-out", headers=bearer(token)).status_code == 200
    submitted = http.post("/job/admin-restricted", content=BODY, headers=bearer(token))
    assert submitted.status_code == 201, submitted.text

    other = bearer(signing_key.sign(claims(sub=OTHER_SUB)))
    assert http.get("/system/services/admin-restricted", headers=other).status_code == 404
    assert "admin-restricted" not in names(http, headers=other)
    assert http.get("/system/buckets/admin-restricted-out", headers=other).status_code == 404
    before = job_ids(http, "admin-restricted")
    assert http.post("/job/admin-restricted", content=BODY, headers=other).status_code == 404
    assert job_ids(http, "admin-restricted") == before


def test_service_tokens_still_work_beside_oidc(http: httpx.Client, world: dict[str, str]) -> None:
    own = http.post("/job/admin-private", content=BODY, headers=bearer(world["admin-private"]))
    assert own.status_code == 201, own.text
    before = job_ids(http, "alice-private")
    other = http.post("/job/alice-private", content=BODY, headers=bearer(world["admin-private"]))
    assert other.status_code == 401
    assert "invalid token for this service" in other.text
    assert job_ids(http, "alice-private") == before


def test_basic_credentials_still_work_beside_oidc(http: httpx.Client, world: dict[str, str]) -> None:
    assert "alice-private" in names(http, auth=ALICE)
    assert http.get("/system/services", auth=("alice", "wrong-password")).status_code == 401


# regressions of bugs found by these tests


def test_a_token_whose_subject_is_the_admins_name_gets_nothing_of_the_admins(
    http: httpx.Client, world: dict[str, str], signing_key: Key
) -> None:
    created = http.post("/system/services", json=definition("admin-keep"), auth=ADMIN)
    assert created.status_code == 201, created.text
    impostor = bearer(signing_key.sign(claims(sub="oscar")))
    seen = http.get("/system/services/admin-keep", headers=impostor)
    assert seen.status_code in (401, 404), seen.text
    deleted = http.delete("/system/services/admin-keep", headers=impostor)
    assert deleted.status_code in (401, 404), deleted.text
    assert http.get("/system/services/admin-keep", auth=ADMIN).status_code == 200
