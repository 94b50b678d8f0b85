"""The execution contract a service's script sees: real /bin/sh processes, real files, LocalStorage."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sluice.engine.retry import RetryStrategy
from sluice.executors.base import LOG_FILE
from sluice.executors.process import INHERITED_ENV, ProcessExecutor
from sluice.runtime.invocation import InvocationInput, InvocationResult, decode_payload, invoke
from sluice.runtime.workspace import Workspace, WorkspacePool
from sluice.spec.fdl import parse_service
from sluice.spec.service import ServiceSpec
from sluice.storage.local import LocalStorage
from sluice.storage.registry import StorageRouter

TOKEN = "ab" * 32
JOB = "0123456789abcdef0123456789abcdef"


def service(script: str, **fields: Any) -> ServiceSpec:
    return parse_service(
        {
            "name": "svc",
            "image": "alpine",
            "script": script,
            "input": [{"path": "inbox/data"}],
            "output": [{"path": "outbox/results"}],
            **fields,
        }
    )


def leftovers(workspace: Workspace) -> list[str]:
    """What a finished job left in its workspace: the empty input/output folders, the log and the
    spare input file are kept on purpose (plain files, rewritten by the next job)."""
    kept = {workspace.root / LOG_FILE, *([Path(workspace.spare)] if workspace.spare else [])}
    assert workspace.spare is None or Path(workspace.spare).parent == workspace.input_dir
    for path in kept:
        assert not path.exists() or (path.is_file() and not path.is_symlink()), path
    return sorted(
        str(p.relative_to(workspace.root))
        for p in workspace.root.rglob("*")
        if p not in (workspace.input_dir, workspace.output_dir, *kept)
    )


@dataclass
class Runtime:
    """A LocalStorage with buckets inbox/outbox/other, a workspace pool and the process executor."""

    local: LocalStorage
    work_root: Path
    executor: ProcessExecutor
    scratch: Path

    async def invoke_in(
        self,
        pool: WorkspacePool,
        spec: ServiceSpec,
        trigger: InvocationInput,
        log_limit: int = 256 * 1024,
        default_timeout: float = 60,
    ) -> tuple[InvocationResult, Workspace]:
        """What the dispatcher does for one job: take a workspace, invoke, hand the workspace back."""
        workspace = await pool.acquire()
        try:
            result = await invoke(
                trigger,
                spec,
                TOKEN,
                storage=StorageRouter(self.local),
                executor=self.executor,
                workspace=workspace,
                script=pool.script(spec.script),
                default_timeout=default_timeout,
                log_limit=log_limit,
            )
        finally:
            pool.release(workspace)
        return result, workspace

    def run(
        self, spec: ServiceSpec, trigger: InvocationInput | None = None, **limits: Any
    ) -> InvocationResult:
        async def one() -> tuple[InvocationResult, Workspace]:
            pool = WorkspacePool(self.work_root)
            return await self.invoke_in(pool, spec, trigger or InvocationInput(job_id=JOB), **limits)

        result, workspace = asyncio.run(one())
        assert leftovers(workspace) == [], "the job left files in its workspace"
        return result

    def upload(self, bucket: str, key: str, data: bytes) -> None:
        source = self.scratch / "upload-source"
        source.write_bytes(data)
        asyncio.run(self.local.put(source, bucket, key))

    def read(self, bucket: str, key: str) -> bytes:
        dest = self.scratch / "download"
        asyncio.run(self.local.get(bucket, key, dest))
        return dest.read_bytes()

    def keys(self, bucket: str) -> list[str]:
        return [o.key for o in asyncio.run(self.local.list_page(bucket)).objects]


@pytest.fixture(scope="module")
def executor() -> Iterator[ProcessExecutor]:
    yield ProcessExecutor(max_threads=8)


@pytest.fixture
def rt(tmp_path: Path, executor: ProcessExecutor) -> Runtime:
    local = LocalStorage(tmp_path / "data")
    for bucket in ("inbox", "outbox", "other"):
        asyncio.run(local.create_bucket(bucket))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return Runtime(local, tmp_path / "work", executor, scratch)


# --- the environment -----------------------------------------------------------------------------

ENV_SCRIPT = """\
set -e
env -0 > "$TMP_OUTPUT_DIR/env.bin"
cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/input-copy"
test -d "$TMP_INPUT_DIR"
pwd > "$TMP_OUTPUT_DIR/pwd.txt"
echo "script ran for $OSCAR_SERVICE_NAME"
"""
EVENT = {"Key": "inbox/data/sub/photo.jpg", "Records": [{"eventSource": "minio:s3"}]}


def run_env_dump(rt: Runtime, **fields: Any) -> tuple[InvocationResult, dict[str, str]]:
    rt.upload("inbox", "data/sub/photo.jpg", b"\x89PNG fake image \x00\xff")
    trigger = InvocationInput(
        job_id=JOB,
        bucket="inbox",
        key="data/sub/photo.jpg",
        event=json.dumps(EVENT),
        event_time=datetime(2024, 1, 2, 3, 4, 5, 678900, tzinfo=UTC),
    )
    result = rt.run(service(ENV_SCRIPT, **fields), trigger)
    assert result.completed.exit_code == 0, result.completed.output
    raw = rt.read("outbox", "results/env.bin").decode()
    env = dict(item.split("=", 1) for item in raw.split("\0") if item)
    return result, env


def test_script_sees_the_oscar_environment(rt: Runtime) -> None:
    result, env = run_env_dump(
        rt, environment={"variables": {"MODEL": "small", "THREADS": 4}, "secrets": {"API_KEY": "s3cr3t"}}
    )

    assert env["STORAGE_OBJECT_KEY"] == "inbox/data/sub/photo.jpg"
    assert json.loads(env["EVENT"]) == EVENT
    assert env["EVENT_TIME"] == "2024-01-02T03:04:05.678900Z"
    assert env["JOB_UUID"] == JOB
    assert env["OSCAR_SERVICE_NAME"] == "svc"
    assert env["OSCAR_SERVICE_TOKEN"] == TOKEN
    assert (env["MODEL"], env["THREADS"], env["API_KEY"]) == ("small", "4", "s3cr3t")
    # the input was staged under TMP_INPUT_DIR with the object's name and content
    assert Path(env["INPUT_FILE_PATH"]).parent == Path(env["TMP_INPUT_DIR"])
    assert Path(env["INPUT_FILE_PATH"]).name == "photo.jpg"
    assert rt.read("outbox", "results/input-copy") == b"\x89PNG fake image \x00\xff"
    # separate folders inside the job's own working directory, which is the script's cwd
    cwd = Path(rt.read("outbox", "results/pwd.txt").decode().strip()).resolve()
    assert Path(env["TMP_INPUT_DIR"]).resolve().parent == cwd
    assert Path(env["TMP_OUTPUT_DIR"]).resolve().parent == cwd
    assert env["TMP_INPUT_DIR"] != env["TMP_OUTPUT_DIR"]
    assert cwd.is_relative_to(rt.work_root.resolve())
    assert "script ran for svc" in result.completed.output


def test_server_secrets_do_not_reach_the_script(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_ADMIN_PASSWORD", "server-admin-password")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-s3-secret")
    monkeypatch.setenv("SLUICE_DATABASE_URL", "postgresql://user:server-db-password@db/sluice")
    monkeypatch.setenv("TZ", "Europe/Madrid")
    monkeypatch.setenv("LANG", "C.UTF-8")
    # An executor made now: it reads the server's environment when it is created.
    rt = dataclasses.replace(rt, executor=ProcessExecutor(max_threads=2))

    _, env = run_env_dump(rt)

    for name in ("SLUICE_ADMIN_PASSWORD", "AWS_SECRET_ACCESS_KEY", "SLUICE_DATABASE_URL"):
        assert name not in env
    secrets = ("server-admin-password", "server-s3-secret", "server-db-password")
    assert [k for k, v in env.items() if any(s in v for s in secrets)] == []
    assert env["TZ"] == "Europe/Madrid"  # an allowed variable is inherited
    assert "TZ" in INHERITED_ENV
    assert "LANG" not in env  # a script runs in the C locale unless its service sets one
    # the interpreter running Sluice comes first on PATH
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_a_service_sets_the_locale_of_its_scripts(rt: Runtime) -> None:
    _, env = run_env_dump(rt, environment={"variables": {"LANG": "C.UTF-8"}})
    assert env["LANG"] == "C.UTF-8"


def test_the_server_sets_a_locale_for_scripts_and_a_service_overrides_it(rt: Runtime) -> None:
    rt = dataclasses.replace(rt, executor=ProcessExecutor(max_threads=2, script_locale="C.UTF-8"))
    _, env = run_env_dump(rt)
    assert env["LANG"] == "C.UTF-8"
    _, env = run_env_dump(rt, environment={"variables": {"LANG": "POSIX"}})
    assert env["LANG"] == "POSIX"


def test_service_variables_cannot_override_the_contract(rt: Runtime) -> None:
    _, env = run_env_dump(rt, environment={"variables": {"JOB_UUID": "fake", "OSCAR_SERVICE_TOKEN": "fake"}})
    assert env["JOB_UUID"] == JOB
    assert env["OSCAR_SERVICE_TOKEN"] == TOKEN


def test_missing_input_object_is_an_error(rt: Runtime) -> None:
    from sluice.errors import ObjectNotFound

    trigger = InvocationInput(job_id=JOB, bucket="inbox", key="data/gone.txt")
    with pytest.raises(ObjectNotFound):
        rt.run(service("echo should not run"), trigger)
    assert rt.keys("outbox") == []


# --- outputs -------------------------------------------------------------------------------------

OUTPUTS_SCRIPT = """\
set -e
cd "$TMP_OUTPUT_DIR"
mkdir -p nested/deep
printf '{"a": 1}' > a.json
echo text > res.txt
echo deep > nested/deep/res.json
printf 'bin' > nested/x.bin
"""


def test_outputs_go_to_every_matching_output_path(rt: Runtime) -> None:
    spec = service(
        OUTPUTS_SCRIPT,
        output=[
            {"path": "outbox/all"},
            {"path": "outbox/json", "suffix": [".json"]},
            {"path": "other/res", "prefix": ["res"]},
            {"path": "other/png", "suffix": ".png"},
        ],
    )

    result = rt.run(spec)

    assert result.succeeded, result.completed.output
    assert rt.keys("outbox") == [
        "all/a.json",
        "all/nested/deep/res.json",
        "all/nested/x.bin",
        "all/res.txt",
        "json/a.json",
        "json/nested/deep/res.json",
    ]
    assert rt.keys("other") == ["res/nested/deep/res.json", "res/res.txt"]
    assert sorted(result.outputs) == sorted(
        [f"outbox/{k}" for k in rt.keys("outbox")] + [f"other/{k}" for k in rt.keys("other")]
    )
    for bucket, key in [("outbox", "all/nested/deep/res.json"), ("outbox", "json/nested/deep/res.json")]:
        assert rt.read(bucket, key) == b"deep\n"
    assert rt.read("other", "res/nested/deep/res.json") == b"deep\n"
    assert rt.read("other", "res/res.txt") == b"text\n"
    assert rt.read("outbox", "all/nested/x.bin") == b"bin"


def test_output_written_as_a_symlink_is_uploaded_with_its_content(rt: Runtime) -> None:
    rt.upload("inbox", "data/photo.jpg", b"the picture")
    script = 'ln -s "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/same.jpg"\n'
    result = rt.run(service(script), InvocationInput(job_id=JOB, bucket="inbox", key="data/photo.jpg"))
    assert result.succeeded
    assert result.outputs == ["outbox/results/same.jpg"]
    assert rt.keys("outbox") == ["results/same.jpg"]
    assert rt.read("outbox", "results/same.jpg") == b"the picture"


def test_no_output_paths_means_nothing_uploaded(rt: Runtime) -> None:
    result = rt.run(service(OUTPUTS_SCRIPT, output=[]))
    assert result.succeeded
    assert result.outputs == []
    assert rt.keys("outbox") == [] and rt.keys("other") == []


def test_non_zero_exit_uploads_nothing(rt: Runtime) -> None:
    script = 'echo partial > "$TMP_OUTPUT_DIR/partial.txt"\necho "something broke" >&2\nexit 7\n'
    result = rt.run(service(script))
    assert result.completed.exit_code == 7
    assert not result.succeeded
    assert not result.completed.timed_out
    assert result.outputs == []
    assert rt.keys("outbox") == []
    assert "something broke" in result.completed.output


def test_a_reused_workspace_starts_clean(rt: Runtime) -> None:
    messy = (
        'echo junk > "$TMP_OUTPUT_DIR/junk.txt"\nmkdir -p "$TMP_OUTPUT_DIR/d/e" "$TMP_INPUT_DIR/x" cwd-dir\n'
        'echo junk > "$TMP_OUTPUT_DIR/d/e/junk.txt"\necho junk > cwd-file\nexit 1\n'
    )
    check = 'ls -A "$TMP_OUTPUT_DIR" "$TMP_INPUT_DIR" . > "$TMP_OUTPUT_DIR/seen.txt"\n'

    async def two_jobs() -> list[tuple[InvocationResult, Workspace]]:
        pool = WorkspacePool(rt.work_root)
        first = await rt.invoke_in(pool, service(messy), InvocationInput(job_id="job-1"))
        second = await rt.invoke_in(pool, service(check), InvocationInput(job_id="job-2", payload=b"{}"))
        return [first, second]

    (first, ws1), (second, ws2) = asyncio.run(two_jobs())

    assert ws1.root == ws2.root  # the same folder served both jobs
    assert not first.succeeded and second.succeeded
    assert rt.keys("outbox") == ["results/seen.txt"]
    seen = set(rt.read("outbox", "results/seen.txt").decode().split())
    assert not seen & {"junk.txt", "cwd-file", "cwd-dir", "d", "x"}
    assert leftovers(ws2) == []


def test_cleanup_never_follows_a_symlinked_scratch_folder(rt: Runtime) -> None:
    shared = rt.scratch / "shared-dataset"
    shared.mkdir()
    (shared / "keep.txt").write_text("precious")
    script = 'rm -rf "$TMP_INPUT_DIR"\nln -s "$SHARED" "$TMP_INPUT_DIR"\nls "$TMP_INPUT_DIR"\n'
    spec = service(script, environment={"variables": {"SHARED": str(shared)}})

    async def two_jobs() -> None:
        pool = WorkspacePool(rt.work_root)
        await rt.invoke_in(pool, spec, InvocationInput(job_id="job-1", payload=b"{}"))
        await rt.invoke_in(pool, service("true"), InvocationInput(job_id="job-2", payload=b'{"next": 1}'))

    asyncio.run(two_jobs())

    assert sorted(p.name for p in shared.iterdir()) == ["keep.txt"]
    assert (shared / "keep.txt").read_text() == "precious"


def test_stale_workspaces_of_a_stopped_server_are_removed(rt: Runtime) -> None:
    stale = rt.work_root / "slot-1" / "output"
    stale.mkdir(parents=True)
    (stale / "stale.txt").write_text("from a run that was interrupted")
    result = rt.run(service('echo fresh > "$TMP_OUTPUT_DIR/fresh.txt"'))
    assert result.succeeded
    assert rt.keys("outbox") == ["results/fresh.txt"]


# --- limits --------------------------------------------------------------------------------------


def _live_processes_in_session(session: int) -> list[int]:
    """Processes (not zombies) whose session id is `session`: what the script started."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, sid = fields[0], int(fields[3])
        if sid == session and state not in ("Z", "X"):
            alive.append(int(entry.name))
    return alive


