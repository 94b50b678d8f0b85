"""The per-invocation contract, written once for every executor (OSCAR's FaaS Supervisor, in effect).

For one invocation: make fresh input/output folders, stage the input file, build the OSCAR
environment, have the executor run `/bin/sh script.sh`, then upload every file the script wrote
under TMP_OUTPUT_DIR to each matching output path. Outputs are uploaded only after a successful run,
each object written atomically under a name derived from the input, so a re-run replaces rather than
duplicates.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import mimetypes
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qsl, quote

from sluice.errors import InvocationFailed
from sluice.executors.base import Completed, Executor, Invocation
from sluice.executors.slots import Slots
from sluice.runtime.workspace import Workspace
from sluice.spec.service import ServiceSpec
from sluice.storage.base import join_key
from sluice.storage.files import rewrite
from sluice.storage.registry import StorageRouter, split_path

# `name=value&name=value`, printable ASCII: a dict that `requests` form-encoded.
FORM_ENCODED = re.compile(rb"[!-%'-<>-~]+=[!-%'-~]*(&[!-%'-<>-~]+=[!-%'-~]*)*")
EVENT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class InvocationInput:
    """What triggered the invocation: an object in a bucket, or a payload posted directly."""

    job_id: str
    bucket: str | None = None
    key: str | None = None
    event: str | None = None  # the event JSON, as the script will see it in $EVENT
    payload: bytes | None = None
    event_time: datetime | None = None
    raw_payload: bool = False  # the payload is the input's bytes: no OSCAR base64 decoding


@dataclass(frozen=True)
class InvocationResult:
    completed: Completed
    outputs: list[str]  # "bucket/key" of every uploaded output
    files: dict[str, bytes] = field(default_factory=dict)  # output name -> content, when captured

    @property
    def succeeded(self) -> bool:
        return self.completed.exit_code == 0


async def invoke(
    trigger: InvocationInput,
    spec: ServiceSpec,
    token: str,
    *,
    storage: StorageRouter,
    executor: Executor,
    workspace: Workspace,
    script: Path,
    default_timeout: float,
    log_limit: int,
    slots: Slots | None = None,
    capture_outputs: bool = False,
) -> InvocationResult:
    """Run one invocation in `workspace` (empty folders, emptied again by its pool afterwards).

    `slots`, if given, bound how many scripts run at once: one is held only while the script
    runs, so staging the input and uploading outputs overlap with other jobs' scripts.
    `capture_outputs` also returns the output files' contents (a synchronous call answers with
    them).
    """
    input_path = await _stage_input(trigger, spec, storage, workspace)
    env = _environment(trigger, spec, token, input_path, workspace.input_dir, workspace.output_dir)
    invocation = script_invocation(spec, script, workspace, env, default_timeout, log_limit)
    completed = await executor.run(invocation, slots)
    if completed.exit_code != 0:
        return InvocationResult(completed, [])
    files = _read_outputs(workspace.output_dir) if capture_outputs else {}
    outputs = await _upload_outputs(spec, storage, workspace.output_dir)
    return InvocationResult(completed, outputs, files)


def script_invocation(
    spec: ServiceSpec,
    script: Path,
    workspace: Workspace,
    env: dict[str, str],
    default_timeout: float,
    log_limit: int,
) -> Invocation:
    """How the service's script runs in `workspace`: `/bin/sh script` with the service's limits."""
    return Invocation(
        argv=["/bin/sh", str(script)],
        env=env,
        workdir=workspace.root,
        timeout=spec.timeout or default_timeout,
        memory_bytes=spec.memory_limit,  # OSCAR's default (256Mi) included, as OSCAR enforces it
        cpus=spec.cpu_cores,
        image=spec.image,
        log_limit=log_limit,
        read_only_paths=(script,),
        network=spec.network,
        gpu=spec.enable_gpu,
        pull_policy=spec.image_pull_policy,
        pull_secrets=tuple(spec.image_pull_secrets or ()),
    )


# A handler's answer to one input: (HTTP-like status, content type, body).
HandlerCall = Callable[[bytes, str], Awaitable[tuple[int, str, bytes]]]


async def invoke_handler(
    trigger: InvocationInput,
    spec: ServiceSpec,
    *,
    storage: StorageRouter,
    workspace: Workspace,
    call: HandlerCall,
    slots: Slots | None = None,
) -> InvocationResult:
    """A job of a handler service: the input goes to a warm replica instead of a script, and the
    answer becomes one output, named after the input with the answer's extension
    (`digit-7.csv` answered with JSON -> `digit-7.json`). Failures raise (SluiceError)."""
    input_path = await _stage_input(trigger, spec, storage, workspace)
    data = input_path.read_bytes()
    if trigger.key:
        content_type = mimetypes.guess_type(input_path.name)[0] or "application/octet-stream"
    else:
        content_type = "application/json" if _is_json(data) else "application/octet-stream"
    async with slots or contextlib.nullcontext():
        status, answer_type, body = await call(data, content_type)
    if status >= 400:  # a Response(..., status=4xx/5xx): the handler refused the input
        detail = body[:2000].decode(errors="replace")
        raise InvocationFailed(f"{spec.handler} answered {status}: {detail}")
    extension = mimetypes.guess_extension(answer_type.split(";")[0].strip()) or ".bin"
    name = PurePosixPath(input_path.name).stem + extension
    (workspace.output_dir / name).write_bytes(body)
    outputs = await _upload_outputs(spec, storage, workspace.output_dir)
    note = f"{spec.handler} answered {status} ({answer_type}, {len(body)} bytes) -> {name}\n"
    return InvocationResult(Completed(exit_code=0, output=note), outputs)


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


async def _stage_input(
    trigger: InvocationInput, spec: ServiceSpec, storage: StorageRouter, workspace: Workspace
) -> Path:
    if trigger.bucket and trigger.key:
        name = trigger.key.rstrip("/").rsplit("/", 1)[-1]  # (PurePosixPath.name cost more here)
        if name in ("", ".", ".."):  # a key from a storage event, not one of ours: no plain name
            name = trigger.job_id
        dest = workspace.input_path(name)
        provider = _input_provider(trigger.bucket, spec, storage)
        await provider.get(trigger.bucket, trigger.key, dest)
        return dest
    # Named after the job: unique, so outputs named after the input do not collide.
    dest = workspace.input_path(trigger.job_id)
    payload = trigger.payload or b""
    rewrite(dest, payload if trigger.raw_payload else decode_payload(payload))
    return dest


def _input_provider(bucket: str, spec: ServiceSpec, storage: StorageRouter):  # type: ignore[no-untyped-def]
    for io in spec.input:
        if split_path(io.path)[0] == bucket:
            return storage.for_io(spec, io)
    return storage.default


def decode_payload(body: bytes) -> bytes:
    """OSCAR's rule for a posted body: JSON is kept as-is, anything else is base64 and decoded.

    A form-encoded body (what oscar-python sends for a dict input) becomes the JSON object it
    stands for. A body that is none of these (plain bytes sent by a newer client) is kept as-is.
    """
    stripped = body.strip()
    if not stripped:
        return b""
    try:
        json.loads(stripped)
        return body
    except ValueError:
        pass
    # Base64 has no '&' and '=' only as trailing padding; `key=` alone could be either: base64.
    form = FORM_ENCODED.fullmatch(stripped) is not None
    if form and (b"&" in stripped or b"=" in stripped.rstrip(b"=")):
        return _form_as_json(stripped)
    try:
        # Line-wrapped base64 (the `base64` tool, openssl) is base64 too: whitespace is dropped first.
        return base64.b64decode(b"".join(stripped.split()), validate=True)
    except (binascii.Error, ValueError):
        pass
    return _form_as_json(stripped) if form else body


def _form_as_json(form: bytes) -> bytes:
    return json.dumps(dict(parse_qsl(form.decode(), keep_blank_values=True))).encode()


def _read_outputs(output_dir: Path) -> dict[str, bytes]:
    return {name: (output_dir / name).read_bytes() for name in _output_names(output_dir)}


def _output_names(output_dir: Path) -> list[str]:
    """Every file under `output_dir`, as sorted '/'-separated relative names. As `os.walk` sees
    them: a link to a folder is neither followed nor listed, an unreadable folder is skipped;
    names are built while walking (relpath per file showed in profiles)."""
    names: list[str] = []
    folders = [(os.fspath(output_dir), "")]
    while folders:
        folder, prefix = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        is_folder = entry.is_dir()
                    except OSError:
                        is_folder = False
                    if not is_folder:
                        names.append(prefix + entry.name)
                    elif not entry.is_symlink():
                        folders.append((entry.path, f"{prefix}{entry.name}/"))
        except OSError:
            continue
    return sorted(names)


def _environment(
    trigger: InvocationInput,
    spec: ServiceSpec,
    token: str,
    input_path: Path,
    input_dir: Path,
    output_dir: Path,
) -> dict[str, str]:
    # What the script sees of the host's own environment (PATH, HOME) is the executor's to add.
    env = dict(spec.environment.variables)
    env.update(spec.environment.secrets)
    event_time = trigger.event_time or datetime.now(UTC)
    env.update(
        INPUT_FILE_PATH=str(input_path),
        TMP_INPUT_DIR=str(input_dir),
        TMP_OUTPUT_DIR=str(output_dir),
        STORAGE_OBJECT_KEY=f"{trigger.bucket}/{trigger.key}" if trigger.key else "",
        EVENT=trigger.event or "",
        EVENT_TIME=event_time.strftime(EVENT_TIME_FORMAT),
        JOB_UUID=trigger.job_id,
        OSCAR_SERVICE_NAME=spec.name,
        OSCAR_SERVICE_TOKEN=token,
        LOG_LEVEL=spec.log_level,
    )
    return env


async def _upload_outputs(spec: ServiceSpec, storage: StorageRouter, output_dir: Path) -> list[str]:
    uploaded = []
    folder_name = os.fspath(output_dir)
    for relative in _output_names(output_dir):
        targets = [io for io in spec.output if io.accepts(relative)]
        path = os.path.join(folder_name, relative)
        for index, io in enumerate(targets):
            bucket, folder = split_path(io.path)
            key = join_key(folder, relative)
            provider = storage.for_io(spec, io)
            adopt = getattr(provider, "adopt", None)
            if adopt is not None and index == len(targets) - 1:
                await adopt(path, bucket, key)  # the last copy can move: no copying
            else:
                await provider.put(Path(path), bucket, key)
            uploaded.append(f"{bucket}/{key}")
    return uploaded


def event_for(bucket: str, key: str, etag: str | None, size: int | None, when: str) -> dict[str, object]:
    """A MinIO-style S3 event, the shape OSCAR scripts read from $EVENT (`when` in EVENT_TIME_FORMAT)."""
    return {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{bucket}/{key}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "eventTime": when,
                "eventName": "s3:ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": quote(key), "size": size or 0, "eTag": etag or ""},
                },
            }
        ],
    }
