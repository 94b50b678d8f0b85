"""What a handler service's code works with. A handler is a function in the service's code:

    # code/model.py, with `handler: model:predict` and `init: model:load` in the FDL
    import onnxruntime

    def load():                       # once per replica, before it takes any call
        return onnxruntime.InferenceSession("model.onnx")

    def predict(request):             # once per call (or per batch, with `batch:`)
        pixels = request.json()
        label = request.state.run(None, {"x": pixels})[0]
        return {"label": int(label[0])}    # dict/list -> JSON, str -> text, bytes -> raw

`request.state` is what `init` returned. Called through KServe's V2 protocol, `request.inputs`
holds the input tensors as numpy arrays, and what the handler returns becomes the outputs.
Raise `HTTPError(400, "why")` to refuse an input; any other exception answers 500 with its
message. This module imports nothing heavy (not even dataclasses): every replica loads it.
"""

from __future__ import annotations

import json
from typing import Any


class Request:
    """One call, as the handler sees it."""

    __slots__ = ("body", "content_type", "headers", "inputs", "params", "state")

    def __init__(
        self,
        body: bytes,
        content_type: str = "",
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        state: Any = None,
        inputs: dict[str, Any] | None = None,
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}
        self.params = params or {}  # the query string
        self.state = state  # what the service's `init` returned
        # A KServe V2 inference call (`POST /v2/models/{svc}/infer`): input name -> numpy array.
        self.inputs = inputs

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode()

    def __repr__(self) -> str:
        return f"Request({len(self.body)} bytes, content_type={self.content_type!r})"


class Response:
    """An answer with an explicit content type (and status), when the default one will not do."""

    __slots__ = ("body", "content_type", "status")

    def __init__(
        self, body: bytes | str, content_type: str = "application/octet-stream", status: int = 200
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.status = status


class HTTPError(Exception):
    """Refuse a call with a status (4xx for bad input) and a message the caller sees."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


__all__ = ["HTTPError", "Request", "Response"]
