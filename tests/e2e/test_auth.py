"""Users and who may do what, end to end: a real `sluice serve`, the real `sluice users` CLI and raw
HTTP with HTTP Basic credentials over 127.0.0.1.

The policy under test (src/sluice/engine/access.py): the admin may do everything; an owner may do
everything with their own services and buckets; a `public` service (and its buckets) is seen and used
by every user, a `restricted` one by the users in its `allowed_users`; only the owner or the admin
changes or deletes a service or reads its jobs and logs. Whatever a caller may not see answers 404,
as if it did not exist. A denied request changes nothing and leaks nothing.

One server for the module. The users alice, bob and carol are made with the CLI; the "world" is a
set of services with buckets, an object and jobs (succeeded, failed and running) that denied
requests must leave untouched. Requests that are allowed and destructive run on a fresh copy.
"""

from __future__ import annotations

import base64
import itertools
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.server import PASSWORD, SLUICE, ServerProcess

PASSWORDS = {
    "oscar": PASSWORD,
    "alice": "alice-password-1",
    "bob": "bob-password-22",
    "carol": "carol-password-333",
}
MASK = "********"
SEED = b"the seed object of the output bucket\n"
FINAL = ("succeeded", "failed", "cancelled")

# One script for every service: the body of a job says whether it succeeds, fails or runs for a while.
SCRIPT = """\
if grep -q '"fail"' "$INPUT_FILE_PATH"; then echo "failing on purpose" >&2; exit 3; fi
if grep -q '"sleep"' "$INPUT_FILE_PATH"; then sleep 1800; fi
echo "processed $(cat "$INPUT_FILE_PATH")"
"""
OK_BODY = b'{"action": "ok"}'
FAIL_BODY = b'{"action": "fail"}'
SLEEP_BODY = b'{"action": "sleep"}'


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


CALLERS = {name: basic(name, password) for name, password in PASSWORDS.items()}
CALLERS["admin"] = CALLERS.pop("oscar")
ADMIN = CALLERS["admin"]

# Callers who prove nothing: every route answers 401 and changes nothing.
UNAUTHENTICATED = {
    "no-credentials": {},
    "wrong-password": basic("alice", "not-alices-password"),
    "admin-wrong-password": basic("oscar", "not-the-admin-password"),
    "unknown-user": basic("mallory", "mallory-password"),
    "malformed-base64": {"Authorization": "Basic %%%not-base64%%%"},
    "no-colon": {"Authorization": "Basic " + b64("alice")},
    "empty-basic": {"Authorization": "Basic"},
    "unknown-scheme": {"Authorization": "Token " + b64("alice:alice-password-1")},
    "bearer-without-oidc": {"Authorization": "Bearer not-a-token"},
}


def cli(
    server: ServerProcess, *args: str, user: str = "oscar", password: str = PASSWORD
) -> subprocess.CompletedProcess[str]:
    """The real `sluice` CLI against the server, as `user`, with no saved clusters in the way."""
    env = {
        **server.env,
        "SLUICE_ENDPOINT": server.endpoint,
        "SLUICE_ADMIN_USER": user,
        "SLUICE_ADMIN_PASSWORD": password,
        "SLUICE_CONFIG": str(server.data_dir.parent / "no-saved-clusters.json"),
    }
    env.pop("SLUICE_TOKEN", None)
    env.pop("SLUICE_CLUSTER", None)
    return subprocess.run([SLUICE, *args], capture_output=True, text=True, env=env, timeout=60)


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def definition(
    name: str, visibility: str = "private", allowed: tuple[str, ...] = (), mode: str = "original"
) -> dict[str, Any]:
    return {
        "name": name,
        "image": "alpine:3.20",
        "script": SCRIPT,
        "visibility": visibility,
        "allowed_users": list(allowed),
        "input": [{"storage_provider": "minio.default", "path": f"{name}-in/in"}],
        "output": [{"storage_provider": "minio.default", "path": f"{name}-out/out"}],
        "environment": {"variables": {"MODE": mode}, "secrets": {"API_KEY": secret_of(name)}},
    }


def secret_of(service: str) -> str:
    return f"secret-of-{service}-do-not-leak"


@dataclass(frozen=True)
class Target:
    """A service with its two buckets, a seed object in the output bucket, and jobs."""

    service: str
    owner: str
    visibility: str
    allowed: tuple[str, ...]
    token: str
    ok_job: str
    failed_job: str
    running_job: str | None

    @property
    def bucket_in(self) -> str:
        return f"{self.service}-in"

    @property
    def bucket_out(self) -> str:
        return f"{self.service}-out"


