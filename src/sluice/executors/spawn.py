"""Start a job's script without holding the interpreter lock while it starts.

`os.posix_spawn` keeps the GIL for the whole vfork + exec: the parent waits until the child has
exec'd, 0.5-1.5 ms per script in a busy server here, and for that time the database thread and
the upload threads wait too. libc's own `posix_spawn` called through ctypes releases the GIL
(ctypes does around every foreign call).

Where libc has no `posix_spawn` with the attributes needed (not Linux), `os.posix_spawn` is the
fallback: correct, only holding the lock longer.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping, Sequence
from ctypes import POINTER, byref, c_char_p, c_int, c_short, c_uint64, c_void_p

# posix_spawn's opaque structures: 80 and 336 bytes in glibc on x86_64; room for any libc, and
# aligned as a C compiler would (8-byte words).
_STRUCT_WORDS = 128
# <spawn.h> on Linux (glibc and musl alike); Python's os module does not export it.
_POSIX_SPAWN_SETSID = 0x80
_DEVNULL = os.fsencode(os.devnull)


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for name in (
            "posix_spawn",
            "posix_spawnattr_init",
            "posix_spawnattr_setflags",
            "posix_spawn_file_actions_init",
            "posix_spawn_file_actions_addopen",
            "posix_spawn_file_actions_adddup2",
            "posix_spawn_file_actions_destroy",
        ):
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    libc.posix_spawn.argtypes = [
        POINTER(c_int),
        c_char_p,
        c_void_p,
        c_void_p,
        POINTER(c_char_p),
        POINTER(c_char_p),
    ]
    libc.posix_spawn.restype = c_int
    libc.posix_spawn_file_actions_init.argtypes = [c_void_p]
    libc.posix_spawn_file_actions_destroy.argtypes = [c_void_p]
    libc.posix_spawn_file_actions_addopen.argtypes = [c_void_p, c_int, c_char_p, c_int, c_int]
    libc.posix_spawn_file_actions_adddup2.argtypes = [c_void_p, c_int, c_int]
    return libc


_LIBC = _load_libc()


def _opaque_struct() -> ctypes.Array[c_uint64]:
    return (c_uint64 * _STRUCT_WORDS)()


def _new_session_attributes(libc: ctypes.CDLL) -> ctypes.Array[c_uint64] | None:
    attributes = _opaque_struct()
    if libc.posix_spawnattr_init(attributes) or libc.posix_spawnattr_setflags(
        attributes, c_short(_POSIX_SPAWN_SETSID)
    ):
        return None  # a libc without sessions in posix_spawn: os.posix_spawn, then
    return attributes


# Read-only once made, so every thread may share it.
_NEW_SESSION = _new_session_attributes(_LIBC) if _LIBC is not None else None


def spawn_in_new_session(path: str, argv: Sequence[str], env: Mapping[str, str], output_fd: int) -> int:
    """Start `path` in a session of its own (a kill of its group reaches all it starts), stdin
    from /dev/null, stdout and stderr to `output_fd`. Returns its pid; raises OSError when it
    could not start."""
    if _LIBC is None or _NEW_SESSION is None:
        return os.posix_spawn(
            path,
            list(argv),
            dict(env),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, output_fd, 1),
                (os.POSIX_SPAWN_DUP2, output_fd, 2),
            ],
            setsid=True,
        )
    args: list[bytes | None] = [_c_string(arg) for arg in argv]
    args.append(None)  # argv and envp end with a null pointer
    environ: list[bytes | None] = [_variable(name, value) for name, value in env.items()]
    environ.append(None)
    actions = _ACTIONS.get(output_fd)
    kept = actions is not None
    if actions is None:
        actions, kept = _output_actions(_LIBC, output_fd)
    pid = c_int()
    try:
        error = _LIBC.posix_spawn(
            byref(pid),
            os.fsencode(path),
            actions,
            _NEW_SESSION,
            (c_char_p * len(args))(*args),
            (c_char_p * len(environ))(*environ),
        )
    finally:
        if not kept:  # a descriptor too high to keep them for, or another thread's were kept
            _LIBC.posix_spawn_file_actions_destroy(actions)
    _check(error, path)
    return pid.value


# The file actions for each output descriptor, made once: a job's log gets the same descriptor
# number job after job, and making them costs five foreign calls and three system calls
# (libc checks each descriptor against the process's limit). Read-only once made.
_ACTIONS: dict[int, ctypes.Array[c_uint64]] = {}
_MAX_KEPT_FD = 1024


def _output_actions(libc: ctypes.CDLL, output_fd: int) -> tuple[ctypes.Array[c_uint64], bool]:
    """New file actions: stdin from /dev/null, stdout and stderr to `output_fd`, and whether
    they were kept in `_ACTIONS` (never replaced once there: another thread may be using them)."""
    actions = _opaque_struct()
    # Like posix_spawn, these return an error number (errno is not set).
    _check(libc.posix_spawn_file_actions_init(actions))
    try:
        _check(libc.posix_spawn_file_actions_addopen(actions, 0, _DEVNULL, os.O_RDONLY, 0))
        _check(libc.posix_spawn_file_actions_adddup2(actions, output_fd, 1))
        _check(libc.posix_spawn_file_actions_adddup2(actions, output_fd, 2))
    except BaseException:
        libc.posix_spawn_file_actions_destroy(actions)
        raise
    kept = 0 <= output_fd < _MAX_KEPT_FD and _ACTIONS.setdefault(output_fd, actions) is actions
    return actions, kept


def _check(error: int, path: str | None = None) -> None:
    if error:
        raise OSError(error, os.strerror(error), path)


def _c_string(text: str) -> bytes:
    """As `os.posix_spawn` checks: C would silently cut a string at an embedded NUL."""
    encoded = os.fsencode(text)
    if b"\0" in encoded:
        raise ValueError(f"embedded null byte in {text!r}")
    return encoded


def _variable(name: str, value: str) -> bytes:
    if not name or "=" in name:
        raise ValueError(f"illegal environment variable name {name!r}")
    return _c_string(f"{name}={value}")
