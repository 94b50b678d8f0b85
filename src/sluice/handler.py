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
message. This module imports nothing heavy: every replica loads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    body: bytes
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    state: Any = None  # what the service's `init` returned
    # A KServe V2 inference call (`POST /v2/models/{svc}/infer`): input name -> numpy array.
    inputs: dict[str, Any] | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode()


@dataclass(frozen=True)
class Response:
    """An answer with an explicit content type (and status), when the default one will not do."""

    body: bytes | str
    content_type: str = "application/octet-stream"
    status: int = 200


class HTTPError(Exception):
    """Refuse a call with a status (4xx for bad input) and a message the caller sees."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


__all__ = ["HTTPError", "Request", "Response"]
