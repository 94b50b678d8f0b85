"""Scripts started through libc's posix_spawn with the GIL released (sluice.executors.spawn), and
through the `os.posix_spawn` fallback: real processes, their sessions, their output."""

from __future__ import annotations

import errno
import os
import sys
import threading
from pathlib import Path

import pytest

from sluice.executors import spawn
from sluice.executors.spawn import spawn_in_new_session


@pytest.fixture(params=["libc", "os.posix_spawn"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways: libc through ctypes (Linux), and the fallback used where libc lacks it."""
    if request.param == "os.posix_spawn":
        monkeypatch.setattr(spawn, "_LIBC", None)
    return str(request.param)


def run_to_end(tmp_path: Path, script: str, env: dict[str, str]) -> tuple[int, int, str]:
    """(session id seen by the script, exit code, what it wrote to stdout and stderr)."""
    log = tmp_path / "log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        pid = spawn_in_new_session("/bin/sh", ["/bin/sh", "-c", script], env, fd)
    finally:
        os.close(fd)
    session = os.getsid(pid)  # the child still exists (a zombie at worst) until it is reaped
    _, status = os.waitpid(pid, 0)
    assert session == pid, "the script leads a session of its own"
    return session, os.waitstatus_to_exitcode(status), log.read_text()


def test_the_script_gets_its_arguments_environment_and_output_file(way: str, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "GREETING": "héllo wörld", "EMPTY": ""}
    _, code, output = run_to_end(
        tmp_path, 'echo "$GREETING[$EMPTY]"; echo oops >&2; read -r line || echo "no stdin"; exit 7', env
    )
    assert code == 7
    assert output == "héllo wörld[]\noops\nno stdin\n"


def test_only_the_given_environment_reaches_the_script(way: str, tmp_path: Path) -> None:
    os.environ["SLUICE_TEST_SECRET"] = "must-not-leak"
    try:
        _, _, output = run_to_end(tmp_path, "env", {"ONLY": "this"})
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


def test_other_threads_run_while_a_script_starts(tmp_path: Path) -> None:
    """The point of the module: `os.posix_spawn` holds the GIL until the child has exec'd (a
    spinning thread counts nothing meanwhile); libc's, through ctypes, lets it go."""
    assert sys.platform.startswith("linux") and spawn._LIBC is not None
    counted = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal counted
        while not stop.is_set():
            counted += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    during_spawns = 0
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT)
    try:
        for _ in range(50):
            before = counted
            pid = spawn_in_new_session("/bin/sh", ["/bin/sh", "-c", "exit 0"], {}, fd)
            during_spawns += counted - before
            os.waitpid(pid, 0)
    finally:
        stop.set()
        spinner.join()
        os.close(fd)
    assert during_spawns > 0