def job_of(http: httpx.Client, service: str, job_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/services/{service}/jobs/{job_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def submit(http: httpx.Client, service: str, token: str, body: bytes) -> str:
    response = http.post(f"/job/{service}", content=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    return response.json()["job_id"]


def make_target(
    http: httpx.Client,
    owner: str,
    name: str,
    visibility: str = "private",
    allowed: tuple[str, ...] = (),
    running: bool = False,
) -> Target:
    auth = CALLERS[owner]
    created = http.post("/system/services", json=definition(name, visibility, allowed), headers=auth)
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    seeded = http.put(f"/v1/buckets/{name}-out/objects/out/seed.txt", content=SEED, headers=auth)
    assert seeded.status_code == 201, seeded.text
    ok = submit(http, name, token, OK_BODY)
    failed = submit(http, name, token, FAIL_BODY)
    sleeping = submit(http, name, token, SLEEP_BODY) if running else None
    wanted = {ok: "succeeded", failed: "failed", **({sleeping: "running"} if sleeping else {})}
    wait_until(
        lambda: all(job_of(http, name, j)["status"] == s for j, s in wanted.items()),
        f"jobs of {name} in {wanted}",
    )
    owner_name = "oscar" if owner == "admin" else owner
    return Target(name, owner_name, visibility, allowed, token, ok, failed, sleeping)


def cancel_quietly(http: httpx.Client, target: Target) -> None:
    if target.running_job:
        http.post(f"/v1/services/{target.service}/jobs/{target.running_job}/cancel", headers=ADMIN)


# fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Enough job slots for the long-running jobs the world keeps busy."""
    process = ServerProcess(
        tmp_path_factory.mktemp("auth") / "data",
        env={"SLUICE_WORKERS": "16", "SLUICE_RETRY_BASE_DELAY": "0.2"},
    ).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """Raw HTTP with no default credentials: every request says who it is."""
    with httpx.Client(base_url=server.endpoint, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def accounts(server: ServerProcess) -> dict[str, str]:
    """alice, bob and carol, created by the admin with `sluice users add`."""
    for name in ("alice", "bob", "carol"):
        result = cli(server, "users", "add", name, "--new-password", PASSWORDS[name])
        assert result.returncode == 0, result.stderr
        assert flat(result.stdout) == f"user {name} created"
    return {name: PASSWORDS[name] for name in ("alice", "bob", "carol")}


@pytest.fixture(scope="module")
def world(http: httpx.Client, accounts: dict[str, str]) -> Iterator[dict[str, Target]]:
    targets = {
        "alice-private": make_target(http, "alice", "alice-private", running=True),
        "alice-public": make_target(http, "alice", "alice-public", "public", running=True),
        "alice-restricted": make_target(
            http, "alice", "alice-restricted", "restricted", ("bob",), running=True
        ),
        "admin-private": make_target(http, "admin", "admin-private", running=True),
        "bob-private": make_target(http, "bob", "bob-private", running=True),
    }
    yield targets
    for target in targets.values():
        cancel_quietly(http, target)


_fresh_names = itertools.count(1)


@pytest.fixture
def fresh(http: httpx.Client, world: dict[str, Target]) -> Iterator[Callable[[Target, bool], Target]]:
    """A new service like `like` (same owner, visibility and allowed users), for destructive calls."""
    made: list[Target] = []

    def make(like: Target, running: bool) -> Target:
        owner = "admin" if like.owner == "oscar" else like.owner
        name = f"fresh-{next(_fresh_names):03d}-{like.visibility}"
        target = make_target(http, owner, name, like.visibility, like.allowed, running)
        made.append(target)
        return target

    yield make
    for target in made:
        cancel_quietly(http, target)


# what a user checks


def snapshot(http: httpx.Client, target: Target) -> dict[str, Any]:
    """Everything about a target, as the admin sees it: the definition, the jobs, both buckets."""
    service = http.get(f"/system/services/{target.service}", headers=ADMIN)
    jobs = http.get(f"/v1/services/{target.service}/jobs", headers=ADMIN)
    buckets = {
        b: http.get(f"/system/buckets/{b}", headers=ADMIN) for b in (target.bucket_in, target.bucket_out)
    }
    seed = http.get(f"/v1/buckets/{target.bucket_out}/objects/out/seed.txt", headers=ADMIN)
    return {
        "service": (service.status_code, service.json() if service.status_code == 200 else None),
        "jobs": sorted((j["id"], j["status"], j["attempts"]) for j in jobs.json().get("jobs", [])),
        "buckets": {
            b: (r.status_code, r.json() if r.status_code == 200 else None) for b, r in buckets.items()
        },
        "seed": (seed.status_code, seed.content),
    }


def global_state(http: httpx.Client) -> dict[str, Any]:
    services = http.get("/system/services", headers=ADMIN)
    buckets = http.get("/system/buckets", headers=ADMIN)
    users = http.get("/v1/users", headers=ADMIN)
    assert services.status_code == buckets.status_code == users.status_code == 200
    return {
        "services": sorted((s["name"], s["owner"], s["visibility"]) for s in services.json()),
        "buckets": sorted((b["bucket_name"], b["owner"], b["visibility"]) for b in buckets.json()),
        "users": users.json()["users"],
    }


def assert_no_leak(response: httpx.Response, target: Target) -> None:
    assert secret_of(target.service) not in response.text
    assert target.token not in response.text
    assert SEED not in response.content


def may_see(caller: str, service: dict[str, Any]) -> bool:
    """The visibility rule, written out for a caller by user name ('oscar' is the admin)."""
    return (
        caller == "oscar"
        or service["owner"] == caller
        or service["visibility"] == "public"
        or (service["visibility"] == "restricted" and caller in service["allowed_users"])
    )


def user_name(caller: str) -> str:
    return "oscar" if caller == "admin" else caller


# the routes of one service and its buckets


Check = Callable[[httpx.Client, Target, httpx.Response, str], None]


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # a template: {svc} {in} {out} {ok_job} {failed_job} {running_job} {caller}
    needs: str  # "use" (see, invoke, read and write buckets) or "manage" (change, delete, jobs, logs)
    ok: int  # the status when allowed
    json: Callable[[Target, str], Any] | None = None
    content: Callable[[str], bytes] | None = None
    destructive: bool = False  # when allowed, run it on a fresh target
    running: bool = False  # needs a running job
    hidden: int = 404  # the status for a caller who may not even see the target
    check: Check | None = None  # what an allowed caller then sees

    def send(
        self, http: httpx.Client, target: Target, headers: dict[str, str], caller: str
    ) -> httpx.Response:
        path = self.path.format(
            svc=target.service,
            out=target.bucket_out,
            ok_job=target.ok_job,
            failed_job=target.failed_job,
            running_job=target.running_job,
            caller=caller,
        )
        body = self.json(target, caller) if self.json else None
        content = self.content(caller) if self.content else None
        return http.request(self.method, path, json=body, content=content, headers=headers)


def check_service(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    data = r.json()
    assert (data["name"], data["owner"], data["visibility"]) == (t.service, t.owner, t.visibility)
    assert data["environment"]["secrets"] == {"API_KEY": MASK}
    assert secret_of(t.service) not in r.text


def check_updated(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    data = http.get(f"/system/services/{t.service}", headers=ADMIN).json()
    assert data["environment"]["variables"] == {"MODE": f"changed-by-{caller}"}
    assert data["owner"] == t.owner  # an update by the admin does not take the service over


def check_service_gone(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert http.get(f"/system/services/{t.service}", headers=ADMIN).status_code == 404
    assert t.service not in {s["name"] for s in http.get("/system/services", headers=ADMIN).json()}


def check_log_list(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    jobs = r.json()["jobs"]
    assert jobs[t.ok_job]["status"] == "Succeeded"
    assert jobs[t.failed_job]["status"] == "Failed"


def check_log(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert "processed" in r.text and '"ok"' in r.text


def check_all_jobs_deleted(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert http.get(f"/v1/services/{t.service}/jobs", headers=ADMIN).json()["jobs"] == []


def check_job_deleted(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert http.get(f"/v1/services/{t.service}/jobs/{t.ok_job}", headers=ADMIN).status_code == 404
    assert job_of(http, t.service, t.failed_job)["status"] == "failed"  # only that one


def check_ran(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert r.text == f"processed {OK_BODY.decode()}\n"  # no output file: the script's output


def check_text(expected: str) -> Check:
    def check(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
        assert r.text == expected

    return check


def check_no_replica_logs(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert r.json()["available"] is False  # a script service logs per job


def check_deployment(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert (r.json()["service_name"], r.json()["state"]) == (t.service, "on-demand")


def check_submitted(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    job_id = r.json()["job_id"]
    assert r.headers["x-job-id"] == job_id
    # Wait for it: later tests compare snapshots of this service and must not see it move.
    job = wait_until(
        lambda: (j := job_of(http, t.service, job_id))["status"] in FINAL and j, f"job {job_id} finished"
    )
    assert job["status"] == "succeeded"


def check_job_list(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    ids = {j["id"] for j in r.json()["jobs"]}
    assert {t.ok_job, t.failed_job} <= ids


def check_job(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert (r.json()["id"], r.json()["status"]) == (t.ok_job, "succeeded")


def check_cancelled(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert (r.json()["previous_status"], r.json()["status"]) == ("running", "cancelled")
    assert job_of(http, t.service, t.running_job or "")["status"] == "cancelled"


def check_requeued(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    requeued = r.json()
    assert requeued["id"] == t.failed_job
    assert requeued["status"] in ("queued", "running") and requeued["finished_at"] is None
    job = wait_until(
        lambda: (j := job_of(http, t.service, t.failed_job))["status"] in FINAL and j,
        "the requeued job ran again",
    )
    assert (job["status"], job["exit_code"]) == ("failed", 3)  # the same input fails again


def check_bucket(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    data = r.json()
    assert (data["bucket_name"], data["owner"], data["visibility"]) == (t.bucket_out, t.owner, t.visibility)
    assert "out/seed.txt" in {o["object_name"] for o in data["objects"]}


def check_bucket_shared(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    data = http.get(f"/system/buckets/{t.bucket_out}", headers=ADMIN).json()
    assert (data["visibility"], data["allowed_users"], data["owner"]) == ("restricted", ["carol"], t.owner)


def check_bucket_gone(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert http.get(f"/system/buckets/{t.bucket_out}", headers=ADMIN).status_code == 404
    assert t.bucket_out not in {b["bucket_name"] for b in http.get("/system/buckets", headers=ADMIN).json()}


def check_presigned(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    data = r.json()
    assert (data["method"], data["object_key"]) == ("GET", "out/seed.txt")
    downloaded = httpx.get(data["url"], timeout=30)  # no credentials: the URL is the permission
    assert downloaded.status_code == 200 and downloaded.content == SEED


def check_object_stored(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    stored = http.get(f"/v1/buckets/{t.bucket_out}/objects/out/put-by-{caller}.txt", headers=ADMIN)
    assert stored.status_code == 200 and stored.content == f"written by {caller}".encode()


def check_seed(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert r.content == SEED


def check_listing(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert "out/seed.txt" in {o["object_name"] for o in r.json()["objects"]}


def check_object_gone(http: httpx.Client, t: Target, r: httpx.Response, caller: str) -> None:
    assert http.get(f"/v1/buckets/{t.bucket_out}/objects/out/seed.txt", headers=ADMIN).status_code == 404


ROUTES = [
    Route("svc-get", "GET", "/system/services/{svc}", "use", 200, check=check_service),
    Route(
        "svc-put",
        "PUT",
        "/system/services",
        "manage",
        204,
        json=lambda t, caller: definition(t.service, t.visibility, t.allowed, mode=f"changed-by-{caller}"),
        destructive=True,
        check=check_updated,
    ),
    Route(
        "svc-delete",
        "DELETE",
        "/system/services/{svc}",
        "manage",
        204,
        destructive=True,
        check=check_service_gone,
    ),
    Route("logs-list", "GET", "/system/logs/{svc}", "manage", 200, check=check_log_list),
    Route("log-get", "GET", "/system/logs/{svc}/{ok_job}", "manage", 200, check=check_log),
    Route(
        "logs-delete",
        "DELETE",
        "/system/logs/{svc}?all=true",
        "manage",
        204,
        destructive=True,
        check=check_all_jobs_deleted,
    ),
    Route(
        "log-delete",
        "DELETE",
        "/system/logs/{svc}/{ok_job}",
        "manage",
        204,
        destructive=True,
        check=check_job_deleted,
    ),
    # Invoking with the caller's credentials; a user who may not see the service gets 404, as for reads.
    Route(
        "job-submit",
        "POST",
        "/job/{svc}",
        "use",
        201,
        content=lambda _: OK_BODY,
        check=check_submitted,
    ),
    # Synchronous calls: the script runs now (hence a fresh target: it may change what it reads).
    Route(
        "run", "POST", "/run/{svc}", "use", 200, content=lambda _: OK_BODY, destructive=True, check=check_ran
    ),
    Route("service-auth", "GET", "/system/services/{svc}/auth", "use", 200, check=check_text("OK")),
    Route("deployment", "GET", "/system/services/{svc}/deployment", "manage", 200, check=check_deployment),
    Route(
        "deployment-logs",
        "GET",
        "/system/services/{svc}/deployment/logs",
        "manage",
        200,
        check=check_no_replica_logs,
    ),
    Route("jobs-list", "GET", "/v1/services/{svc}/jobs", "manage", 200, check=check_job_list),
    Route("job-get", "GET", "/v1/services/{svc}/jobs/{ok_job}", "manage", 200, check=check_job),
    Route(
        "job-cancel",
        "POST",
        "/v1/services/{svc}/jobs/{running_job}/cancel",
        "manage",
        200,
        destructive=True,
        running=True,
        check=check_cancelled,
    ),
    Route(
        "job-requeue",
        "POST",
        "/v1/services/{svc}/jobs/{failed_job}/requeue",
        "manage",
        200,
        destructive=True,
        check=check_requeued,
    ),
    Route("bucket-get", "GET", "/system/buckets/{out}", "use", 200, check=check_bucket),
    Route(
        "bucket-put",
        "PUT",
        "/system/buckets",
        "manage",
        204,
        json=lambda t, caller: {
            "bucket_name": t.bucket_out,
            "visibility": "restricted",
            "allowed_users": ["carol"],
        },
        destructive=True,
        check=check_bucket_shared,
    ),
    Route(
        "bucket-delete",
        "DELETE",
        "/system/buckets/{out}",
        "manage",
        204,
        destructive=True,
        check=check_bucket_gone,
    ),
    Route(
        "bucket-presign",
        "POST",
        "/system/buckets/{out}/presign",
        "use",
        200,
        json=lambda t, caller: {"object_key": "out/seed.txt", "operation": "download"},
        check=check_presigned,
    ),
    Route(
        "object-put",
        "PUT",
        "/v1/buckets/{out}/objects/out/put-by-{caller}.txt",
        "use",
        201,
        content=lambda caller: f"written by {caller}".encode(),
        check=check_object_stored,
    ),
    Route("object-get", "GET", "/v1/buckets/{out}/objects/out/seed.txt", "use", 200, check=check_seed),
    Route("object-list", "GET", "/v1/buckets/{out}/objects", "use", 200, check=check_listing),
    Route(
        "object-delete",
        "DELETE",
        "/v1/buckets/{out}/objects/out/seed.txt",
        "use",
        204,
        destructive=True,
        check=check_object_gone,
    ),
]


# (caller, world target, what the caller may do with it)
CASES = [
    ("bob", "alice-private", "none"),
    ("carol", "alice-private", "none"),
    ("bob", "alice-public", "use"),
    ("carol", "alice-public", "use"),
    ("bob", "alice-restricted", "use"),
    ("carol", "alice-restricted", "none"),
    ("alice", "alice-private", "manage"),
    ("alice", "alice-public", "manage"),
    ("alice", "alice-restricted", "manage"),
    ("alice", "admin-private", "none"),
    ("alice", "bob-private", "none"),
    ("admin", "alice-private", "manage"),
    ("admin", "alice-public", "manage"),
    ("admin", "alice-restricted", "manage"),
    ("admin", "bob-private", "manage"),
]


# users, with the CLI


def test_users_list_shows_the_users_made_with_the_cli(
    server: ServerProcess, accounts: dict[str, str]
) -> None:
    listed = cli(server, "users", "list")
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.split()
    assert {"alice", "bob", "carol"} <= set(names)
    assert "oscar" not in names  # the admin is configured, not an account


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_the_new_users_can_sign_in(http: httpx.Client, accounts: dict[str, str], name: str) -> None:
    response = http.get("/system/services", headers=CALLERS[name])
    assert response.status_code == 200, response.text


def test_adding_an_existing_user_fails_naming_the_user(
    server: ServerProcess, http: httpx.Client, accounts: dict[str, str]
) -> None:
    result = cli(server, "users", "add", "alice", "--new-password", "another-password-9")
    assert result.returncode == 2
    assert "alice" in flat(result.stderr) and "already exists" in flat(result.stderr)
    # alice's password is the one she had
    assert http.get("/system/info", headers=CALLERS["alice"]).status_code == 200
    assert http.get("/system/info", headers=basic("alice", "another-password-9")).status_code == 401


def test_a_short_password_is_refused(
    server: ServerProcess, http: httpx.Client, accounts: dict[str, str]
) -> None:
    result = cli(server, "users", "add", "shorty", "--new-password", "short")
    assert result.returncode == 2
    assert "password" in flat(result.stderr) and "8" in flat(result.stderr)
    assert "shorty" not in cli(server, "users", "list").stdout.split()
    assert http.get("/system/info", headers=basic("shorty", "short")).status_code == 401


def test_the_admins_own_name_is_refused(
    server: ServerProcess, http: httpx.Client, accounts: dict[str, str]
) -> None:
    result = cli(server, "users", "add", "oscar", "--new-password", "a-password-for-oscar")
    assert result.returncode == 2
    assert "'oscar' is the admin's name" in flat(result.stderr)
    assert "oscar" not in cli(server, "users", "list").stdout.split()
    assert http.get("/system/info", headers=ADMIN).status_code == 200  # the admin's password is unchanged
    assert http.get("/system/info", headers=basic("oscar", "a-password-for-oscar")).status_code == 401


def test_an_invalid_user_name_is_refused(server: ServerProcess, accounts: dict[str, str]) -> None:
    result = cli(server, "users", "add", "no spaces allowed", "--new-password", "long-enough-password")
    assert result.returncode == 2
    assert "name" in flat(result.stderr)
    assert "no spaces allowed" not in cli(server, "users", "list").stdout


def test_only_the_admin_manages_users_with_the_cli(server: ServerProcess, accounts: dict[str, str]) -> None:
    as_alice = {"user": "alice", "password": PASSWORDS["alice"]}
    added = cli(server, "users", "add", "mallory", "--new-password", "mallory-password", **as_alice)
    assert added.returncode == 2
    assert "only the admin" in flat(added.stderr)
    listed = cli(server, "users", "list", **as_alice)
    assert listed.returncode == 2 and "only the admin" in flat(listed.stderr)
    removed = cli(server, "users", "remove", "bob", **as_alice)
    assert removed.returncode == 2
    users = cli(server, "users", "list").stdout.split()
    assert "mallory" not in users and "bob" in users


def test_passwd_changes_the_password(
    server: ServerProcess, http: httpx.Client, accounts: dict[str, str]
) -> None:
    added = cli(server, "users", "add", "erin", "--new-password", "erin-first-password")
    assert added.returncode == 0, added.stderr
    old, new = basic("erin", "erin-first-password"), basic("erin", "erin-second-password")
    assert http.get("/system/services", headers=old).status_code == 200  # also remembered as verified

    changed = cli(server, "users", "passwd", "erin", "--new-password", "erin-second-password")
    assert changed.returncode == 0, changed.stderr
    assert flat(changed.stdout) == "password of erin changed"
    refused = http.get("/system/services", headers=old)
    assert refused.status_code == 401
    assert "wrong user name or password" in refused.text
    assert http.get("/system/services", headers=new).status_code == 200

    ghost = cli(server, "users", "passwd", "ghost", "--new-password", "ghost-password")
    assert ghost.returncode == 2 and "ghost" in flat(ghost.stderr)
    short = cli(server, "users", "passwd", "erin", "--new-password", "short")
    assert short.returncode == 2
    assert http.get("/system/services", headers=new).status_code == 200  # unchanged by the refusal


def test_a_removed_user_cannot_sign_in_but_their_services_stay(
    server: ServerProcess, http: httpx.Client, accounts: dict[str, str]
) -> None:
    added = cli(server, "users", "add", "dave", "--new-password", "dave-password-1")
    assert added.returncode == 0, added.stderr
    dave = basic("dave", "dave-password-1")
    created = http.post("/system/services", json=definition("dave-svc"), headers=dave)
    assert created.status_code == 201, created.text
    job = http.post("/job/dave-svc", content=OK_BODY, headers=dave)
    assert job.status_code == 201, job.text
    job_id = job.json()["job_id"]
    wait_until(lambda: job_of(http, "dave-svc", job_id)["status"] in FINAL, "dave's job finished")

    removed = cli(server, "users", "remove", "dave")
    assert removed.returncode == 0, removed.stderr
    assert flat(removed.stdout) == "user dave removed"
    assert "dave" not in cli(server, "users", "list").stdout.split()

    for method, path in [
        ("GET", "/system/services"),
        ("GET", "/system/services/dave-svc"),
        ("POST", "/job/dave-svc"),
    ]:
        refused = http.request(method, path, headers=dave, content=OK_BODY if method == "POST" else None)
        assert refused.status_code == 401, (method, path, refused.text)
    assert [j["id"] for j in http.get("/v1/services/dave-svc/jobs", headers=ADMIN).json()["jobs"]] == [job_id]

    # what dave owned stays, and the admin manages it
    service = http.get("/system/services/dave-svc", headers=ADMIN)
    assert service.status_code == 200 and service.json()["owner"] == "dave"
    bucket = http.get("/system/buckets/dave-svc-out", headers=ADMIN)
    assert bucket.status_code == 200 and bucket.json()["owner"] == "dave"
    updated = http.put("/system/services", json=definition("dave-svc", mode="by-admin"), headers=ADMIN)
    assert updated.status_code == 204, updated.text
    assert http.get("/system/services/dave-svc", headers=ADMIN).json()["environment"]["variables"] == {
        "MODE": "by-admin"
    }
    assert http.get(f"/system/logs/dave-svc/{job_id}", headers=ADMIN).status_code == 200
    assert http.delete("/system/services/dave-svc", headers=ADMIN).status_code == 204
    assert http.get("/system/services/dave-svc", headers=ADMIN).status_code == 404

    again = cli(server, "users", "remove", "dave")
    assert again.returncode == 2 and "dave" in flat(again.stderr) and "not found" in flat(again.stderr)


# the matrix


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize(("caller", "target_name", "access"), CASES, ids=[f"{c}-on-{t}" for c, t, _ in CASES])
def test_matrix(
    http: httpx.Client,
    world: dict[str, Target],
    fresh: Callable[[Target, bool], Target],
    caller: str,
    target_name: str,
    access: str,
    route: Route,
) -> None:
    allowed = access == "manage" or (access == "use" and route.needs == "use")
    target = world[target_name]
    if allowed and route.destructive:
        target = fresh(target, route.running)
    before = None if allowed else snapshot(http, target)
    response = route.send(http, target, CALLERS[caller], caller)
    if allowed:
        assert response.status_code == route.ok, response.text
        assert route.check is not None
        route.check(http, target, response, caller)
        return
    expected = route.hidden if access == "none" else 403
    assert response.status_code == expected, response.text
    assert response.text  # a plain-text reason
    assert_no_leak(response, target)
    assert snapshot(http, target) == before


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("who", list(UNAUTHENTICATED))
@pytest.mark.parametrize("target_name", ["alice-private", "alice-public"])
def test_matrix_unauthenticated(
    http: httpx.Client, world: dict[str, Target], target_name: str, who: str, route: Route
) -> None:
    target = world[target_name]
    before = snapshot(http, target)
    response = route.send(http, target, UNAUTHENTICATED[who], "anonymous")
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Basic realm="sluice"'
    assert response.text
    assert_no_leak(response, target)
    assert snapshot(http, target) == before


# routes that are not about one service


_unique = itertools.count(1)


@dataclass(frozen=True)
class GlobalRoute:
    name: str
    method: str
    path: str  # {victim}: a throwaway user
    ok: int
    admin_only: bool = False
    json: Callable[[str], Any] | None = None  # given a unique name


GLOBAL_ROUTES = [
    GlobalRoute("services-list", "GET", "/system/services", 200),
    GlobalRoute("services-create", "POST", "/system/services", 201, json=lambda u: definition(u)),
    GlobalRoute("buckets-list", "GET", "/system/buckets", 200),
    GlobalRoute("buckets-create", "POST", "/system/buckets", 201, json=lambda u: {"bucket_name": u}),
    GlobalRoute("failed-jobs", "GET", "/v1/jobs/failed", 200),
    GlobalRoute("info", "GET", "/system/info", 200),
    GlobalRoute("config", "GET", "/system/config", 200),
    GlobalRoute("config-slash", "GET", "/system/config/", 200),
    GlobalRoute("status", "GET", "/system/status", 200),
    GlobalRoute("users-list", "GET", "/v1/users", 200, admin_only=True),
    GlobalRoute(
        "users-add",
        "POST",
        "/v1/users",
        201,
        admin_only=True,
        json=lambda u: {"name": u, "password": "pw-" + u},
    ),
    GlobalRoute(
        "users-passwd",
        "PUT",
        "/v1/users/{victim}",
        204,
        admin_only=True,
        json=lambda u: {"password": "new-pw-" + u},
    ),
    GlobalRoute("users-remove", "DELETE", "/v1/users/{victim}", 204, admin_only=True),
]


def check_global(
    http: httpx.Client, route: GlobalRoute, response: httpx.Response, caller: str, unique: str
) -> None:
    """What an allowed caller sees after a call that is not about one service."""
    me = user_name(caller)
    if route.name == "services-create":
        data = http.get(f"/system/services/{unique}", headers=ADMIN).json()
        assert data["owner"] == me
    elif route.name == "buckets-create":
        data = http.get(f"/system/buckets/{unique}", headers=ADMIN).json()
        assert (data["owner"], data["visibility"]) == (me, "private")
    elif route.name == "failed-jobs":
        everything = {s["name"]: s["owner"] for s in http.get("/system/services", headers=ADMIN).json()}
        services = {j["service"] for j in response.json()["jobs"]}
        assert services, "every world service has a failed job"
        assert all(caller == "admin" or everything[s] == me for s in services)
        assert all(j["status"] == "failed" for j in response.json()["jobs"])
    elif route.name in ("config", "config-slash"):
        data = response.json()
        assert set(data) == {"config", "minio_provider"}
        provider = data["minio_provider"]
        assert set(provider) == {"endpoint", "verify", "access_key", "secret_key", "region"}
        if caller != "admin":
            assert provider["access_key"] == provider["secret_key"] == ""
    elif route.name == "info":
        assert response.json()["version"]
    elif route.name == "status":
        assert "jobs" in response.json()
    elif route.name == "users-list":
        assert {"alice", "bob", "carol"} <= set(response.json()["users"])
    elif route.name == "users-add":
        assert http.get("/system/info", headers=basic(unique, "pw-" + unique)).status_code == 200
    elif route.name == "users-passwd":
        assert http.get("/system/info", headers=basic(f"v-{unique}", "victim-password")).status_code == 401
        assert http.get("/system/info", headers=basic(f"v-{unique}", "new-pw-" + unique)).status_code == 200
    elif route.name == "users-remove":
        assert f"v-{unique}" not in http.get("/v1/users", headers=ADMIN).json()["users"]
        assert http.get("/system/info", headers=basic(f"v-{unique}", "victim-password")).status_code == 401


def call_global(
    http: httpx.Client, route: GlobalRoute, headers: dict[str, str]
) -> tuple[httpx.Response, str]:
    unique = f"g-{next(_unique):03d}-{route.name}"
    if "{victim}" in route.path:
        made = http.post(
            "/v1/users", json={"name": f"v-{unique}", "password": "victim-password"}, headers=ADMIN
        )
        assert made.status_code == 201, made.text
    path = route.path.format(victim=f"v-{unique}")
    body = route.json(unique) if route.json else None
    return http.request(route.method, path, json=body, headers=headers), unique


@pytest.mark.parametrize("route", GLOBAL_ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("caller", ["admin", "alice", "bob"])
def test_global_routes(http: httpx.Client, world: dict[str, Target], caller: str, route: GlobalRoute) -> None:
    allowed = caller == "admin" or not route.admin_only
    before = global_state(http)
    response, unique = call_global(http, route, CALLERS[caller])
    if allowed:
        assert response.status_code == route.ok, response.text
        check_global(http, route, response, caller, unique)
        return
    assert response.status_code == 403, response.text
    assert "only the admin" in response.text
    after = global_state(http)
    if "{victim}" in route.path:  # the throwaway user made for this test is the only change
        after["users"].remove(f"v-{unique}")
        assert http.get("/system/info", headers=basic(f"v-{unique}", "victim-password")).status_code == 200
    assert after == before


@pytest.mark.parametrize("route", GLOBAL_ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("who", list(UNAUTHENTICATED))
def test_global_routes_unauthenticated(
    http: httpx.Client, world: dict[str, Target], who: str, route: GlobalRoute
) -> None:
    before = global_state(http)
    response, unique = call_global(http, route, UNAUTHENTICATED[who])
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Basic realm="sluice"'
    after = global_state(http)
    if "{victim}" in route.path:
        after["users"].remove(f"v-{unique}")
        assert http.get("/system/info", headers=basic(f"v-{unique}", "victim-password")).status_code == 200
    assert after == before
    assert "alice-private" not in response.text and "secret-of" not in response.text


# what each caller sees


WORLD_VISIBLE = {
    "admin": {"alice-private", "alice-public", "alice-restricted", "admin-private", "bob-private"},
    "alice": {"alice-private", "alice-public", "alice-restricted"},
    "bob": {"alice-public", "alice-restricted", "bob-private"},
    "carol": {"alice-public"},
}


@pytest.mark.parametrize("caller", list(WORLD_VISIBLE))
def test_service_list_is_exactly_what_the_caller_may_see(
    http: httpx.Client, world: dict[str, Target], caller: str
) -> None:
    everything = http.get("/system/services", headers=ADMIN).json()
    response = http.get("/system/services", headers=CALLERS[caller])
    assert response.status_code == 200
    seen = [s["name"] for s in response.json()]
    assert len(seen) == len(set(seen))
    assert set(seen) == {s["name"] for s in everything if may_see(user_name(caller), s)}
    assert set(seen) & set(world) == WORLD_VISIBLE[caller]
    for name in set(world) - WORLD_VISIBLE[caller]:
        assert http.get(f"/system/services/{name}", headers=CALLERS[caller]).status_code == 404
        assert world[name].token not in response.text


@pytest.mark.parametrize("caller", list(WORLD_VISIBLE))
def test_bucket_list_is_exactly_what_the_caller_may_use(
    http: httpx.Client, world: dict[str, Target], caller: str
) -> None:
    everything = http.get("/system/buckets", headers=ADMIN).json()
    response = http.get("/system/buckets", headers=CALLERS[caller])
    assert response.status_code == 200
    seen = {b["bucket_name"] for b in response.json()}
    assert seen == {b["bucket_name"] for b in everything if may_see(user_name(caller), b)}
    world_buckets = {f"{name}-{end}" for name in world for end in ("in", "out")}
    assert seen & world_buckets == {
        f"{name}-{end}" for name in WORLD_VISIBLE[caller] for end in ("in", "out")
    }


@pytest.mark.parametrize("caller", list(WORLD_VISIBLE))
def test_secrets_are_masked_for_everyone(http: httpx.Client, world: dict[str, Target], caller: str) -> None:
    listed = http.get("/system/services", headers=CALLERS[caller])
    assert listed.status_code == 200
    for service in listed.json():
        if service["name"] in world:
            assert service["environment"]["secrets"] == {"API_KEY": MASK}
    for name in WORLD_VISIBLE[caller]:
        one = http.get(f"/system/services/{name}", headers=CALLERS[caller])
        assert one.status_code == 200
        assert one.json()["environment"]["secrets"] == {"API_KEY": MASK}
        assert secret_of(name) not in one.text
    assert not any(secret_of(name) in listed.text for name in world)


# service tokens


def test_a_service_token_invokes_that_service_only(http: httpx.Client, world: dict[str, Target]) -> None:
    alice_private, bob_private = world["alice-private"], world["bob-private"]
    own = http.post(
        f"/job/{alice_private.service}",
        content=OK_BODY,
        headers={"Authorization": f"Bearer {alice_private.token}"},
    )
    assert own.status_code == 201, own.text
    job_id = own.json()["job_id"]
    job = wait_until(
        lambda: (j := job_of(http, alice_private.service, job_id))["status"] in FINAL and j,
        "token job finished",
    )
    assert job["status"] == "succeeded"

    before = snapshot(http, bob_private)
    other = http.post(
        f"/job/{bob_private.service}",
        content=OK_BODY,
        headers={"Authorization": f"Bearer {alice_private.token}"},
    )
    assert other.status_code == 401, other.text
    assert "invalid token for this service" in other.text
    assert snapshot(http, bob_private) == before

    # a service token is no user credential
    for path in (
        "/system/services",
        f"/system/services/{alice_private.service}",
        f"/system/logs/{alice_private.service}",
    ):
        refused = http.get(path, headers={"Authorization": f"Bearer {alice_private.token}"})
        assert refused.status_code == 401, (path, refused.text)
        assert secret_of(alice_private.service) not in refused.text


def test_job_on_a_missing_service(http: httpx.Client, world: dict[str, Target]) -> None:
    """Only a caller with valid credentials learns that a service does not exist."""
    token = world["alice-private"].token
    anonymous = http.post("/job/no-such-service", content=OK_BODY)
    assert anonymous.status_code == 401
    with_token = http.post(
        "/job/no-such-service", content=OK_BODY, headers={"Authorization": f"Bearer {token}"}
    )
    assert with_token.status_code == 401
    known = http.post("/job/no-such-service", content=OK_BODY, headers=CALLERS["bob"])
    assert known.status_code == 404 and "no-such-service" in known.text


# other ways to reach what is not yours


def test_a_job_id_of_another_service_is_not_found(http: httpx.Client, world: dict[str, Target]) -> None:
    """alice may read her service's jobs, not bob's jobs through her service's routes."""
    own, bobs = world["alice-private"], world["bob-private"]
    for path in (
        f"/v1/services/{own.service}/jobs/{bobs.ok_job}",
        f"/system/logs/{own.service}/{bobs.ok_job}",
    ):
        response = http.get(path, headers=CALLERS["alice"])
        assert response.status_code == 404, (path, response.text)
        assert "processed" not in response.text
    before = snapshot(http, bobs)
    for method, path in (
        ("DELETE", f"/system/logs/{own.service}/{bobs.ok_job}"),
        ("POST", f"/v1/services/{own.service}/jobs/{bobs.running_job}/cancel"),
        ("POST", f"/v1/services/{own.service}/jobs/{bobs.failed_job}/requeue"),
    ):
        response = http.request(method, path, headers=CALLERS["alice"])
        assert response.status_code == 404, (method, path, response.text)
    assert snapshot(http, bobs) == before


def test_the_owner_in_a_body_is_ignored(http: httpx.Client, world: dict[str, Target]) -> None:
    body = {**definition("bob-says-alice"), "owner": "alice", "token": "f" * 64}
    created = http.post("/system/services", json=body, headers=CALLERS["bob"])
    assert created.status_code == 201, created.text
    assert created.json()["owner"] == "bob"
    assert created.json()["token"] != "f" * 64
    assert http.get("/system/services/bob-says-alice", headers=CALLERS["alice"]).status_code == 404
    assert http.get("/system/buckets/bob-says-alice-out", headers=CALLERS["alice"]).status_code == 404
    forged = http.post(
        "/job/bob-says-alice", content=OK_BODY, headers={"Authorization": "Bearer " + "f" * 64}
    )
    assert forged.status_code == 401


@pytest.mark.parametrize("target_name", ["alice-private", "alice-public"])
def test_creating_someone_elses_bucket_again_does_not_take_it_over(
    http: httpx.Client, world: dict[str, Target], target_name: str
) -> None:
    target = world[target_name]
    before = snapshot(http, target)
    for bucket in (target.bucket_in, target.bucket_out):
        response = http.post("/system/buckets", json={"bucket_name": bucket}, headers=CALLERS["bob"])
        assert response.status_code == 409, response.text
    assert snapshot(http, target) == before


def test_a_service_cannot_watch_someone_elses_private_bucket(
    http: httpx.Client, world: dict[str, Target]
) -> None:
    target = world["alice-private"]
    before, services = snapshot(http, target), global_state(http)
    body = definition("bob-snoops")
    body["input"] = [{"storage_provider": "minio.default", "path": f"{target.bucket_in}/in"}]
    response = http.post("/system/services", json=body, headers=CALLERS["bob"])
    assert response.status_code == 403, response.text
    assert snapshot(http, target) == before
    assert global_state(http) == services  # no service, no bucket made


def test_bob_may_not_update_a_service_into_someone_elses_bucket(
    http: httpx.Client, world: dict[str, Target]
) -> None:
    own, target = world["bob-private"], world["alice-private"]
    before, own_before = snapshot(http, target), snapshot(http, own)
    body = definition(own.service)
    body["output"] = [{"storage_provider": "minio.default", "path": f"{target.bucket_out}/stolen"}]
    response = http.put("/system/services", json=body, headers=CALLERS["bob"])
    assert response.status_code == 403, response.text
    assert snapshot(http, target) == before
    assert snapshot(http, own) == own_before


@pytest.mark.parametrize(
    ("visibility", "allowed"), [("private", ()), ("public", ()), ("restricted", ("bob",))]
)
def test_a_bucket_made_on_its_own_follows_its_visibility(
    http: httpx.Client, world: dict[str, Target], visibility: str, allowed: tuple[str, ...]
) -> None:
    bucket = f"alice-own-{visibility}"
    body = {"bucket_name": bucket, "visibility": visibility, "allowed_users": list(allowed)}
    assert http.post("/system/buckets", json=body, headers=CALLERS["alice"]).status_code == 201
    assert (
        http.put(f"/v1/buckets/{bucket}/objects/a.txt", content=SEED, headers=CALLERS["alice"]).status_code
        == 201
    )
    shared = visibility != "private"
    bob = CALLERS["bob"]

    def objects() -> list[str]:
        listing = http.get(f"/v1/buckets/{bucket}/objects", headers=ADMIN).json()["objects"]
        return sorted(o["object_name"] for o in listing)

    assert (bucket in {b["bucket_name"] for b in http.get("/system/buckets", headers=bob).json()}) == shared
    got = http.get(f"/v1/buckets/{bucket}/objects/a.txt", headers=bob)
    assert got.status_code == (200 if shared else 404)
    assert (SEED in got.content) == shared
    put = http.put(f"/v1/buckets/{bucket}/objects/by-bob.txt", content=b"bob", headers=bob)
    assert put.status_code == (201 if shared else 404)
    assert objects() == (["a.txt", "by-bob.txt"] if shared else ["a.txt"])
    presign = http.post(
        f"/system/buckets/{bucket}/presign",
        json={"object_key": "a.txt", "operation": "download"},
        headers=bob,
    )
    assert presign.status_code == (200 if shared else 404)
    # using is not managing: bob neither deletes the bucket nor changes who may use it
    assert http.delete(f"/system/buckets/{bucket}", headers=bob).status_code == (403 if shared else 404)
    grab = {"bucket_name": bucket, "visibility": "public"}
    assert http.put("/system/buckets", json=grab, headers=bob).status_code == (403 if shared else 404)
    record = http.get(f"/system/buckets/{bucket}", headers=ADMIN).json()
    assert (record["owner"], record["visibility"], record["allowed_users"]) == (
        "alice",
        visibility,
        list(allowed),
    )
    # carol is named by none of them
    assert http.get(f"/system/buckets/{bucket}", headers=CALLERS["carol"]).status_code == (
        200 if visibility == "public" else 404
    )


def test_a_bearer_token_is_refused_when_no_issuer_is_configured(
    http: httpx.Client, world: dict[str, Target]
) -> None:
    """This server has no SLUICE_OIDC_ISSUERS: even a well-formed, signed JWT proves nothing here."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": "https://issuer.test",
        "aud": "sluice",
        "sub": "user-123@egi.eu",
        "iat": now,
        "exp": now + 600,
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "key-1"})
    response = http.get("/system/services", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "no OIDC issuer is configured" in response.text
    assert response.headers["www-authenticate"] == 'Basic realm="sluice"'
    assert not any(name in response.text for name in world)


# regressions of bugs found by these tests


def test_visibility_is_not_reported_as_inactive(http: httpx.Client, world: dict[str, Target]) -> None:
    for name in ("alice-public", "alice-restricted"):
        data = http.get(f"/system/services/{name}", headers=CALLERS["alice"]).json()
        assert "visibility" not in data.get("sluice_inactive_fields", [])


def test_making_a_service_private_makes_its_buckets_private(
    http: httpx.Client, world: dict[str, Target]
) -> None:
    target = make_target(http, "alice", "flip-to-private", "public")
    assert http.get(f"/system/buckets/{target.bucket_out}", headers=CALLERS["bob"]).status_code == 200
    updated = http.put(
        "/system/services", json=definition(target.service, "private"), headers=CALLERS["alice"]
    )
    assert updated.status_code == 204, updated.text
    assert http.get(f"/system/services/{target.service}", headers=CALLERS["bob"]).status_code == 404
    seed = http.get(f"/v1/buckets/{target.bucket_out}/objects/out/seed.txt", headers=CALLERS["bob"])
    assert seed.status_code == 404
    assert SEED not in seed.content