def _wait_until_gone(session: int) -> list[int]:
    deadline = time.monotonic() + 10
    while _live_processes_in_session(session) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _live_processes_in_session(session)


def test_timeout_kills_the_script_and_its_children(rt: Runtime) -> None:
    pid_file = rt.scratch / "script.pid"
    script = 'echo $$ > "$PID_FILE"\necho started\nsleep 30 &\nsleep 30\necho "not reached"\n'
    spec = service(script, timeout=1, environment={"variables": {"PID_FILE": str(pid_file)}})

    result = rt.run(spec)

    assert result.completed.timed_out
    assert result.completed.exit_code is None
    assert not result.succeeded
    assert result.outputs == []
    assert "started" in result.completed.output
    assert "not reached" not in result.completed.output
    assert "timeout" in result.completed.output
    assert _wait_until_gone(int(pid_file.read_text())) == []


def test_background_children_end_with_the_script(rt: Runtime) -> None:
    pid_file = rt.scratch / "script.pid"
    script = 'echo $$ > "$PID_FILE"\nsleep 30 &\necho done > "$TMP_OUTPUT_DIR/out.txt"\n'
    spec = service(script, environment={"variables": {"PID_FILE": str(pid_file)}})

    result = rt.run(spec)

    assert result.succeeded and not result.completed.timed_out
    assert rt.keys("outbox") == ["results/out.txt"]
    assert _wait_until_gone(int(pid_file.read_text())) == []


