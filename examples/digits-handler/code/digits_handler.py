"""The digits classifier as a handler service: the model is loaded once per replica (`load`),
and each call (`classify`) only parses its input and runs the model."""

from __future__ import annotations

from typing import Any

import numpy as np

from sluice.demo import digits
from sluice.handler import HTTPError, Request


def load() -> Any:
    return digits.load_session()


def classify(request: Request) -> Any:
    session = request.state
    if request.inputs is not None:  # KServe V2: a batch of digits, shape [n, 64]
        pixels = np.asarray(request.inputs["pixels"], dtype=np.float32).reshape(-1, digits.N_PIXELS)
        labels, _ = session.run(None, {session.get_inputs()[0].name: pixels})
        return {"label": np.asarray(labels, dtype=np.int64)}
    try:
        pixels = digits.parse_input(request.body)
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from None
    return digits.predict(session, pixels)
