"""Executors run prepared invocations: on the host (`process`) or in the service's image (`container`)."""

from __future__ import annotations

import hashlib
import shlex

from sluice.errors import InvalidInput
from sluice.executors.base import Capabilities, Completed, Executor, Invocation
from sluice.settings import Settings


def load_executor(settings: Settings) -> Executor:
    """The executor the settings ask for; `auto` picks containers when an engine is configured."""
    kind = settings.executor
    if kind == "auto":
        kind = "container" if settings.container_engine else "process"
    if kind == "process":
        from sluice.executors.process import ProcessExecutor

        return ProcessExecutor(script_locale=settings.script_locale)
    from sluice.executors.container import ContainerExecutor

    try:
        engine_args = tuple(shlex.split(settings.container_engine_args))
    except ValueError as exc:
        raise InvalidInput(f"container_engine_args: {exc}") from None
    # Containers are labelled with this server's data dir, so a restart finds its own strays only.
    owner = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:16]
    return ContainerExecutor(
        settings.container_engine or "podman",
        engine_args=engine_args,
        owner=owner,
        auth_file=settings.registry_auth_file,
        auth_dir=settings.registry_auth_dir,
        warm_limit=settings.warm_containers,
        warm_idle=settings.warm_container_idle,
        state_dir=settings.data_dir / "containers",
    )


__all__ = ["Capabilities", "Completed", "Executor", "Invocation", "load_executor"]