def test_default_timeout_applies_without_a_service_timeout(rt: Runtime) -> None:
    result = rt.run(service("sleep 30"), default_timeout=0.5)
    assert result.completed.timed_out


@pytest.mark.parametrize(
    ("memory", "megabytes", "ok"),
    [
        pytest.param(None, 200, True, id="no-limit-200MB"),
        pytest.param("64Mi", 200, False, id="64Mi-200MB"),
        pytest.param("64Mi", 8, True, id="64Mi-8MB"),
    ],
)
def test_memory_limit(rt: Runtime, memory: str | None, megabytes: int, ok: bool) -> None:
    script = f'python3 -c "b = bytearray({megabytes}*1024*1024); print(len(b))"\n'
    fields = {"memory": memory} if memory else {}
    result = rt.run(service(script, **fields))
    assert result.succeeded is ok, result.completed.output
    if ok:
        assert str(megabytes * 1024 * 1024) in result.completed.output
    else:
        assert "MemoryError" in result.completed.output


def test_log_keeps_head_and_tail(rt: Runtime) -> None:
    script = "echo BEGIN-MARKER\nhead -c 2000000 /dev/zero | tr '\\0' x\necho\necho END-MARKER\n"
    limit = 64 * 1024

    result = rt.run(service(script), log_limit=limit)

    output = result.completed.output
    assert result.succeeded
    assert output.startswith("BEGIN-MARKER\n")
    assert output.endswith("END-MARKER\n")
    total = len("BEGIN-MARKER\n") + 2_000_000 + 1 + len("END-MARKER\n")
    assert f"{total - limit} bytes of log left out" in output
    assert len(output) < limit + 200


