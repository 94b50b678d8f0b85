"""What an executor is: something that runs one prepared invocation and reports how it ended.

The per-invocation contract (staging input, the OSCAR environment, collecting outputs) is written
once in `sluice.runtime.invocation`; an executor only runs the command it is handed. Example::

    executor = ProcessExecutor()
    done = await executor.run(Invocation(argv=["/bin/sh", "script.sh"], env={...}, workdir=job_dir,
                                         timeout=60, memory_bytes=None, cpus=1.0, image="busybox"))
    done.exit_code, done.output
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sluice.executors.slots import Slots

# Every invocation's stdout and stderr, in its working directory; the workspace keeps the file
# from one job to the next (see sluice.storage.files).
LOG_FILE = "output.log"


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    timeout: float
    memory_bytes: int | None
    cpus: float
    image: str = ""
    log_limit: int = 256 * 1024
    read_only_paths: tuple[Path, ...] = ()  # host files the command reads outside its workdir
    network: bool = True
    gpu: bool = False
    pull_policy: str = "if-not-present"  # always | if-not-present | never (executors that pull)
    pull_secrets: tuple[str, ...] = ()  # names of registry logins (OSCAR's image_pull_secrets)


@dataclass(frozen=True)
class Completed:
    exit_code: int | None  # None when the process was killed (timeout or cancel)
    output: str  # stdout and stderr interleaved, capped at the invocation's log_limit
    timed_out: bool = False
    duration: float = 0.0
    # Why the executor could not run the command at all (an image that cannot be pulled, no GPU):
    # a message for the job's error, instead of the script's exit code.
    error: str | None = None


@dataclass(frozen=True)
class Capabilities:
    runs_images: bool = False
    limits_memory: bool = False
    limits_cpu: bool = False
    gpus: bool = False
    warm_scripts: bool = False  # keeps a script service's environment running between calls
    notes: tuple[str, ...] = field(default_factory=tuple)


class Executor(Protocol):
    name: str
    capabilities: Capabilities

    async def run(self, invocation: Invocation, slots: Slots | None = None) -> Completed:
        """Run to completion, holding one of `slots` (if given) only while the command runs.
        Cancelling the awaiting task kills the invocation."""
        ...

    def describe(self) -> str:
        """A short human-readable description, shown in each service's status."""
        ...

    async def start(self) -> None:
        """Prepare before the first job (check the engine, clean up after a killed server)."""
        ...

    async def stop(self) -> None:
        """Release what is kept between jobs (warm containers); running jobs were cancelled."""
        ...

    async def prepare(self, invocation: Invocation, timeout: float) -> bool:
        """Get ready for invocations like this one ahead of the first (`warm_scripts` executors);
        True if something was started."""
        ...

    def forget(self, service: str) -> None:
        """Drop what is kept for a service that was deleted or changed."""
        ...

    async def forget_workspace(self, workdir: Path) -> None:
        """Drop what is kept for a workspace about to serve another service."""
        ...
