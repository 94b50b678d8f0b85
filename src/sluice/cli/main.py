"""The `sluice` command: parse options, load settings or a client, call the library, show results.

Exit codes: 0 done, 1 the server or platform failed, 2 bad input (a file, a name, a flag).
"""

from __future__ import annotations

import contextlib
import gc
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from sluice.cli import clusters
from sluice.client.client import Client, ServerError, split_target
from sluice.errors import InvalidInput, SluiceError, StorageError
from sluice.settings import ADMIN_PASSWORD_FILE
from sluice.spec.fdl import parse_fdl
from sluice.spec.service import ServiceSpec

SHUTDOWN_GRACE = 10  # seconds open requests get to finish when the server stops
GC_YOUNG_THRESHOLD = 20_000  # allocations between collections of the young generation (700 by default)
app = typer.Typer(
    help="Sluice: serverless AI inference, wire-compatible with OSCAR.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# markup off: object keys and messages may contain [brackets] that are data, not styles
console = Console(markup=False, highlight=False)
errors = Console(stderr=True, markup=False, highlight=False)

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
DEFAULT_USER = "oscar"


@dataclass(frozen=True)
class Connection:
    """Where and as whom, from flags and SLUICE_* variables; gaps filled from a saved cluster."""

    endpoint: str | None = None
    cluster: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None


@app.callback()
def connection(
    ctx: typer.Context,
    endpoint: Annotated[str | None, typer.Option(envvar="SLUICE_ENDPOINT", help="Server URL.")] = None,
    cluster: Annotated[
        str | None, typer.Option(envvar="SLUICE_CLUSTER", help="A cluster saved by `sluice login`.")
    ] = None,
    user: Annotated[str | None, typer.Option(envvar="SLUICE_ADMIN_USER", help="User (HTTP Basic).")] = None,
    password: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_ADMIN_PASSWORD",
            help="Password; default: the one `sluice serve` generated in $SLUICE_DATA_DIR (./.sluice).",
        ),
    ] = None,
    token: Annotated[str | None, typer.Option(envvar="SLUICE_TOKEN", help="An OIDC bearer token.")] = None,
) -> None:
    """Connection options come before the command: `sluice --cluster prod jobs digits`."""
    ctx.obj = Connection(endpoint, cluster, user, password, token)


def _client(options: Connection) -> Client:
    saved, default = clusters.load()
    name = options.cluster or default
    if options.cluster and options.cluster not in saved:
        raise InvalidInput(f"no saved cluster '{options.cluster}'; saved: {', '.join(saved) or 'none'}")
    chosen = saved.get(name) if name and not options.endpoint else None
    endpoint = options.endpoint or (chosen.endpoint if chosen else DEFAULT_ENDPOINT)
    token = options.token or (chosen.token if chosen and not options.user else None)
    if token:
        return Client(endpoint, token=token)
    user = options.user or (chosen.user if chosen and chosen.user else DEFAULT_USER)
    password = options.password or (chosen.password if chosen else None)
    if password is None:  # the one `sluice serve` generated, in its data dir
        generated = Path(os.environ.get("SLUICE_DATA_DIR", ".sluice")) / ADMIN_PASSWORD_FILE
        password = generated.read_text().strip() if generated.exists() else ""
    return Client(endpoint, (user, password))


@contextlib.contextmanager
def _session(ctx: typer.Context | Connection) -> Iterator[Client]:
    """A client for one command; any Sluice error ends the command with its message."""
    options = ctx if isinstance(ctx, Connection) else ctx.obj or Connection()
    try:
        with _client(options) as client:
            yield client
    except SluiceError as exc:
        _fail(exc)