def test_short_log_is_kept_whole(rt: Runtime) -> None:
    result = rt.run(service("echo one\necho two >&2\necho three\n"), log_limit=1024)
    assert result.completed.output == "one\ntwo\nthree\n"


def test_the_log_is_what_the_script_printed_whatever_it_did_to_the_log_file(rt: Runtime) -> None:
    """The log is read from the file the script's output went to, not by its name: a script that
    removes it and writes another of that name cannot put words in its own log. Its output is
    write-only to it."""
    script = (
        "echo first\n"
        "rm -f output.log && echo forged > output.log\n"
        "if cat <&1 >/dev/null 2>&1; then echo readable; else echo write-only; fi\n"
    )
    result = rt.run(service(script))
    assert result.succeeded
    assert result.completed.output == "first\nwrite-only\n"


def test_a_script_that_removes_its_own_file_does_not_break_the_next_job(rt: Runtime) -> None:
    spec = service('echo ran\nrm -f -- "$0"\n')
    assert rt.run(spec).completed.output == "ran\n"
    assert rt.run(spec).completed.output == "ran\n"  # its file is written again


# --- payload invocations -------------------------------------------------------------------------

PAYLOAD_SCRIPT = """\
cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/input"
printf %s "$STORAGE_OBJECT_KEY" > "$TMP_OUTPUT_DIR/key"
"""


