"""KServe's Open Inference Protocol (V2) tensors, decoded and encoded inside a replica.

A V2 request's `inputs` reach the handler as `request.inputs`: a dict of name -> numpy array
shaped as declared (nested lists where numpy is not installed). What the handler returns
becomes the response's `outputs`:

- a dict with an `outputs` list: taken as V2 outputs already;
- a dict of name -> array or list: one output each;
- anything else (an array, a list, a number): one output named `output-0`.
"""

from __future__ import annotations

from typing import Any

# V2 datatype <-> numpy dtype name
DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
DTYPES = {dtype: datatype for datatype, dtype in DATATYPES.items()}


class TensorError(ValueError):
    """A V2 request whose tensors do not add up (the caller's mistake: 400)."""


def decode_inputs(request: dict[str, Any]) -> dict[str, Any]:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise TensorError("a V2 inference request needs a non-empty 'inputs' list")
    decoded = {}
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise TensorError(f"inputs[{index}] must be an object with name, shape, datatype and data")
        missing = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
        if missing:
            raise TensorError(f"inputs[{index}] lacks {', '.join(missing)}")
        datatype = tensor["datatype"]
        if datatype not in DATATYPES:
            raise TensorError(f"inputs[{index}].datatype '{datatype}' is not one of {', '.join(DATATYPES)}")
        decoded[tensor["name"]] = _array(tensor["data"], tensor["shape"], datatype, f"inputs[{index}]")
    return decoded


def _array(data: Any, shape: Any, datatype: str, where: str) -> Any:
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise TensorError(f"{where}.shape must be a list of sizes")
    try:
        import numpy as np
    except ImportError:  # the handler gets the data as sent
        return data
    try:
        array = np.asarray(data, dtype=DATATYPES[datatype])
        return array.reshape(shape)
    except (ValueError, TypeError) as exc:
        raise TensorError(f"{where}: the data does not fit shape {shape} as {datatype}: {exc}") from None


def encode_outputs(result: Any) -> list[dict[str, Any]]:
    if isinstance(result, dict) and isinstance(result.get("outputs"), list):
        return result["outputs"]
    if isinstance(result, dict):
        return [_tensor(str(name), value) for name, value in result.items()]
    return [_tensor("output-0", result)]


def _tensor(name: str, value: Any) -> dict[str, Any]:
    try:
        import numpy as np
    except ImportError:
        np = None  # type: ignore[assignment]
    if np is not None:
        array = np.asarray(value)
        if array.dtype.kind in "USO":
            return {
                "name": name,
                "shape": list(array.shape),
                "datatype": "BYTES",
                "data": array.ravel().tolist(),
            }
        datatype = DTYPES.get(array.dtype.name)
        if datatype is None:
            raise TypeError(f"output '{name}' has dtype {array.dtype}, which V2 cannot carry")
        return {
            "name": name,
            "shape": list(array.shape),
            "datatype": datatype,
            "data": array.ravel().tolist(),
        }
    flat, shape = _flatten(value)
    datatype = "BYTES" if any(isinstance(v, str) for v in flat) else "FP64"
    return {"name": name, "shape": shape, "datatype": datatype, "data": flat}


def _flatten(value: Any) -> tuple[list[Any], list[int]]:
    if not isinstance(value, list | tuple):
        return [value], []
    if not value:
        return [], [0]
    parts = [_flatten(item) for item in value]
    return [v for flat, _ in parts for v in flat], [len(value), *parts[0][1]]