def _fail(exc: SluiceError) -> NoReturn:
    errors.print(Text.assemble(("error: ", "bold red"), exc.message))
    raise typer.Exit(1 if isinstance(exc, ServerError | StorageError) or exc.status_code >= 500 else 2)


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="SLUICE_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="SLUICE_PORT")] = 8080,
    data_dir: Annotated[
        Path, typer.Option(envvar="SLUICE_DATA_DIR", help="Database, buckets, work dirs.")
    ] = Path(".sluice"),
    database: Annotated[
        str | None,
        typer.Option(envvar="SLUICE_DATABASE", help="SQLAlchemy URL; default SQLite in the data dir."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(envvar="SLUICE_STORAGE", help="'local' or s3://KEY:SECRET@HOST:PORT?secure=0"),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            envvar="SLUICE_WORKERS", help="Jobs run at once; default: CPU count; 0: run none (API only)."
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_EXECUTOR",
            help="How jobs run: process (on the host), container (in the service's image), or auto "
            "(container when --container-engine is set).",
        ),
    ] = None,
    container_engine: Annotated[
        str | None,
        typer.Option(envvar="SLUICE_CONTAINER_ENGINE", help="podman or docker (a name on PATH or a path)."),
    ] = None,
    reconcile_interval: Annotated[
        float | None,
        typer.Option(
            envvar="SLUICE_RECONCILE_INTERVAL", help="Seconds between input listings; 0 turns it off."
        ),
    ] = None,
    apply: Annotated[
        list[Path] | None,
        typer.Option("--apply", help="FDL file whose services are created or updated at start (repeatable)."),
    ] = None,
) -> None:
    """Start the platform (API, job queue and workers) in the foreground."""
    import logging

    import uvicorn

    from sluice.api.app import create_server_app
    from sluice.settings import Settings

    overrides = {
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "database": database,
        "storage": storage,
        "workers": workers,
        "reconcile_interval": reconcile_interval,
        "executor": executor,
        "container_engine": container_engine,
    }
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        password, generated = settings.ensure_admin_password()
        specs = [spec for path in apply or [] for spec in _read_fdl(path)]
        application = create_server_app(settings, initial_services=specs)
    except SluiceError as exc:
        _fail(exc)
    except ValidationError as exc:  # a setting out of range, from a flag or SLUICE_* variable
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        _fail(InvalidInput(f"invalid setting: {problems}"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if generated:
        console.print(
            f"Admin user {settings.admin_user}, generated password "
            f"{password} (kept in {settings.data_dir / ADMIN_PASSWORD_FILE})"
        )
    console.print(f"Sluice listening on {settings.base_url}, data in {settings.data_dir}")
    for spec in specs:
        ways = [f"drop files into {', '.join(io.path for io in spec.input)}"] if spec.input else []
        if spec.handler:
            ways.append(f"call it: sluice run {spec.name} FILE")
        elif spec.expose is not None:
            ways.append(f"browse {settings.base_url}/system/services/{spec.name}/exposed/")
        console.print(f"service {spec.name}: {'; '.join(ways) or 'POST /job/' + spec.name}")
    _tune_garbage_collector()
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        # Open connections (a never-ending stream through an exposed service) must not hold a
        # stopping server for ever; jobs still running are released for the next start.
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )


def _tune_garbage_collector() -> None:
    """Leave what the server loaded at start (modules, routes, models) out of every collection,
    and collect the young generation less often: the collector's passes were about 4% of a busy
    server's CPU. Cycles are still collected; the young generation is simply let grow larger."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _read_fdl(path: Path) -> list[ServiceSpec]:
    if not path.is_file():
        raise InvalidInput(f"no such file: {path}")
    return parse_fdl(path.read_text(), base_dir=path.parent, source=str(path))


@app.command()
def apply(ctx: typer.Context, fdl: Annotated[Path, typer.Argument(help="An OSCAR FDL file (YAML).")]) -> None:
    """Create or update the services of an FDL file (scripts are read relative to it)."""
    if not fdl.is_file():
        _fail(InvalidInput(f"no such file: {fdl}"))
    with _session(ctx) as client:
        for name, outcome in client.apply(fdl):
            console.print(f"service {name} {outcome}")


@app.command()
def services(ctx: typer.Context) -> None:
    """List services."""
    with _session(ctx) as client:
        rows = client.services()
    table = Table("name", "image", "inputs", "outputs")
    for svc in rows:
        table.add_row(
            svc["name"],
            svc["image"],
            ", ".join(i["path"] for i in svc.get("input", [])),
            ", ".join(o["path"] for o in svc.get("output", [])),
        )
    console.print(table)


@app.command()
def delete(
    ctx: typer.Context,
    name: str,
    purge: Annotated[bool, typer.Option(help="Also delete its buckets and files.")] = False,
) -> None:
    """Delete a service and its jobs; its buckets stay unless --purge."""
    with _session(ctx) as client:
        client.delete_service(name, purge=purge)
    console.print(f"service {name} deleted" + (" with its buckets" if purge else ""))


@app.command("put-file")
def put_file(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="bucket/folder to upload into.")],
    files: Annotated[list[Path], typer.Argument(help="Files to upload.")],
) -> None:
    """Upload files; each file in a service's input path becomes one job."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        _fail(InvalidInput(f"no such file: {', '.join(missing)}"))
    total = sum(f.stat().st_size for f in files)
    show = len(files) > 1 or total > 8 * 1024**2
    jobs = 0
    with (
        _session(ctx) as client,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} files"),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=errors,
            disable=not show,
        ) as progress,
    ):
        task = progress.add_task("uploading", total=len(files))
        for path in files:
            result = client.put_file(target, path)
            jobs += len(result.get("jobs", []))
            progress.advance(task)
    console.print(f"uploaded {len(files)} file(s) to {target}; {jobs} job(s) queued")


