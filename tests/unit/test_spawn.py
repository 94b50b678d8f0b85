"""Scripts started through libc's posix_spawn with the GIL released (sluice.executors.spawn), and
through the `os.posix_spawn` fallback: real processes, their sessions, their output."""

from __future__ import annotations

import errno
import os
import resource
import sys
import threading
import time
from pathlib import Path

import pytest

from sluice.executors import spawn
from sluice.executors.spawn import spawn_in_new_session


@pytest.fixture(params=["libc", "os.posix_spawn"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways: libc through ctypes (Linux), and the fallback used where libc lacks it."""
    if request.param == "os.posix_spawn":
        monkeypatch.setattr(spawn, "_LIBC", None)
    else:  # on Linux (these machines) libc's way must be the one in use
        assert spawn._LIBC is not None and spawn._NEW_SESSION is not None
    return str(request.param)


def run_to_end(tmp_path: Path, script: str, env: dict[str, str]) -> tuple[int, str]:
    """(exit code, what it wrote to stdout and stderr), once it was seen to lead its own session."""
    log = tmp_path / "log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        pid = spawn_in_new_session("/bin/sh", ["/bin/sh", "-c", script], env, fd)
    finally:
        os.close(fd)
    session = os.getsid(pid)  # the child still exists (a zombie at worst) until it is reaped
    _, status = os.waitpid(pid, 0)
    assert session == pid, "the script leads a session of its own"
    return os.waitstatus_to_exitcode(status), log.read_text()


def test_the_script_gets_its_arguments_environment_and_output_file(way: str, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "GREETING": "héllo wörld", "EMPTY": ""}
    code, output = run_to_end(tmp_path, 'echo "$GREETING[$EMPTY]"; echo oops >&2; exit 7', env)
    assert code == 7
    assert output == "héllo wörld[]\noops\n"


def test_the_script_reads_nothing_from_the_servers_stdin(way: str, tmp_path: Path) -> None:
    """Its stdin is /dev/null, whatever the server's is: here a pipe with a line waiting."""
    read_end, write_end = os.pipe()
    os.write(write_end, b"leaked line\n")
    os.close(write_end)
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        _, output = run_to_end(tmp_path, 'read -r line && echo "read: $line" || echo "nothing"', {})
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(read_end)
    assert output == "nothing\n"


def test_a_bad_environment_is_refused_as_os_posix_spawn_refuses_it(way: str, tmp_path: Path) -> None:
    """C strings end at NUL: a value would be cut short silently, a name with '=' split."""
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT)
    try:
        for env in ({"A": "x\0y"}, {"A=B": "x"}, {"": "x"}):
            with pytest.raises(ValueError):
                spawn_in_new_session("/bin/sh", ["/bin/sh", "-c", "true"], env, fd)
        with pytest.raises(ValueError):
            spawn_in_new_session("/bin/sh", ["/bin/sh", "-c", "true\0"], {}, fd)
    finally:
        os.close(fd)


def test_a_bad_descriptor_is_reported_with_its_error(way: str) -> None:
    with pytest.raises(OSError) as raised:
        spawn_in_new_session("/bin/sh", ["/bin/sh", "-c", "true"], {}, -1)
    assert raised.value.errno == errno.EBADF


def test_only_the_given_environment_reaches_the_script(way: str, tmp_path: Path) -> None:
    os.environ["SLUICE_TEST_SECRET"] = "must-not-leak"
    try:
        _, output = run_to_end(tmp_path, "env", {"ONLY": "this"})
    finally:
        del os.environ["SLUICE_TEST_SECRET"]
    assert "ONLY=this" in output.splitlines()
    assert "must-not-leak" not in output


def test_a_missing_program_raises_its_error(way: str, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as raised:
            spawn_in_new_session(str(tmp_path / "no-such-shell"), ["x"], {}, fd)
    finally:
        os.close(fd)
    assert raised.value.errno == errno.ENOENT


def test_other_threads_run_while_a_script_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the module: `os.posix_spawn` holds the GIL until the child has exec'd, so a
    thread waiting for it counts nothing meanwhile; libc's, through ctypes, lets it go.

    The switch interval is raised so that only a released GIL lets the spinner in (never a
    forced switch); the spinner gives the GIL back after each step so the spawner can go on."""
    assert sys.platform.startswith("linux") and spawn._LIBC is not None and spawn._NEW_SESSION is not None
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        with_libc = _spawns_the_spinner_advanced_in(tmp_path)
        monkeypatch.setattr(spawn, "_LIBC", None)
        with_os_posix_spawn = _spawns_the_spinner_advanced_in(tmp_path)
    finally:
        sys.setswitchinterval(interval)
    assert with_os_posix_spawn == 0, "the control: os.posix_spawn holds the GIL"
    assert with_libc >= 10, f"the spinner ran during only {with_libc} of 50 starts"


def _spawns_the_spinner_advanced_in(tmp_path: Path, spawns: int = 50) -> int:
    counted = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal counted
        while not stop.is_set():
            counted += 1
            time.sleep(0)  # lets the GIL go: the spawning thread is never kept waiting for it

    spinner = threading.Thread(target=spin)
    spinner.start()
    advanced = 0
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT)
    try:
        for _ in range(spawns):
            before = counted
            pid = spawn_in_new_session("/bin/sh", ["/bin/sh", "-c", "exit 0"], {}, fd)
            advanced += counted != before
            os.waitpid(pid, 0)
    finally:
        stop.set()
        spinner.join()
        os.close(fd)
    return advanced


def test_a_descriptor_number_used_again_writes_to_its_new_file(way: str, tmp_path: Path) -> None:
    """The libc way keeps its file actions per descriptor number: they name the number, so a
    later file opened under the same number gets its own script's output, and a descriptor too
    high to keep them for works too."""
    outputs = []
    for name in ("first", "second", "third"):
        fd = os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT)
        try:
            pid = spawn_in_new_session("/bin/sh", ["/bin/sh", "-c", f"echo {name}"], {}, fd)
            os.waitpid(pid, 0)
            outputs.append(fd)
        finally:
            os.close(fd)
    assert len(set(outputs)) == 1, "the test needs the same number each time"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard > 1100, "this machine allows no descriptor above 1024"
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (max(soft, 1101) if soft != resource.RLIM_INFINITY else soft, hard)
    )
    try:
        opened = os.open(tmp_path / "high", os.O_WRONLY | os.O_CREAT)
        high = os.dup2(opened, 1100)
        os.close(opened)
        try:
            pid = spawn_in_new_session("/bin/sh", ["/bin/sh", "-c", "echo high"], {}, high)
            os.waitpid(pid, 0)
        finally:
            os.close(high)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [(tmp_path / n).read_text() for n in ("first", "second", "third", "high")] == [
        "first\n",
        "second\n",
        "third\n",
        "high\n",
    ]
    assert high not in spawn._ACTIONS
