"""Run invocations inside the service's image with podman or docker, through the engine's CLI.

One container per invocation, removed when it ends (`--rm`). The job's workspace and the script
are bind-mounted at the same paths they have on the host, so the OSCAR environment the runtime
contract builds (INPUT_FILE_PATH, TMP_OUTPUT_DIR, ...) is valid inside unchanged, and outputs
land where the contract collects them.

Limits: `memory` becomes `--memory` (swap off), `cpu` becomes `--cpus`, `timeout` removes the
container, `enable_gpu` asks for the engine's GPU device where the host has one. Every container
carries this server's label, so the ones a killed server left behind are removed at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sluice.errors import ExecutorError
from sluice.executors.base import LOG_FILE, Capabilities, Completed, Invocation
from sluice.executors.process import read_capped
from sluice.executors.registry import MissingCredentials, auth_file_for
from sluice.executors.slots import Slots
from sluice.executors.warm import ENGINE_FAILED, ENV_NAME, SHELL_LOOP, ContainerGone, WarmContainers
from sluice.replicas.process import ContainerCommands
from sluice.storage.files import open_for_rewrite

log = logging.getLogger("sluice.containers")

OWNER_LABEL = "io.sluice.owner"
JOB_LABEL = "io.sluice.job"
SERVICE_LABEL = "io.sluice.service"
PULL_POLICIES = {"always": "always", "if-not-present": "missing", "never": "never"}
CDI_FOLDERS = (Path("/etc/cdi"), Path("/var/run/cdi"))
ENGINE_TIMEOUT = 60.0  # for housekeeping commands (version, ps, rm)
REPLICA_RUNTIME = Path("/opt/sluice-runtime")  # where a replica container finds Sluice's package
# The variables podman and docker read for their own configuration.
ENGINE_VARIABLES = (
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME",
    "XDG_DATA_HOME", "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF",
    "REGISTRY_AUTH_FILE", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip


class ContainerExecutor:
    name = "container"

    def __init__(
        self,
        engine: str = "podman",
        *,
        engine_args: tuple[str, ...] = (),
        owner: str,
        auth_file: Path | None = None,
        auth_dir: Path | None = None,
        max_threads: int = 256,
        warm_limit: int = 0,
        warm_idle: float = 300.0,
        state_dir: Path | None = None,
    ) -> None:
        """`engine`: podman or docker (a name on PATH or a path); `engine_args` go before `run`
        (e.g. `--runtime /usr/sbin/runc`); `owner` labels this server's containers. `warm_limit`
        script containers are kept running between invocations (0: one container per invocation),
        each removed after `warm_idle` seconds unused; `state_dir` holds their engine logs."""
        if shutil.which(engine) is None:
            raise ExecutorError(f"container engine '{engine}' was not found (install it or give its path)")
        if auth_file is not None and not auth_file.is_file() and not Path(engine).name.startswith("docker"):
            raise ExecutorError(f"registry auth file {auth_file} does not exist")
        self.engine = engine
        self.flavour = "docker" if Path(engine).name.startswith("docker") else "podman"
        self._base = [engine, *engine_args]
        self.owner = owner
        self.auth_file = auth_file
        self.auth_dir = auth_dir
        # Asked once, at construction, so a broken engine stops `sluice serve` with a clear message.
        try:
            version = subprocess.run(
                [*self._base, "version", "--format", "{{.Client.Version}}"],
                env=_engine_environment(),
                capture_output=True,
                text=True,
                timeout=ENGINE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ExecutorError(
                f"container engine '{engine}' did not answer within {ENGINE_TIMEOUT:g} s"
            ) from None
        if version.returncode != 0:
            raise ExecutorError(f"container engine '{engine}' does not work: {_last_line(version)}")
        self._threads = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="sluice-ctr")
        self.capabilities = Capabilities(
            runs_images=True,
            limits_memory=True,
            limits_cpu=True,
            gpus=self._host_has_gpus(),
            warm_scripts=warm_limit > 0,
        )
        self.warm: WarmContainers | None = None
        if warm_limit > 0:
            folder = state_dir or Path(tempfile.mkdtemp(prefix="sluice-warm-"))
            self.warm = WarmContainers(
                self.warm_commands, self.flavour, folder, limit=warm_limit, idle_seconds=warm_idle
            )

    def describe(self) -> str:
        return f"container ({Path(self.engine).name})"

    async def start(self) -> None:
        """Remove the containers a previous run of this server left (killed, it could not)."""
        removed = await self.remove_strays()
        if removed:
            log.warning("removed %d containers left by a previous run", removed)

    async def stop(self) -> None:
        """Remove the warm containers (running invocations were cancelled before)."""
        if self.warm is not None:
            await self.warm.stop()

    async def prepare(self, invocation: Invocation, timeout: float) -> bool:
        """A warm container ready for invocations like this one (a script service's `min_scale`);
        True if one was started. Raises ExecutorError if it cannot start."""
        if self.warm is None:
            return False
        try:
            return await self.warm.prepare(invocation, timeout)
        except ContainerGone as exc:
            raise ExecutorError(str(exc)) from None

    def forget(self, service: str) -> None:
        """A service was deleted or changed: its warm containers go."""
        if self.warm is not None:
            self.warm.forget(service)

    async def forget_workspace(self, workdir: Path) -> None:
        """A workspace goes to another service: the warm containers that mount it go first."""
        if self.warm is not None:
            await self.warm.forget_workspace(workdir)

    async def remove_strays(self) -> int:
        listed = await self._housekeeping("ps", "-aq", "--filter", f"label={OWNER_LABEL}={self.owner}")
        ids = listed.stdout.split()
        if ids:
            await self._housekeeping(*self._remove(*ids))
        return len(ids)

    async def run(self, invocation: Invocation, slots: Slots | None = None) -> Completed:
        async with slots or contextlib.nullcontext():
            return await self._run(invocation)

    async def _run(self, invocation: Invocation) -> Completed:
        started = time.monotonic()
        if invocation.gpu and not self.capabilities.gpus:
            return Completed(
                exit_code=None,
                output="",
                error=f"enable_gpu is set but {self.flavour} reports no GPU on this host",
            )
        if self.warm is not None:
            try:
                return await self.warm.run(invocation)
            except MissingCredentials as exc:
                return Completed(exit_code=None, output="", error=str(exc))
        multiline = sorted(name for name, value in invocation.env.items() if "\n" in value or "\r" in value)
        if multiline:
            return Completed(
                exit_code=None,
                output="",
                error=f"environment values with line breaks cannot reach a container: {', '.join(multiline)}",
            )
        try:
            auth_file, merged = auth_file_for(invocation.pull_secrets, self.auth_dir, self.auth_file)
        except MissingCredentials as exc:
            return Completed(exit_code=None, output="", error=str(exc))
        name = f"sluice-{uuid.uuid4().hex[:16]}"
        log_path = invocation.workdir / LOG_FILE
        spawned: list[subprocess.Popen[bytes]] = []  # filled by the thread
        loop = asyncio.get_running_loop()
        env_file: Path | None = None
        client_env: dict[str, str] | None = None
        try:
            env_file = _write_env_file(invocation.env)
            argv = self.run_argv(invocation, name, env_file, auth_file)
            client_env = self._client_env(auth_file)
            running = loop.run_in_executor(
                self._threads, _run_and_wait, argv, log_path, invocation.timeout, spawned, client_env
            )
            exit_code, timed_out = await asyncio.shield(running)
            if timed_out:
                await self._housekeeping(*self._remove(name))
                await loop.run_in_executor(self._threads, _reap, spawned[0])
        except BaseException:
            # Cancelled (the job was cancelled, the server is stopping): the container goes, not
            # only the engine's client process, which then ends by itself.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._housekeeping(*self._remove(name)))
            if spawned:
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(self._threads, _reap, spawned[0])
            raise
        finally:
            if env_file is not None:
                env_file.unlink(missing_ok=True)
            if merged and auth_file is not None:
                auth_file.unlink(missing_ok=True)
            if client_env is not None:
                shutil.rmtree(client_env["DOCKER_CONFIG"], ignore_errors=True)
        output = read_capped(log_path, invocation.log_limit)
        error = None
        if timed_out:
            output += f"\n[sluice] container removed after the {invocation.timeout:g} s timeout\n"
        elif exit_code == ENGINE_FAILED:
            error = f"{self.flavour} could not run the container: {_engine_message(output)}"
        return Completed(
            exit_code=None if timed_out or error else exit_code,
            output=output,
            timed_out=timed_out,
            duration=time.monotonic() - started,
            error=error,
        )

    def warm_commands(self, invocation: Invocation, name: str) -> ContainerCommands:
        """A warm container for invocations like this one (see `sluice.executors.warm`): the same
        mounts and limits as `run_argv`, the shell loop as its main process, stdin kept open."""
        workdir = str(invocation.workdir)
        argv = [
            *self._base, "run", "--rm", "-i",
            "--name", name,
            "--label", f"{OWNER_LABEL}={self.owner}",
            "--label", f"{SERVICE_LABEL}={invocation.env.get('OSCAR_SERVICE_NAME', '')}",
            "--pull", PULL_POLICIES[invocation.pull_policy],
            "--volume", f"{workdir}:{workdir}",
            "--workdir", workdir,
            "--log-driver", "none",
            "--entrypoint", "/bin/sh",  # the image's entrypoint would receive the loop as arguments
            "--cpus", f"{invocation.cpus:g}",
            *self._limits(invocation),
        ]  # fmt: skip
        return self._finish(name, argv, None, invocation.pull_secrets, [invocation.image, "-c", SHELL_LOOP])

    def replica_commands(
        self,
        name: str,
        child_options: list[str],
        *,
        image: str,
        env: dict[str, str],
        folder: Path,
        memory_bytes: int | None,
        cpus: float,
        network: bool,
        pull_policy: str,
        pull_secrets: tuple[str, ...] = (),
        gpu: bool = False,
    ) -> ContainerCommands:
        """A handler service's replica in its own image: the replica process
        (`python3 -m sluice.replicas.child`, from Sluice's package mounted read-only) talking over
        the container's stdin and stdout. The image needs Python 3.10 or newer."""
        runtime = Path(__file__).resolve().parents[1]  # the `sluice` package: stdlib-only for replicas
        gpu_options = self._gpu_options() if gpu else []  # before any temporary file is written
        env_file = _write_env_file({**env, "PYTHONPATH": str(REPLICA_RUNTIME), "PYTHONUNBUFFERED": "1"})
        argv = [
            *self._base, "run", "--rm", "-i",
            "--name", name,
            "--label", f"{OWNER_LABEL}={self.owner}",
            "--label", f"{SERVICE_LABEL}={env.get('OSCAR_SERVICE_NAME', '')}",
            "--pull", PULL_POLICIES[pull_policy],
            "--volume", f"{folder}:{folder}",
            "--volume", f"{runtime}:{REPLICA_RUNTIME / 'sluice'}:ro",
            "--workdir", str(folder),
            "--cpus", f"{cpus:g}",
        ]  # fmt: skip
        if memory_bytes:
            argv += ["--memory", f"{memory_bytes}b", "--memory-swap", f"{memory_bytes}b"]
        if not network:
            argv += ["--network", "none"]
        argv += gpu_options
        command = [image, "python3", "-m", "sluice.replicas.child", "--stdio", "1", *child_options]
        return self._finish(name, argv, env_file, pull_secrets, command)

    def exposed_commands(
        self,
        name: str,
        port: int,
        *,
        image: str,
        script: Path,
        env: dict[str, str],
        folder: Path,
        memory_bytes: int | None,
        cpus: float,
        pull_policy: str,
        pull_secrets: tuple[str, ...] = (),
        gpu: bool = False,
    ) -> ContainerCommands:
        """An exposed service's copy in its image: `/bin/sh script` with `$PORT`, the port
        published on 127.0.0.1 only (the proxy is the way in)."""
        gpu_options = self._gpu_options() if gpu else []  # before any temporary file is written
        env_file = _write_env_file({**env, "PORT": str(port)})
        argv = [
            *self._base, "run", "--rm",
            "--name", name,
            "--label", f"{OWNER_LABEL}={self.owner}",
            "--label", f"{SERVICE_LABEL}={env.get('OSCAR_SERVICE_NAME', '')}",
            "--pull", PULL_POLICIES[pull_policy],
            "--publish", f"127.0.0.1:{port}:{port}",
            "--volume", f"{folder}:{folder}",
            "--volume", f"{script}:{script}:ro",
            "--workdir", str(folder),
            "--cpus", f"{cpus:g}",
        ]  # fmt: skip
        if memory_bytes:
            argv += ["--memory", f"{memory_bytes}b", "--memory-swap", f"{memory_bytes}b"]
        argv += gpu_options
        return self._finish(name, argv, env_file, pull_secrets, [image, "/bin/sh", str(script)])

    def _finish(
        self,
        name: str,
        argv: list[str],
        env_file: Path | None,
        pull_secrets: tuple[str, ...],
        command: list[str],
    ) -> ContainerCommands:
        """Registry logins, the command, and how to remove the container: the end of a long-lived
        container's command line (replicas, exposed copies, warm containers)."""
        if env_file is not None:
            argv += ["--env-file", str(env_file)]
        temporary = [env_file] if env_file is not None else []
        try:
            auth_file, merged = auth_file_for(pull_secrets, self.auth_dir, self.auth_file)
        except MissingCredentials:
            if env_file is not None:
                env_file.unlink(missing_ok=True)
            raise
        if merged and auth_file is not None:
            temporary.append(auth_file)
        client_env = _engine_environment()
        if auth_file is not None and self.flavour == "podman":
            argv += ["--authfile", str(auth_file)]
        elif auth_file is not None:
            client_env = self._client_env(auth_file) or client_env
            temporary.append(Path(client_env["DOCKER_CONFIG"]) / "config.json")  # credentials
        return ContainerCommands(
            run=[*argv, *command],
            remove=[*self._base, *self._remove(name)],
            env=client_env,
            temporary=tuple(temporary),
        )

    def _client_env(self, auth_file: Path | None) -> dict[str, str] | None:
        """docker has no --authfile: it reads `config.json` in $DOCKER_CONFIG, pointed at a copy."""
        if auth_file is None or self.flavour != "docker":
            return None
        config = Path(tempfile.mkdtemp(prefix="sluice-docker-"))
        shutil.copy(auth_file, config / "config.json")
        return {**_engine_environment(), "DOCKER_CONFIG": str(config)}

    def run_argv(
        self, invocation: Invocation, name: str, env_file: Path, auth_file: Path | None = None
    ) -> list[str]:
        """The engine command line for one invocation (public so it can be read and tested)."""
        workdir = str(invocation.workdir)
        argv = [
            *self._base,
            "run",
            "--rm",
            "--name", name,
            "--label", f"{OWNER_LABEL}={self.owner}",
            "--label", f"{JOB_LABEL}={invocation.env.get('JOB_UUID', '')}",
            "--label", f"{SERVICE_LABEL}={invocation.env.get('OSCAR_SERVICE_NAME', '')}",
            "--pull", PULL_POLICIES[invocation.pull_policy],
            "--env-file", str(env_file),
            "--volume", f"{workdir}:{workdir}",
            "--workdir", workdir,
            "--log-driver", "none",  # the output is read from the attached streams, kept once
            "--cpus", f"{invocation.cpus:g}",
        ]  # fmt: skip
        argv += self._limits(invocation)
        if auth_file is not None and self.flavour == "podman":
            argv += ["--authfile", str(auth_file)]
        # The command replaces the image's entrypoint, as a Kubernetes `command` does in OSCAR.
        return [*argv, "--entrypoint", invocation.argv[0], invocation.image, *invocation.argv[1:]]

    def _limits(self, invocation: Invocation) -> list[str]:
        """Read-only mounts, memory, network and GPU options of an invocation's container."""
        options: list[str] = []
        for path in invocation.read_only_paths:
            options += ["--volume", f"{path}:{path}:ro"]
        if invocation.memory_bytes:
            # Swap equal to memory: no swap, so the limit is a real ceiling, as in Kubernetes.
            limit = f"{invocation.memory_bytes}b"
            options += ["--memory", limit, "--memory-swap", limit]
        if not invocation.network:
            options += ["--network", "none"]
        if invocation.gpu:
            options += self._gpu_options()
        return options

    def _gpu_options(self) -> list[str]:
        """Raises ExecutorError where the host has no GPU, so a replica fails with the reason."""
        if not self.capabilities.gpus:
            raise ExecutorError(f"enable_gpu is set but {self.flavour} reports no GPU on this host")
        return ["--gpus", "all"] if self.flavour == "docker" else ["--device", "nvidia.com/gpu=all"]

    def _remove(self, *containers: str) -> list[str]:
        """Arguments that kill and remove containers at once (podman's `rm -f` would first wait
        out a 10 s stop timeout; docker's kills straight away and has no `-t`)."""
        return ["rm", "-f", *(["-t", "0"] if self.flavour == "podman" else []), *containers]

    async def _housekeeping(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [*self._base, *args]
        return await asyncio.get_running_loop().run_in_executor(
            self._threads,
            lambda: subprocess.run(
                argv,
                env=_engine_environment(),
                capture_output=True,
                text=True,
                timeout=ENGINE_TIMEOUT,
                check=False,
            ),
        )

    def _host_has_gpus(self) -> bool:
        if self.flavour == "docker":
            return shutil.which("nvidia-container-runtime") is not None
        # podman reaches GPUs through CDI: a spec generated by `nvidia-ctk cdi generate`.
        for folder in CDI_FOLDERS:
            for spec in folder.glob("*") if folder.is_dir() else ():
                with contextlib.suppress(OSError):
                    if "nvidia.com/gpu" in spec.read_text(errors="replace"):
                        return True
        return False


def _engine_environment() -> dict[str, str]:
    """What the engine's client sees of the server's environment: its own settings only. A name
    without a value in an env-file is taken from the client's environment, so the server's
    secrets (SLUICE_*) must not be there."""
    return {name: os.environ[name] for name in ENGINE_VARIABLES if name in os.environ}


def _write_env_file(env: dict[str, str]) -> Path:
    """The container's environment as an engine env-file, readable by this user only.

    An env-file keeps values (secrets) off the engine's command line, which any local user can
    read. It holds one `NAME=value` per line, taken literally: values must not contain line breaks.
    """
    bad = [name for name in env if not ENV_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"not variable names: {bad}")  # the spec checks them; never trust a file format
    fd, path = tempfile.mkstemp(prefix="sluice-env-", suffix=".env")
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{name}={value}\n" for name, value in env.items())
    return Path(path)


def _run_and_wait(
    argv: list[str],
    log_path: Path,
    timeout: float,
    spawned: list[subprocess.Popen[bytes]],
    env: dict[str, str] | None,
) -> tuple[int, bool]:
    """Run the engine's client in a worker thread; True if the timeout came first (still running)."""
    with open(open_for_rewrite(log_path), "wb") as log_file:
        log_file.truncate(0)
        # In the job's folder: conmon drops files (an `oom` marker) in its working directory.
        process = subprocess.Popen(
            argv,
            cwd=log_path.parent,
            env=env if env is not None else _engine_environment(),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    spawned.append(process)
    try:
        return process.wait(timeout), False
    except subprocess.TimeoutExpired:
        return -1, True


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Wait for a client whose container was removed; kill it if it lingers."""
    try:
        process.wait(ENGINE_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _engine_message(output: str) -> str:
    errors = [line.removeprefix("Error: ") for line in output.splitlines() if line.startswith("Error")]
    return errors[-1] if errors else _tail(output)


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    return _tail(result.stderr or result.stdout)


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
