"""Files rewritten in place, job after job, instead of deleted and created again.

Creating a file costs far more than rewriting one where many files were deleted shortly before:
on ext4 without a journal (as on the machines we measure on) every new inode is checked against
each recently freed one, and 60% of the server's CPU per job went to it. A workspace therefore
keeps its log and its staged input between jobs and rewrites them through these helpers.

A script may have left anything under these names (a symlink to a file it cannot reach, a
second hard link to a stored object, a FIFO that would block an open, a setuid bit or write
access for other users): a file is reused only when it is a plain file of this process's user
with no other name and no such permission; anything else is removed and a new file created.
This guards the last component of a path only: the folders above it are the caller's to trust
(a workspace refuses scratch folders a script replaced or whose permissions it changed). The
last job's processes are ended before (their session, or their container); one that left its
session on the host could still hold the file open: the process executor isolates nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from stat import S_ISDIR, S_ISGID, S_ISREG, S_ISUID, S_ISVTX, S_IWOTH

_REUSE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# Permissions a script may have given its file that a rewrite would carry over to the next job.
_ADDED_BY_A_SCRIPT = S_ISUID | S_ISGID | S_ISVTX | S_IWOTH
OWN_UID = os.geteuid()


def is_plain_file(stat: os.stat_result) -> bool:
    """A regular file of this process's user that only one name points to, without setuid,
    setgid, sticky or write-for-others bits: rewriting it changes nothing else and carries
    nothing a script set over to the next job."""
    return (
        S_ISREG(stat.st_mode)
        and stat.st_nlink == 1
        and stat.st_uid == OWN_UID
        and not stat.st_mode & _ADDED_BY_A_SCRIPT
    )


def open_for_rewrite(path: Path | str) -> int:
    """A descriptor that writes `path` from its start, on its old inode when that is a plain file.

    The caller writes, then calls `os.ftruncate(fd, length)` to drop what is left of the old content.
    """
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return os.open(path, _CREATE, 0o644)
    if is_plain_file(before):
        with contextlib.suppress(OSError):
            fd = os.open(path, _REUSE)
            try:
                after = os.fstat(fd)
                if after.st_ino == before.st_ino and is_plain_file(after):  # not swapped meanwhile
                    os.set_blocking(fd, True)
                    return fd
            except OSError:
                pass
            os.close(fd)
    remove(path)
    return os.open(path, _CREATE, 0o644)


def rewrite(path: Path | str, data: bytes) -> None:
    """`path` holds exactly `data` afterwards (see `open_for_rewrite`)."""
    fd = open_for_rewrite(path)
    try:
        write_all(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def copy_into(source: Path | str, path: Path | str) -> int:
    """Copy `source`'s content into `path` (see `open_for_rewrite`); returns the bytes copied."""
    # A bare descriptor: Python's file object would add three system calls (fstat, isatty, lseek).
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = open_for_rewrite(path)
        try:
            copied = 0
            while sent := os.sendfile(fd, src, None, 1 << 30):  # in the kernel, file to file
                copied += sent
            os.ftruncate(fd, copied)
        finally:
            os.close(fd)
    finally:
        os.close(src)
    return copied


def remove(path: Path | str) -> None:
    """Remove whatever `path` names (a folder with its content), if anything."""
    try:
        if S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