@pytest.mark.parametrize(
    ("body", "staged"),
    [
        pytest.param(base64.b64encode(b"\x00\x01binary\xff"), b"\x00\x01binary\xff", id="base64"),
        pytest.param(base64.b64encode(b"hello") + b"\n", b"hello", id="base64-newline"),
        pytest.param(b'{"image": "aGk=", "n": 1}', b'{"image": "aGk=", "n": 1}', id="json-object"),
        pytest.param(b"[1, 2, 3]", b"[1, 2, 3]", id="json-list"),
        pytest.param(b"not base64 at all!", b"not base64 at all!", id="plain-bytes"),
        pytest.param(b"", b"", id="empty"),
    ],
)
def test_payload_is_staged_as_the_input_file(rt: Runtime, body: bytes, staged: bytes) -> None:
    result = rt.run(service(PAYLOAD_SCRIPT), InvocationInput(job_id="payload-job", payload=body))
    assert result.succeeded, result.completed.output
    assert rt.read("outbox", "results/input") == staged
    assert rt.read("outbox", "results/key") == b""


# --- retry backoff -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (8, 256.0), (9, 300.0), (50, 300.0)],
)
def test_retry_delay_doubles_and_is_capped(failures: int, delay: float) -> None:
    assert RetryStrategy().delay(failures) == delay


