"""Putting stored files on the disk in groups (sluice.storage.durable.sync_files): which files and
folders it syncs, seen by recording what `fdatasync` and `fsync` are called on (a power cut
cannot be staged here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sluice.storage import durable


class Recorded:
    """The inodes fdatasync'd and fsync'd, the real calls made all the same."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.data: list[int] = []
        self.full: list[int] = []
        real_fdatasync, real_fsync = os.fdatasync, os.fsync

        def fdatasync(descriptor: int) -> None:
            self.data.append(os.fstat(descriptor).st_ino)
            real_fdatasync(descriptor)

        def fsync(descriptor: int) -> None:
            self.full.append(os.fstat(descriptor).st_ino)
            real_fsync(descriptor)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "fsync", fsync)


def inode(path: Path) -> int:
    return path.stat().st_ino


def test_each_file_and_every_folder_up_to_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More files than it opens at once, in folders of different depths, two gone meanwhile:
    each existing file is synced once, each folder from its own up to the root once, and no
    descriptor stays open."""
    root = tmp_path / "buckets"
    files = []
    for folder in ("b1/in", "b1/in/deep/er", "b2"):
        (root / folder).mkdir(parents=True)
        for index in range(durable.OPEN_AT_ONCE // 2 + 3):
            path = root / folder / f"f{index}.txt"
            path.write_text(f"upload {index}\n")
            files.append(path)
    gone = root / "b2" / "f0.txt"
    gone.unlink()
    not_a_folder = root / "b2" / "f1.txt" / "child"
    recorded = Recorded(monkeypatch)
    before = len(os.listdir("/proc/self/fd"))

    durable.sync_files([str(p) for p in files] + [str(not_a_folder)], str(root))

    assert len(os.listdir("/proc/self/fd")) == before
    assert sorted(recorded.data) == sorted(inode(p) for p in files if p != gone)
    folders = ["b1/in/deep/er", "b1/in/deep", "b1/in", "b1", "b2", "."]
    assert sorted(recorded.full) == sorted(inode(root / f) for f in folders)
    assert inode(tmp_path) not in recorded.full  # nothing above the root


def test_a_link_is_skipped_not_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored object is never a link; if one stands where an upload was, it is skipped, not an
    error, and what it points to is not synced."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("not ours\n")
    (tmp_path / "bucket").mkdir()
    link = tmp_path / "bucket" / "upload.txt"
    link.symlink_to(target)
    recorded = Recorded(monkeypatch)

    durable.sync_files([str(link)], str(tmp_path / "bucket"))

    assert recorded.data == []
