"""Scratch folders for invocations, reused from one job to the next.

Creating and removing folders costs far more than the platform's own work per job on some disks
(0.4 ms per mkdir was measured on these machines), so each execution slot keeps one workspace
and only the files a job leaves are removed. Its log and its input file are kept too and
rewritten by the next job (sluice.storage.files says why): the input file stays in the input
folder between jobs and is renamed to the next job's input name, one rename (7 us here) rather
than two through the workspace's root.
Scripts are written once per content.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from stat import S_ISDIR

from sluice.executors.base import LOG_FILE
from sluice.storage.files import OWN_UID, is_plain_file


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.input_dir = root / "input"
        self.output_dir = root / "output"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(exist_ok=True)
        # Plain strings for the per-job clean-up: pathlib's overhead showed in profiles.
        self._folders = (str(self.input_dir), str(self.output_dir))
        self._input_prefix = self._folders[0] + os.sep
        self._root = str(root)
        self._log = os.path.join(self._root, LOG_FILE)
        # The last job's input file, left in the input folder for the next job to rewrite (a new
        # file per job cost more than the rest of the job's platform work: sluice.storage.files).
        self.spare: str | None = None
        self.affinity: str | None = None  # the service it last served (its warm container mounts it)

    def input_path(self, name: str) -> Path:
        """Where an input named `name` is staged: the last job's input file, renamed, when one
        was kept (write it with sluice.storage.files, which reuses the file)."""
        path = os.path.join(self._folders[0], name)
        spare, self.spare = self.spare, None
        if spare is not None and spare != path:
            try:
                os.rename(spare, path)
            except OSError:  # a name too long, say: the old content must not stay behind
                with contextlib.suppress(OSError):
                    os.unlink(spare)
        return Path(path)

    def clear(self) -> None:
        """Remove what the last job left; keep the folders, the log and one input file.

        Raises OSError if a script replaced a scratch folder (say, by a symlink elsewhere): the
        pool then discards this workspace instead of emptying whatever the link points to.
        """
        for folder in (*self._folders, self._root):
            if not _our_folder(os.lstat(folder)):
                raise OSError(f"{folder} is no longer a plain folder of ours")
        kept_spare = None
        for folder in (*self._folders, self._root):
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.path in self._folders:
                        continue
                    if entry.path == self._log and is_plain_file(entry.stat(follow_symlinks=False)):
                        continue
                    if kept_spare is None and self._spare_candidate(entry):
                        kept_spare = entry.path
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
        self.spare = kept_spare

    def _spare_candidate(self, entry: os.DirEntry[str]) -> bool:
        """A plain file right in the input folder: the next job's input can be written over it."""
        return (
            entry.path.startswith(self._input_prefix)
            and entry.is_file(follow_symlinks=False)
            and is_plain_file(entry.stat(follow_symlinks=False))
        )


def _our_folder(stat: os.stat_result) -> bool:
    """A folder (not a link to one) of this process's user that it may still enter and change:
    a script may have taken its own permissions away (`chmod 555`), which would leave its files
    where no later job could replace them."""
    return S_ISDIR(stat.st_mode) and stat.st_uid == OWN_UID and stat.st_mode & 0o700 == 0o700


def end_orphans(root: Path) -> int:
    """Kill the scripts a killed server left running in its workspaces; returns how many.

    They are found by working directory (a script starts in its workspace), so nothing outside
    `root` is touched and no per-job bookkeeping is needed. Each one's process group goes.
    """
    ended = 0
    own_group = os.getpgid(0)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if Path(os.readlink(proc / "cwd")).is_relative_to(root):
                group = os.getpgid(int(proc.name))
                if group != own_group:  # never this server, whatever its own working directory
                    os.killpg(group, signal.SIGKILL)
                    ended += 1
    return ended


MAX_WORKSPACES = 64  # past this many, a free workspace of another service is reassigned


class WorkspacePool:
    """Workspaces for invocations, each preferably reused by the service it last served.

    `on_reassign(root)`, if given, is awaited before a workspace goes to another service: the
    container executor removes the warm containers that mount it, so no container of one service
    ever sees another's files.
    """

    def __init__(self, root: Path, on_reassign: Callable[[Path], Awaitable[None]] | None = None) -> None:
        self.root = root
        self._on_reassign = on_reassign
        end_orphans(root)
        shutil.rmtree(root, ignore_errors=True)  # whatever a stopped server left is stale
        self._scripts = root / "scripts"
        self._scripts.mkdir(parents=True)
        self._free: list[Workspace] = []
        self._created = 0
        self._script_paths: dict[str, Path] = {}  # content -> its file, written already

    async def acquire(self, affinity: str | None = None) -> Workspace:
        """A free workspace that last served `affinity` (a service's name: a warm container of
        that service may have it mounted), else a new one, else (MAX_WORKSPACES made) the
        longest unused, taken from its last service."""
        chosen = next((w for w in reversed(self._free) if w.affinity == affinity), None)
        if chosen is not None:
            self._free.remove(chosen)
        elif self._created < MAX_WORKSPACES or not self._free:
            self._created += 1
            chosen = Workspace(self.root / f"slot-{self._created}")
        else:
            chosen = self._free.pop(0)  # the longest unused, from another service
            if self._on_reassign is not None and chosen.affinity is not None:
                await self._on_reassign(chosen.root)
        chosen.affinity = affinity
        return chosen

    def release(self, workspace: Workspace) -> None:
        try:
            workspace.clear()
        except OSError:
            shutil.rmtree(workspace.root, ignore_errors=True)  # unusable: let a fresh one replace it
            return
        self._free.append(workspace)

    def script(self, content: str) -> Path:
        """A file holding `content`, written once and shared by every job of the same script."""
        known = self._script_paths.get(content)
        if known is not None and os.path.exists(known):  # a script may have removed its own file
            return known
        if len(self._script_paths) >= MAX_WORKSPACES * 16:  # services edited many times
            self._script_paths.clear()
        self._script_paths[content] = path = self._write_script(content)
        return path

    def _write_script(self, content: str) -> Path:
        digest = hashlib.sha256(content.encode()).hexdigest()[:24]
        path = self._scripts / f"{digest}.sh"
        if not path.exists():
            staging = path.with_suffix(f".{os.getpid()}.tmp")
            staging.write_text(content)
            os.replace(staging, path)
        return path