@app.command("get-file")
def get_file(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="bucket/key to download.")],
    dest: Annotated[
        Path | None, typer.Argument(help="File, folder, or - for stdout; default: the key's name.")
    ] = None,
) -> None:
    """Download one object."""
    bucket, key = split_target(source)
    if not key:
        _fail(InvalidInput("give bucket/key, e.g. digits/output/digit-1579-0.json"))
    if dest == Path("-"):
        with _session(ctx) as client:
            client.copy_to(bucket, key, sys.stdout.buffer)
        return
    target = dest or Path(Path(key).name)
    if target.is_dir():
        target = target / Path(key).name
    try:
        with _client(ctx.obj or Connection()) as client:
            client.get_file(bucket, key, target)
    except SluiceError as exc:
        target.unlink(missing_ok=True)
        _fail(exc)
    console.print(f"saved {target}")


@app.command()
def run(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service to call.")],
    input_file: Annotated[
        Path | None, typer.Argument(help="The input file; - or nothing reads stdin.", show_default=False)
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the output here instead of stdout.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 300.0,
) -> None:
    """Call a service synchronously (POST /run) and print or save what it returns."""
    if input_file is not None and input_file != Path("-") and not input_file.is_file():
        _fail(InvalidInput(f"no such file: {input_file}"))
    if input_file in (None, Path("-")):
        if sys.stdin.isatty():
            _fail(InvalidInput("give an input file, or pipe the input in: sluice run SERVICE < FILE"))
        data = sys.stdin.buffer.read()
    else:
        data = input_file.read_bytes()
    with _session(ctx) as client:
        answer = client.run(service, data, timeout=timeout)
    if output is None:
        sys.stdout.buffer.write(answer)
        if sys.stdout.isatty() and answer and not answer.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")  # the prompt on a line of its own; pipes get the bytes as sent
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(answer)
        console.print(f"saved {output} ({len(answer)} bytes)")


@app.command()
def ls(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="bucket or bucket/prefix; nothing lists buckets.")] = "",
) -> None:
    """List buckets, or the objects under bucket/prefix."""
    with _session(ctx) as client:
        if not path:
            for bucket in client.buckets():
                console.print(bucket["bucket_name"])
            return
        bucket, prefix = split_target(path)
        table = Table("key", "size", "last modified")
        for obj in client.list_objects(bucket, prefix, folders=True):
            table.add_row(obj["object_name"], str(obj["size_bytes"]), obj["last_modified"])
    console.print(table)


