"""Files put on the disk in groups: what an acknowledged upload needs, done for many at once.

`fdatasync` one file after the other waits for each file's write in turn: 4.2 ms for 16 small
files on our machines' disk. Asking the kernel to start writing all of them first
(`sync_file_range`, Linux) and then waiting for each took 1.8 ms; a thread per file, 2.9 ms.
`syncfs` would be cheaper still but waits for everything else written to the filesystem too.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Iterable
from ctypes import c_int, c_int64, c_uint
from typing import Any

SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writing the range's dirty pages, do not wait
# No longer a file of ours: deleted or replaced meanwhile, or under a parent that is no folder,
# or a link (never followed: a stored object is never one).
GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
OPEN_AT_ONCE = 64  # descriptors held at a time: a busy server has many sockets open too


def _load_sync_file_range() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [c_int, c_int64, c_int64, c_uint]
    function.restype = c_int
    return function


_SYNC_FILE_RANGE = _load_sync_file_range()


def sync_files(paths: Iterable[str], root: str) -> None:
    """Put each file's content on the disk, and its name in each folder from its own up to `root`
    (a folder made for it has its own name to keep): after this, a power cut loses none of them.
    A file or folder gone meanwhile (deleted, or replaced by a newer upload) is skipped."""
    pending = list(paths)
    folders: set[str] = set()
    for start in range(0, len(pending), OPEN_AT_ONCE):
        for folder in _sync_together(pending[start : start + OPEN_AT_ONCE]):
            while folder.startswith(root) and folder not in folders:
                folders.add(folder)
                folder = os.path.dirname(folder)
    for folder in sorted(folders, key=len, reverse=True):  # the deepest first
        descriptor = _open_if_there(folder, os.O_DIRECTORY)
        if descriptor is None:
            continue
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _sync_together(paths: list[str]) -> set[str]:
    """Start writing every file, then wait for each; returns the folders of those synced."""
    descriptors: list[int] = []
    folders: set[str] = set()
    try:
        for path in paths:
            descriptor = _open_if_there(path, os.O_NOFOLLOW)
            if descriptor is None:
                continue
            descriptors.append(descriptor)
            folders.add(os.path.dirname(path))
            if _SYNC_FILE_RANGE is not None:
                _SYNC_FILE_RANGE(descriptor, 0, 0, SYNC_FILE_RANGE_WRITE)  # a hint: errors show below
        for descriptor in descriptors:
            os.fdatasync(descriptor)
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
    return folders


def _open_if_there(path: str, flags: int) -> int | None:
    """A read-only descriptor of `path`, or None if it is no longer there (see GONE)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    except OSError as exc:
        if exc.errno in GONE:
            return None
        raise