@pytest.mark.parametrize(
    ("base", "cap", "failures", "delay"),
    [(0.5, 3.0, 1, 0.5), (0.5, 3.0, 3, 2.0), (0.5, 3.0, 4, 3.0), (10.0, 10.0, 1, 10.0)],
)
def test_retry_delay_custom(base: float, cap: float, failures: int, delay: float) -> None:
    assert RetryStrategy(base_delay=base, max_delay=cap).delay(failures) == delay


def test_retry_delays_never_decrease() -> None:
    strategy = RetryStrategy(base_delay=1.5, max_delay=100)
    delays = [strategy.delay(n) for n in range(1, 20)]
    assert delays == sorted(delays)
    assert max(delays) == 100


def test_line_wrapped_base64_is_decoded() -> None:
    data = bytes(range(256)) * 3
    assert decode_payload(base64.encodebytes(data)) == data  # 76-column lines, as `base64` writes


def test_a_form_that_could_be_base64_stays_base64() -> None:
    assert decode_payload(b"key=") == base64.b64decode(b"key=")
    assert json.loads(decode_payload(b"a=1&b=two+words")) == {"a": "1", "b": "two words"}


@pytest.mark.parametrize("memory", [None, "64Mi"])
def test_the_script_runs_from_its_workspace_with_no_arguments(rt: Runtime, memory: str | None) -> None:
    # OSCAR runs `sh script.sh`: no positional arguments, whatever the executor's own wrapping.
    script = 'echo "$# [$1] $(pwd)" > "$TMP_OUTPUT_DIR/args.txt"\n'
    spec = service(script, **({"memory": memory} if memory else {}))

    result = rt.run(spec)

    assert result.succeeded, result.completed.output
    count, first, cwd = rt.read("outbox", "results/args.txt").decode().split()
    assert (count, first) == ("0", "[]")
    assert Path(cwd).is_relative_to(rt.work_root)


# --- files kept between jobs ---------------------------------------------------------------------
# A workspace keeps its log and its last input file and rewrites them for the next job (a new file
# per job cost more than the rest of the job's platform work). Nothing of one job may show
# through to the next, and what a script leaves under those names is never written through.


def two_jobs(
    rt: Runtime, first: tuple[str, InvocationInput], second: tuple[str, InvocationInput], **env: str
):  # type: ignore[no-untyped-def]
    async def scenario() -> list[tuple[InvocationResult, Workspace]]:
        pool = WorkspacePool(rt.work_root)
        results = []
        for script, trigger in (first, second):
            spec = service(script, environment={"variables": env}) if env else service(script)
            results.append(await rt.invoke_in(pool, spec, trigger))
        return results

    (one, ws1), (two, ws2) = asyncio.run(scenario())
    assert ws1.root == ws2.root  # the second job reused the first one's workspace
    return one, two