@app.command()
def jobs(
    ctx: typer.Context,
    service: str,
    status: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed (the dead letters) or cancelled.")
    ] = None,
) -> None:
    """List a service's jobs, newest first."""
    table = Table("job", "status", "input", "attempts", "exit", "created", "error")
    with _session(ctx) as client:
        for job in client.jobs(service, status):
            table.add_row(
                job["id"],
                job["status"],
                f"{job['bucket']}/{job['key']}" if job["key"] else "-",
                str(job["attempts"]),
                str(job["exit_code"] if job["exit_code"] is not None else "-"),
                job["created_at"],
                job["error"] or "",
            )
    console.print(table)


@app.command()
def replicas(ctx: typer.Context, service: str) -> None:
    """Show a handler service's warm replicas (state, calls in flight and waiting, cold starts) or
    an exposed service's copies (health, requests in progress, scaling)."""
    with _session(ctx) as client:
        if client.service(service).get("expose") is not None:
            _print_exposed(service, client.exposed(service))
            return
        status = client.replicas(service)
    table = Table("replica", "pid", "state", "in flight", "idle (s)")
    for replica in status["replicas"]:
        idle = replica["idle_seconds"]
        table.add_row(
            str(replica["id"]), str(replica["pid"]), replica["state"], str(replica["in_flight"]),
            "-" if idle is None else f"{idle:.1f}",
        )  # fmt: skip
    console.print(table)
    scaling, cold = status["scaling"], status["last_cold_start_seconds"]
    if status.get("stopped"):
        console.print(f"stopped: start it with POST /system/services/{service}/start")
    else:
        console.print(
            f"{status['ready']} ready, {status['starting']} starting, {status['waiting']} waiting; "
            f"scale {scaling['min_scale']}..{scaling['max_scale']}, {scaling['concurrency']} calls per "
            f"replica, idle timeout {scaling['idle_timeout']:g} s"
        )
    console.print(
        f"{status['calls']} calls, {status['failures']} failed, {status['cold_starts']} cold starts"
        + (f" (last {cold * 1000:.0f} ms)" if cold is not None else "")
    )
    if status["last_error"]:
        console.print(f"last error: {status['last_error']}")


def _print_exposed(service: str, status: dict[str, Any]) -> None:
    table = Table("copy", "port", "state", "in flight", "requests")
    for number, copy in enumerate(status["replicas"], start=1):
        table.add_row(
            str(number), str(copy["port"]), copy["state"], str(copy["in_flight"]), str(copy["requests"])
        )
    console.print(table)
    if status["stopped"]:
        console.print(f"stopped: start it with POST /system/services/{service}/start")
        return
    scaling = status["scaling"]
    console.print(
        f"{status['healthy']} healthy, {status['starting']} starting, {status['in_flight']} requests in "
        f"progress, {status['waiting']} waiting; scale {scaling['min_scale']}..{scaling['max_scale']}, "
        f"{scaling['target_in_flight']} requests per copy, idle timeout {scaling['idle_timeout']:g} s"
    )
    console.print(
        f"{status['scale_ups']} scale-ups, {status['scale_downs']} scale-downs, {status['restarts']} restarts"
    )
    if status["last_error"]:
        console.print(f"last error: {status['last_error']}")


@app.command()
def logs(ctx: typer.Context, service: str, job: str) -> None:
    """Print a job's log (the script's stdout and stderr)."""
    with _session(ctx) as client:
        sys.stdout.write(client.log(service, job))


@app.command()
def cancel(ctx: typer.Context, service: str, job: str) -> None:
    """Cancel a queued or running job."""
    with _session(ctx) as client:
        result = client.cancel(service, job)
    console.print(f"job {job}: {result['previous_status']} -> {result['status']}")


@app.command()
def requeue(ctx: typer.Context, service: str, job: str) -> None:
    """Run a failed (dead-letter) or cancelled job again."""
    with _session(ctx) as client:
        client.requeue(service, job)
    console.print(f"job {job} queued again")


