"""Open Inference Protocol (KServe V2) and KServe V1 over JSON, without a web framework.

Decoders turn request bodies into :class:`InferenceRequest` (a numpy array plus the
requested outputs) and encoders turn numpy outputs into response bodies. Every rejection
is an :class:`InferenceError` that carries its HTTP status and a message naming what is
wrong and what would be accepted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

# V2 datatype -> numpy dtype. BYTES tensors hold Python str objects.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_ACCEPTED_DATATYPES = ", ".join(DATATYPES)
# Which numpy kinds (as inferred from the JSON values) each datatype family accepts.
_KINDS_FOR = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


class InferenceError(Exception):
    """A request that cannot be answered; ``status`` is the HTTP status to reply with."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(InferenceError):
    status = 400


class NotFound(InferenceError):
    status = 404


class MethodNotAllowed(InferenceError):
    status = 405


class PayloadTooLarge(InferenceError):
    status = 413


class NotReady(InferenceError):
    status = 503


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A decoded request: one input tensor and the names of the outputs wanted."""

    data: np.ndarray[Any, Any]
    datatype: str
    outputs: tuple[str, ...] = ()
    id: str | None = None
    input_name: str = "input-0"


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def _expect_object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def decode_v2_request(body: bytes) -> InferenceRequest:
    """Decode a V2 ``/infer`` body: exactly one input tensor, optional ``outputs`` and ``id``."""
    req = _expect_object(parse_json(body), "request body")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        got = f"{len(inputs)} tensors" if isinstance(inputs, list) else _json_type(inputs)
        raise BadRequest(
            f"'inputs' must be an array with exactly one tensor "
            f"{{name, shape, datatype, data}}, got {got}"
        )
    tensor = _expect_object(inputs[0], "inputs[0]")
    name = tensor.get("name", "input-0")
    if not isinstance(name, str):
        raise BadRequest(f"inputs[0].name must be a string, got {_json_type(name)}")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequest(
            f"inputs[0].datatype {datatype!r} is not supported: expected one of {_ACCEPTED_DATATYPES}"
        )
    shape = decode_shape(tensor.get("shape"), "inputs[0].shape")
    data = decode_tensor_data(tensor.get("data"), datatype, shape, "inputs[0].data")

    outputs: tuple[str, ...] = ()
    raw_outputs = req.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise BadRequest(
                f"'outputs' must be an array of {{name}} objects, got {_json_type(raw_outputs)}"
            )
        names = []
        for i, out in enumerate(raw_outputs):
            out_name = _expect_object(out, f"outputs[{i}]").get("name")
            if not isinstance(out_name, str):
                raise BadRequest(f"outputs[{i}].name must be a string, got {_json_type(out_name)}")
            names.append(out_name)
        outputs = tuple(dict.fromkeys(names))
    request_id = req.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"'id' must be a string, got {_json_type(request_id)}")
    return InferenceRequest(
        data=data, datatype=datatype, outputs=outputs, id=request_id, input_name=name
    )


def decode_shape(shape: Any, where: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or not shape:
        raise BadRequest(
            f"{where} must be a non-empty array of non-negative integers, got {_json_type(shape)}"
        )
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise BadRequest(f"{where} must hold non-negative integers, got {shape!r}")
    return tuple(shape)


def decode_tensor_data(
    data: Any, datatype: str, shape: tuple[int, ...], where: str
) -> np.ndarray[Any, Any]:
    """Turn JSON ``data`` (flat row-major or nested) into an array of ``shape`` and ``datatype``."""
    if not isinstance(data, list):
        raise BadRequest(f"{where} must be an array, got {_json_type(data)}")
    expected = math.prod(shape)
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        arr = np.asarray(data, dtype=object)
        if arr.size != expected:
            raise _size_error(where, arr.size, shape)
        if not all(type(v) is str for v in arr.flat):
            raise BadRequest(f"{where}: every element of a BYTES tensor must be a string")
        return arr.reshape(shape)
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(
            f"{where} is not a rectangular array of {datatype} values: {exc}"
        ) from None
    if arr.size != expected:
        raise _size_error(where, arr.size, shape)
    if arr.size and arr.dtype.kind not in _KINDS_FOR[dtype.kind]:
        raise BadRequest(
            f"{where} holds {_kind_name(arr.dtype)} values, which a {datatype} tensor cannot take"
        )
    if arr.dtype != dtype:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below
            converted = arr.astype(dtype)
        if dtype.kind in "iu" and arr.size and not np.array_equal(converted, arr):
            raise BadRequest(f"{where} holds values outside the range of {datatype}")
        arr = converted
    if dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        raise BadRequest(f"{where} holds values that are not finite or overflow {datatype}")
    return arr.reshape(shape)


def _size_error(where: str, size: int, shape: tuple[int, ...]) -> BadRequest:
    return BadRequest(
        f"{where} has {size} elements but shape {list(shape)} needs {math.prod(shape)}"
    )


def _kind_name(dtype: np.dtype[Any]) -> str:
    return {
        "b": "boolean",
        "i": "integer",
        "u": "integer",
        "f": "floating-point",
        "U": "string",
        "S": "string",
        "O": "mixed or non-numeric",
    }.get(dtype.kind, dtype.kind)


def decode_v1_request(body: bytes) -> InferenceRequest:
    """Decode a KServe V1 ``:predict`` body ``{"instances": [[...], ...]}``."""
    req = _expect_object(parse_json(body), "request body")
    instances = req.get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadRequest(
            f"'instances' must be a non-empty array of rows, e.g. {{\"instances\": [[1.0, 2.0]]}}, "
            f"got {_json_type(instances)}"
        )
    if not all(isinstance(row, list) for row in instances):
        raise BadRequest("every element of 'instances' must be an array (one row of features)")
    if all(isinstance(v, str) for row in instances for v in row):
        rows = len(instances)
        cols = len(instances[0])
        if any(len(row) != cols for row in instances):
            raise BadRequest("'instances' rows must all have the same length")
        arr = decode_tensor_data(instances, "BYTES", (rows, cols), "instances")
        return InferenceRequest(data=arr, datatype="BYTES")
    try:
        arr = np.asarray(instances)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"'instances' is not a rectangular array of numbers: {exc}") from None
    if arr.ndim != 2:
        raise BadRequest(f"'instances' must be an array of rows (2-D), got {arr.ndim}-D")
    return InferenceRequest(
        data=decode_tensor_data(instances, "FP64", arr.shape, "instances"), datatype="FP64"
    )


def datatype_of(arr: np.ndarray[Any, Any]) -> str:
    """The V2 datatype for a numpy output array."""
    kind = arr.dtype.kind
    if kind in "OUS":
        return "BYTES"
    for name, dtype in DATATYPES.items():
        if dtype == arr.dtype:
            return name
    raise TypeError(f"no V2 datatype for numpy dtype {arr.dtype}")


def _json_data(arr: np.ndarray[Any, Any]) -> Any:
    # orjson serializes contiguous numeric arrays natively; everything else via tolist().
    flat = np.ascontiguousarray(arr).reshape(-1)
    if flat.dtype.kind in "biuf" and flat.dtype != np.float16:
        return flat
    return flat.tolist()


def encode_v2_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray[Any, Any]],
) -> bytes:
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": [
            {
                "name": name,
                "shape": list(arr.shape),
                "datatype": datatype_of(arr),
                "data": _json_data(arr),
            }
            for name, arr in outputs.items()
        ],
    }
    if request_id is not None:
        response["id"] = request_id
    return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_v1_response(outputs: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    """``{"predictions": [...]}``: the first output, one entry per row."""
    arr = next(iter(outputs.values()))
    data = arr if arr.dtype.kind in "biuf" and arr.dtype != np.float16 else arr.tolist()
    return orjson.dumps({"predictions": data}, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_error(message: str, request_id: str | None = None) -> bytes:
    body: dict[str, str] = {"error": message}
    if request_id is not None:
        body["request_id"] = request_id
    return orjson.dumps(body)


def encode_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def tensor_metadata(name: str, datatype: str, shape: Sequence[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": list(shape)}