def test_a_kept_input_file_shows_nothing_of_the_last_job(rt: Runtime) -> None:
    rt.upload("inbox", "data/long.txt", b"the first job's input, longer than the next one\n" * 100)
    rt.upload("inbox", "data/short.txt", b"short\n")
    copy = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"\nls -A "$TMP_INPUT_DIR"\n'
    one, two = two_jobs(
        rt,
        (copy, InvocationInput(job_id="job-1", bucket="inbox", key="data/long.txt")),
        (copy, InvocationInput(job_id="job-2", bucket="inbox", key="data/short.txt")),
    )
    assert one.succeeded and two.succeeded
    assert rt.read("outbox", "results/short.txt") == b"short\n"
    assert two.completed.output == "short.txt\n"  # its own input only, and only its own log


def test_the_next_job_gets_the_kept_input_file_under_its_own_name(rt: Runtime) -> None:
    """The point of keeping it: no new file per job, one rename inside the input folder."""
    rt.upload("inbox", "data/a.txt", b"a\n")
    rt.upload("inbox", "data/b.txt", b"b\n")
    show = 'stat -c %i "$INPUT_FILE_PATH"; ls -A "$TMP_INPUT_DIR"\n'
    one, two = two_jobs(
        rt,
        (show, InvocationInput(job_id="job-1", bucket="inbox", key="data/a.txt")),
        (show, InvocationInput(job_id="job-2", bucket="inbox", key="data/b.txt")),
    )
    inode_one, listed_one = one.completed.output.split()
    inode_two, listed_two = two.completed.output.split()
    assert (listed_one, listed_two) == ("a.txt", "b.txt")
    assert inode_one == inode_two


def test_permissions_a_script_gave_its_input_file_never_reach_the_next_job(rt: Runtime) -> None:
    rt.upload("inbox", "data/a.txt", b"a\n")
    rt.upload("inbox", "data/b.txt", b"b\n")
    _, two = two_jobs(
        rt,
        ('chmod 4777 "$INPUT_FILE_PATH"', InvocationInput(job_id="job-1", bucket="inbox", key="data/a.txt")),
        ('stat -c %a "$INPUT_FILE_PATH"', InvocationInput(job_id="job-2", bucket="inbox", key="data/b.txt")),
    )
    mode = int(two.completed.output.strip(), 8)
    assert mode & 0o7002 == 0, f"the next job's input has mode {mode:o}"


def test_a_workspace_whose_folder_a_script_locked_is_replaced(rt: Runtime) -> None:
    """`chmod 555` on its input folder: a server that is not root could then never replace the
    file left there, and every later job in that workspace would fail."""
    rt.upload("inbox", "data/a.txt", b"a\n")
    rt.upload("inbox", "data/b.txt", b"b\n")

    async def scenario() -> list[tuple[InvocationResult, Workspace]]:
        pool = WorkspacePool(rt.work_root)
        first = await rt.invoke_in(
            pool,
            service('chmod 555 "$TMP_INPUT_DIR"'),
            InvocationInput(job_id="job-1", bucket="inbox", key="data/a.txt"),
        )
        second = await rt.invoke_in(
            pool,
            service('ls -A "$TMP_INPUT_DIR"'),
            InvocationInput(job_id="job-2", bucket="inbox", key="data/b.txt"),
        )
        return [first, second]

    (one, ws1), (two, ws2) = asyncio.run(scenario())
    assert one.succeeded and two.succeeded
    assert ws2.root != ws1.root
    assert two.completed.output == "b.txt\n"