@app.command()
def wait(
    ctx: typer.Context,
    service: str,
    count: Annotated[int, typer.Option(help="Wait until this many jobs finished.")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 300,
) -> None:
    """Wait until a service has `count` finished jobs (and none queued or running), with progress."""
    deadline = time.monotonic() + timeout
    with _session(ctx) as client, Progress(console=errors) as progress:
        task = progress.add_task(f"{service} jobs", total=count)
        while True:
            states = [j["status"] for j in client.jobs(service)]
            finished = sum(s in ("succeeded", "failed", "cancelled") for s in states)
            progress.update(task, completed=min(finished, count))
            if finished >= count and not any(s in ("queued", "running") for s in states):
                break
            if time.monotonic() > deadline:
                errors.print(f"timed out: {finished}/{count} finished")
                raise typer.Exit(1)
            time.sleep(0.5)
    failed = sum(s == "failed" for s in states)
    console.print(f"{finished} finished, {failed} failed")


@app.command()
def login(
    ctx: typer.Context,
    endpoint: Annotated[str, typer.Argument(help="The server's URL.")],
    name: Annotated[str, typer.Option(help="A name for this cluster.")] = "default",
    default: Annotated[bool, typer.Option("--default", help="Use it when no --cluster is given.")] = False,
) -> None:
    """Check credentials against a server and save them as a named cluster.

    Credentials come from the connection options: `sluice --user alice --password ... login URL`,
    or `sluice --token $TOKEN login URL` for an OIDC token.
    """
    options: Connection = ctx.obj or Connection()
    user = options.user or DEFAULT_USER
    if not options.token and options.password is None:
        password = typer.prompt(f"password for {user}", hide_input=True)
    else:
        password = options.password
    saved = clusters.Cluster(
        endpoint.rstrip("/"),
        None if options.token else user,
        None if options.token else password,
        options.token,
    )
    with _session(Connection(saved.endpoint, None, saved.user, saved.password, saved.token)) as client:
        client.services()  # proves the credentials
    path = clusters.save(name, saved, make_default=default)
    console.print(
        f"logged in to {saved.endpoint} as {user if not options.token else 'the token user'}; "
        f"saved as '{name}' in {path}"
    )


@app.command()
def logout(name: Annotated[str, typer.Argument(help="The saved cluster to forget.")] = "default") -> None:
    """Forget a saved cluster and its credentials."""
    try:
        clusters.forget(name)
    except SluiceError as exc:
        _fail(exc)
    console.print(f"forgot cluster '{name}'")


users_app = typer.Typer(
    help="Accounts for HTTP Basic (admin only). OIDC users need none.", no_args_is_help=True
)
app.add_typer(users_app, name="users")


def _new_password(password: str | None, generate: bool) -> str:
    if password:
        return password
    if generate:
        created = secrets.token_urlsafe(15)
        console.print(f"generated password: {created}")
        return created
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    name: str,
    new_password: Annotated[str | None, typer.Option("--new-password", help="The user's password.")] = None,
    generate: Annotated[bool, typer.Option(help="Generate a password and print it.")] = False,
) -> None:
    """Create a user (asks for the password unless given or generated)."""
    chosen = _new_password(new_password, generate)
    with _session(ctx) as client:
        client.add_user(name, chosen)
    console.print(f"user {name} created")


@users_app.command("list")
def users_list(ctx: typer.Context) -> None:
    """List users."""
    with _session(ctx) as client:
        for name in client.users():
            console.print(name)


@users_app.command("passwd")
def users_passwd(
    ctx: typer.Context,
    name: str,
    new_password: Annotated[str | None, typer.Option("--new-password", help="The new password.")] = None,
    generate: Annotated[bool, typer.Option(help="Generate a password and print it.")] = False,
) -> None:
    """Set a user's password."""
    chosen = _new_password(new_password, generate)
    with _session(ctx) as client:
        client.set_password(name, chosen)
    console.print(f"password of {name} changed")


@users_app.command("remove")
def users_remove(ctx: typer.Context, name: str) -> None:
    """Remove a user; what they own stays, for the admin to manage."""
    with _session(ctx) as client:
        client.remove_user(name)
    console.print(f"user {name} removed")


def main() -> None:
    os.environ.setdefault("COLUMNS", "160")  # tables stay readable when piped
    app()


if __name__ == "__main__":
    main()
