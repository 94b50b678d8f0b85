"""Putting stored files on the disk in groups (sluice.storage.durable.sync_files)."""

from __future__ import annotations

import os
from pathlib import Path

from sluice.storage import durable


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_many_files_in_several_folders_and_some_gone(tmp_path: Path) -> None:
    """More files than it opens at once, in two folders, two of them gone meanwhile (deleted by
    a user, or replaced under the same name): each existing one is synced, none is left open."""
    paths = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for index in range(durable.OPEN_AT_ONCE // 2 + 10):
            path = tmp_path / folder / f"f{index}.txt"
            path.write_text(f"upload {index}\n")
            paths.append(str(path))
    (tmp_path / "a" / "f0.txt").unlink()
    paths.append(str(tmp_path / "a" / "f0.txt" / "under-a-file"))  # a parent that is not a folder
    before = open_descriptors()

    durable.sync_files(paths)

    assert open_descriptors() == before
    assert (tmp_path / "b" / "f3.txt").read_text() == "upload 3\n"


def test_a_link_is_skipped_not_followed(tmp_path: Path) -> None:
    """A stored object is never a link; if one stands where an upload was, it is skipped, not an
    error, and what it points to is not touched."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("not ours\n")
    link = tmp_path / "upload.txt"
    link.symlink_to(target)

    durable.sync_files([str(link)])

    assert target.read_text() == "not ours\n"
