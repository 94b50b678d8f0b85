"""A replica: one process that loads a handler service's code once and answers calls until its
socket closes. Started by the server as

    python -m sluice.replicas.child --fd 3 --handler model:predict [--init model:load]
        [--code-dir DIR] [--batch-size 8 --batch-wait-ms 5]

or, in a container, `--stdio 1` instead of `--fd`: frames on stdin and stdout.

or as a spare, with `--fd` only, started before any service needs it: it then waits for an
ASSIGN frame naming its service (folder, environment, log, options), which saves a cold start
the interpreter's own start-up and imports.

It imports only the standard library and `sluice.handler`/`sluice.replicas.wire`, so it starts in
tens of milliseconds plus whatever the service's own imports and `init` take.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from sluice.handler import HTTPError, Request, Response
from sluice.replicas import tensors, wire

RECV_SIZE = 256 * 1024


class Pipes:
    """The channel as two file descriptors (a replica in a container talks over its stdin and
    stdout), with a socket's `recv`/`sendall`/`fileno`, so the rest does not care which it has."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd

    def fileno(self) -> int:
        return self.read_fd

    def recv(self, size: int) -> bytes:
        return os.read(self.read_fd, size)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view) :]


class Frames:
    """Frames read from a blocking socket (or Pipes), with a wait bounded in time when asked."""

    def __init__(self, sock: socket.socket | Pipes) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def next(self, timeout: float | None = None) -> tuple[int, int, dict[str, Any], bytes] | None:
        """The next whole frame; None if `timeout` passed first. Raises EOFError when the server left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                    return None
            chunk = self.sock.recv(RECV_SIZE)
            if not chunk:
                raise EOFError
            self.buffer += chunk

    def _parse(self) -> tuple[int, int, dict[str, Any], bytes] | None:
        if len(self.buffer) < wire.HEADER.size:
            return None
        call_id, kind, meta_len, body_len = wire.HEADER.unpack_from(self.buffer)
        end = wire.HEADER.size + meta_len + body_len
        if len(self.buffer) < end:
            return None
        meta = wire.decode_meta(bytes(self.buffer[wire.HEADER.size : wire.HEADER.size + meta_len]))
        body = bytes(self.buffer[wire.HEADER.size + meta_len : end])
        del self.buffer[:end]
        return call_id, kind, meta, body


def load(entry_point: str) -> Callable[..., Any]:
    module_name, _, function = entry_point.partition(":")
    return getattr(importlib.import_module(module_name), function)


def answer(result: Any) -> tuple[int, str, bytes]:
    """(status, content type, body) for whatever a handler returned."""
    if isinstance(result, Response):
        body = result.body.encode() if isinstance(result.body, str) else bytes(result.body)
        return result.status, result.content_type, body
    if isinstance(result, bytes | bytearray | memoryview):
        return 200, "application/octet-stream", bytes(result)
    if isinstance(result, str):
        return 200, "text/plain; charset=utf-8", result.encode()
    if result is None:
        return 200, "text/plain; charset=utf-8", b""
    if hasattr(result, "tolist"):  # numpy arrays and scalars
        result = result.tolist()
    return 200, "application/json", json.dumps(result, default=_jsonable).encode()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"the handler returned a {type(value).__name__}, which is not JSON")


def failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, HTTPError):
        return {"status": exc.status, "error": exc.message}
    return {"status": 500, "error": f"the handler failed: {type(exc).__name__}: {exc}"}


class Replica:
    def __init__(self, sock: socket.socket | Pipes, handler: Callable[..., Any], state: Any) -> None:
        self.sock = sock
        self.frames = Frames(sock)
        self.handler = handler
        self.state = state
        self._loop: Any = None  # an event loop for async handlers, made on first use

    def serve(self, batch_size: int, batch_wait: float) -> None:
        while True:
            try:
                first = self.frames.next()
            except EOFError:
                return
            if first is None:
                continue
            if batch_size <= 1:
                self._one(first)
                continue
            batch = [first]
            deadline = time.monotonic() + batch_wait
            while len(batch) < batch_size:
                try:
                    frame = self.frames.next(max(0.0, deadline - time.monotonic()))
                except EOFError:
                    break
                if frame is None:
                    break
                batch.append(frame)
            self._batch(batch)

    def _request(self, meta: dict[str, Any], body: bytes) -> Request:
        request = Request(
            body=body,
            content_type=meta.get("content_type", ""),
            headers=meta.get("headers", {}),
            params=meta.get("params", {}),
            state=self.state,
        )
        if meta.get("protocol") == "v2":
            try:
                sent = request.json()
                if not isinstance(sent, dict):
                    raise ValueError("the body must be a JSON object")
                request.inputs = tensors.decode_inputs(sent)
            except ValueError as exc:  # TensorError, or a body that is not JSON
                raise HTTPError(400, f"not a V2 inference request: {exc}") from None
        return request

    def _answer(self, meta: dict[str, Any], body: bytes, result: Any) -> tuple[int, str, bytes]:
        if meta.get("protocol") != "v2" or isinstance(result, Response):
            return answer(result)
        sent = json.loads(body)
        reply = {"model_name": meta.get("model", ""), "outputs": tensors.encode_outputs(result)}
        if "id" in sent:
            reply["id"] = sent["id"]
        return 200, "application/json", json.dumps(reply).encode()

    def _call(self, argument: Any) -> Any:
        result = self.handler(argument)
        if hasattr(result, "__await__"):  # an async handler (inspect costs a cold start 6 ms)
            if self._loop is None:
                import asyncio  # only for async handlers: importing it costs a cold start 30 ms

                self._loop = asyncio.new_event_loop()
            result = self._loop.run_until_complete(result)
        return result

    def _one(self, frame: tuple[int, int, dict[str, Any], bytes]) -> None:
        call_id, _, meta, body = frame
        try:
            status, content_type, data = self._answer(meta, body, self._call(self._request(meta, body)))
        except Exception as exc:
            self._send(wire.encode(call_id, wire.ERROR, failure(exc)))
            return
        self._send(wire.encode(call_id, wire.RESULT, {"status": status, "content_type": content_type}, data))

    def _batch(self, frames: list[tuple[int, int, dict[str, Any], bytes]]) -> None:
        out = []
        accepted, requests = [], []
        for frame in frames:  # a malformed request is refused alone, not with its whole batch
            call_id, _, meta, body = frame
            try:
                requests.append(self._request(meta, body))
                accepted.append(frame)
            except Exception as exc:
                out.append(wire.encode(call_id, wire.ERROR, failure(exc)))
        try:
            results = list(self._call(requests)) if requests else []
            if len(results) != len(requests):
                raise ValueError(
                    f"a batch handler must return one result per call ({len(requests)}), not {len(results)}"
                )
        except Exception as exc:
            out += [wire.encode(call_id, wire.ERROR, failure(exc)) for call_id, *_ in accepted]
            self._send(b"".join(out))
            return
        for (call_id, _, meta, body), result in zip(accepted, results, strict=True):
            try:
                status, content_type, data = self._answer(meta, body, result)
                out.append(
                    wire.encode(call_id, wire.RESULT, {"status": status, "content_type": content_type}, data)
                )
            except Exception as exc:
                out.append(wire.encode(call_id, wire.ERROR, failure(exc)))
        self._send(b"".join(out))

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    sock: socket.socket | Pipes
    if "fd" in options:
        sock = socket.socket(fileno=int(options["fd"]))
    else:
        # --stdio: frames on stdin and on the original stdout; what the handler prints goes to
        # stderr, so it cannot corrupt the stream.
        sock = Pipes(0, os.dup(1))
        os.dup2(2, 1)
    if "handler" not in options:
        # A spare, started ahead of need: it waits to be told which service to become.
        try:
            frame = Frames(sock).next()
        except EOFError:
            return 0  # the server stopped before it needed this spare
        assert frame is not None and frame[1] == wire.ASSIGN
        options.update(parse_options(become(frame[2])))
    # The service's code comes first on the import path, then the replica's working folder.
    for folder in (os.getcwd(), options.get("code-dir")):
        if folder:
            sys.path.insert(0, folder)
    try:
        state = load(options["init"])() if options.get("init") else None
        handler = load(options["handler"])
    except BaseException as exc:  # an import error, a missing model file, a SystemExit in init
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        traceback.print_exc()
        sock.sendall(wire.encode(0, wire.INIT_FAILED, {"error": detail}))
        return 1
    sock.sendall(wire.encode(0, wire.READY, {"pid": os.getpid()}))
    batch_size = int(options.get("batch-size", 1))
    Replica(sock, handler, state).serve(batch_size, float(options.get("batch-wait-ms", 0)) / 1000)
    return 0


def parse_options(args: list[str]) -> dict[str, str]:
    """`--name value` pairs (the server writes them; argparse would cost a cold start 10 ms)."""
    if len(args) % 2 or not all(name.startswith("--") for name in args[::2]):
        raise SystemExit(
            f"usage: python -m sluice.replicas.child --fd N [--handler mod:function ...]: {args}"
        )
    return {name[2:]: value for name, value in zip(args[::2], args[1::2], strict=True)}


def become(assignment: dict[str, Any]) -> list[str]:
    """Turn a spare into a service's replica: its folder, environment and log; returns its options."""
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path.pop(0)  # the spare's own folder (holding every service's folder) is no import root
    os.chdir(assignment["cwd"])
    os.environ.clear()
    os.environ.update(assignment["env"])
    for folder in reversed(os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        if folder:
            sys.path.insert(0, folder)  # read at interpreter start, which came before the assignment
    log = os.open(assignment["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return assignment["args"]


if __name__ == "__main__":
    sys.exit(main())