def test_a_posted_payload_is_written_whole_into_a_kept_file(rt: Runtime) -> None:
    copy = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/in.json"\n'
    _, two = two_jobs(
        rt,
        (copy, InvocationInput(job_id="job-1", payload=json.dumps({"pad": "x" * 5000}).encode())),
        (copy, InvocationInput(job_id="job-2", payload=b'{"n": 2}')),
    )
    assert two.succeeded
    assert rt.read("outbox", "results/in.json") == b'{"n": 2}'


def test_a_link_left_as_the_log_is_never_written_through(rt: Runtime) -> None:
    victim = rt.scratch / "victim.txt"
    victim.write_text("precious")
    plant = 'rm -f output.log\nln -s "$VICTIM" output.log\n'
    one, two = two_jobs(
        rt,
        (plant, InvocationInput(job_id="job-1", payload=b"{}")),
        ("echo second job", InvocationInput(job_id="job-2", payload=b"{}")),
        VICTIM=str(victim),
    )
    assert one.succeeded and two.succeeded
    assert victim.read_text() == "precious"
    assert "precious" not in one.completed.output  # the log is never read through the link either
    assert two.completed.output == "second job\n"


def test_a_hard_link_left_as_the_log_or_the_input_is_never_rewritten(rt: Runtime) -> None:
    victim = rt.scratch / "victim.txt"
    victim.write_text("precious")
    rt.upload("inbox", "data/a.txt", b"input\n")
    plant = 'rm -f output.log\nln "$VICTIM" output.log\nln -f "$VICTIM" "$INPUT_FILE_PATH"\n'
    one, two = two_jobs(
        rt,
        (plant, InvocationInput(job_id="job-1", bucket="inbox", key="data/a.txt")),
        (
            'echo log; cat "$INPUT_FILE_PATH"',
            InvocationInput(job_id="job-2", bucket="inbox", key="data/a.txt"),
        ),
        VICTIM=str(victim),
    )
    assert one.succeeded and two.succeeded
    assert victim.read_text() == "precious"
    assert two.completed.output == "log\ninput\n"


def test_a_fifo_left_as_the_log_does_not_block_the_next_job(rt: Runtime) -> None:
    one, two = two_jobs(
        rt,
        ("rm -f output.log\nmkfifo output.log\n", InvocationInput(job_id="job-1", payload=b"{}")),
        ("echo unblocked", InvocationInput(job_id="job-2", payload=b"{}")),
    )
    assert one.succeeded and two.succeeded
    assert two.completed.output == "unblocked\n"


def test_a_file_a_script_leaves_under_the_spare_name_never_reaches_the_next_job(rt: Runtime) -> None:
    plant = 'rm -f "$INPUT_FILE_PATH"\necho "left for the next job" > .input\n'
    _, two = two_jobs(
        rt,
        (plant, InvocationInput(job_id="job-1", payload=b"{}")),
        ("ls -A; cat .input 2>/dev/null || true", InvocationInput(job_id="job-2", payload=b"{}")),
    )
    assert two.succeeded
    assert ".input" not in two.completed.output.split()
    assert "left for the next job" not in two.completed.output


def test_outputs_are_the_files_os_walk_would_list(tmp_path: Path) -> None:
    """Nested files by their '/' names, links to files and FIFOs as files; a link to a folder is
    neither followed (it could lead anywhere on the host) nor listed."""
    from sluice.runtime.invocation import _output_names

    out = tmp_path / "out"
    (out / "sub" / "deep").mkdir(parents=True)
    (out / "b.txt").write_text("b")
    (out / "A.txt").write_text("a")
    (out / "sub" / "x.json").write_text("x")
    (out / "sub" / "deep" / "y").write_text("y")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret").write_text("s")
    os.symlink(elsewhere, out / "linked-folder")
    os.symlink(out / "b.txt", out / "linked-file")
    os.symlink(tmp_path / "nothing", out / "broken")
    os.mkfifo(out / "fifo")

    names = _output_names(out)

    assert names == ["A.txt", "b.txt", "broken", "fifo", "linked-file", "sub/deep/y", "sub/x.json"]
    walked = sorted(
        os.path.relpath(os.path.join(folder, name), out)
        for folder, _, files in os.walk(out)
        for name in files
    )
    assert names == walked
