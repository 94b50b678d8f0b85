"""Executors run prepared invocations; chosen by short name, imported lazily."""

from __future__ import annotations

import difflib
import importlib

from sluice.errors import InvalidInput
from sluice.executors.base import Capabilities, Completed, Executor, Invocation

EXECUTORS = {"process": "sluice.executors.process:ProcessExecutor"}


def load_executor(name: str) -> Executor:
    target = EXECUTORS.get(name)
    if target is None:
        close = difflib.get_close_matches(name, EXECUTORS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise InvalidInput(f"No executor '{name}'.{hint} Known: {', '.join(EXECUTORS)}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["Capabilities", "Completed", "Executor", "Invocation", "load_executor"]
