"""A real podman for tests and benchmarks: its settings for this machine, and a local busybox image.

No registry is reachable here, so the test image is built from the static busybox binary
(`apt-get install busybox-static`) as a one-layer rootfs and loaded with `podman import`:

    engine = Podman.for_tests(tmp_dir)    # writes containers.conf, builds the image once
    engine.server_env                     # SLUICE_* and CONTAINERS_CONF for `sluice serve`
    engine.containers("io.sluice.owner")  # ids of containers carrying a label, running or not
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

IMAGE = "localhost/sluice-test:busybox2"  # a new tag when APPLETS change: images are built once
# Busybox and Debian's own Python (python3-minimal): for handler services' replicas in containers.
PYTHON_IMAGE = "localhost/sluice-test:python"
# The busybox image with an ENTRYPOINT of its own, which a job's command must replace.
ENTRYPOINT_IMAGE = "localhost/sluice-test:entrypoint"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
SKIPPED_STDLIB = {"test", "idlelib", "tkinter", "ensurepip", "lib2to3", "dist-packages", "site-packages",
                  "__pycache__", "turtledemo", "pydoc_data"}  # fmt: skip
BUSYBOX = Path("/bin/busybox")
APPLETS = (
    "sh",
    "cat",
    "cp",
    "echo",
    "env",
    "head",
    "ls",
    "mkdir",
    "sleep",
    "tr",
    "wc",
    "hostname",
    "ps",
    "httpd",
)
# This sandbox has no systemd and no crun: podman needs runc, cgroupfs and no default ulimits.
ENGINE_ARGS = ("--runtime", "/usr/sbin/runc", "--cgroup-manager", "cgroupfs")
CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"


@dataclass(frozen=True)
class Podman:
    conf: Path

    @classmethod
    def for_tests(cls, folder: Path) -> Podman:
        missing = [tool for tool in ("podman", "/usr/sbin/runc", str(BUSYBOX)) if not shutil.which(tool)]
        if missing:
            raise RuntimeError(
                f"missing {missing}: apt-get install podman runc busybox-static (make test does)"
            )
        conf = folder / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        engine = cls(conf)
        if engine.run("image", "exists", IMAGE).returncode != 0:
            engine.build_image()
        return engine

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    @property
    def server_env(self) -> dict[str, str]:
        """What `sluice serve` needs to run its jobs in containers with this podman."""
        return {
            "CONTAINERS_CONF": str(self.conf),
            "SLUICE_EXECUTOR": "container",
            "SLUICE_CONTAINER_ENGINE": "podman",
            "SLUICE_CONTAINER_ENGINE_ARGS": " ".join(ENGINE_ARGS),
        }

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *ENGINE_ARGS, *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def build_image(self) -> None:
        with tempfile.TemporaryDirectory() as work:
            rootfs = Path(work) / "rootfs"
            for folder in ("bin", "tmp", "proc", "sys", "dev", "etc"):
                (rootfs / folder).mkdir(parents=True)
            shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
            for applet in APPLETS:
                (rootfs / "bin" / applet).symlink_to("busybox")
            (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
            archive = Path(work) / "rootfs.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(rootfs, arcname=".")
            self.run("import", str(archive), IMAGE, check=True)

    def ensure_python_image(self) -> str:
        """An image with Debian's Python 3.11 and its standard library, built from this host's
        files (no registry here): enough for a replica of a handler service."""
        if self.run("image", "exists", PYTHON_IMAGE).returncode == 0:
            return PYTHON_IMAGE
        if not SYSTEM_PYTHON.is_file():
            raise RuntimeError(f"{SYSTEM_PYTHON} missing: apt-get install python3-minimal (make test does)")
        stdlib = Path("/usr/lib/python3.11")
        with tempfile.TemporaryDirectory() as work:
            rootfs = Path(work) / "rootfs"
            for folder in ("bin", "tmp", "proc", "sys", "dev", "etc", "usr/bin"):
                (rootfs / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
            for applet in APPLETS:
                (rootfs / "bin" / applet).symlink_to("busybox")
            (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
            shutil.copy2(SYSTEM_PYTHON, rootfs / "usr/bin/python3.11")
            (rootfs / "usr/bin/python3").symlink_to("python3.11")
            shutil.copytree(
                stdlib, rootfs / stdlib.relative_to("/"), ignore=lambda _, names: SKIPPED_STDLIB & set(names)
            )
            binaries = [SYSTEM_PYTHON, *sorted((stdlib / "lib-dynload").glob("*.so"))]
            for library in _shared_libraries(binaries):
                dest = rootfs / library.relative_to("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(library.resolve(), dest)
            archive = Path(work) / "rootfs.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(rootfs, arcname=".")
            self.run("import", str(archive), PYTHON_IMAGE, check=True)
        return PYTHON_IMAGE

    def ensure_entrypoint_image(self) -> str:
        if self.run("image", "exists", ENTRYPOINT_IMAGE).returncode != 0:
            with tempfile.TemporaryDirectory() as work:
                containerfile = Path(work) / "Containerfile"
                containerfile.write_text(f'FROM {IMAGE}\nENTRYPOINT ["/bin/echo", "the entrypoint ran"]\n')
                self.run("build", "-q", "-t", ENTRYPOINT_IMAGE, "-f", str(containerfile), work, check=True)
        return ENTRYPOINT_IMAGE

    def containers(self, label: str) -> list[str]:
        """Ids of the containers (running or stopped) that carry `label` (a key or key=value)."""
        listed = self.run("ps", "-aq", "--filter", f"label={label}", check=True)
        return listed.stdout.split()


def _shared_libraries(binaries: list[Path]) -> set[Path]:
    """Every shared library these binaries load, as `ldd` resolves them on this host."""
    found: set[Path] = set()
    for binary in binaries:
        listed = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
        for line in listed.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts else ""
            if path.startswith("/"):
                found.add(Path(path))
    return found
