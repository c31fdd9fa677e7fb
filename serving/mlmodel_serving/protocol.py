"""Open Inference Protocol (KServe V2) and KServe V1 over JSON, without a web framework.

Decoders turn request bodies into :class:`InferenceRequest` (a numpy array plus the
requested outputs) and encoders turn numpy outputs into response bodies. Every rejection
is an :class:`InferenceError` that carries its HTTP status and a message naming what is
wrong and what would be accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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


class MixedValues(BadRequest):
    """JSON tensor data mixing text and numbers: rows of a table, typed by its columns.

    Raised while decoding; the request keeps the values as an untyped tensor, which a
    model with named columns reads by position and any other model rejects with
    ``message``.
    """

    def __init__(self, message: str, values: np.ndarray[Any, Any]) -> None:
        super().__init__(message)
        self.values = values


@dataclass(frozen=True, slots=True)
class Tensor:
    """One decoded input tensor. ``datatype`` None: JSON values (a V1 row, or rows mixing
    text and numbers) that the model's input schema types column by column."""

    name: str
    datatype: str | None
    data: np.ndarray[Any, Any]
    # Untyped JSON values mixing text and numbers: why a numeric tensor cannot take them.
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A decoded request: its input tensors, the outputs wanted and how to send them.

    ``binary_outputs``: names of outputs to return with the binary data extension;
    ``binary_default``: whether outputs not named there are returned binary
    (``parameters.binary_data_output``).
    """

    inputs: tuple[Tensor, ...]
    outputs: tuple[str, ...] = ()
    id: str | None = None
    content_type: str | None = None
    binary_outputs: frozenset[str] = frozenset()
    json_outputs: frozenset[str] = frozenset()
    binary_default: bool = False

    @property
    def data(self) -> np.ndarray[Any, Any]:
        """The first input's data (a request of one tensor)."""
        return self.inputs[0].data

    @property
    def datatype(self) -> str | None:
        return self.inputs[0].datatype

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    def wants_binary(self, output: str) -> bool:
        if output in self.binary_outputs:
            return True
        if output in self.json_outputs:
            return False
        return self.binary_default


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


# Largest tensor rank and dimension a request may declare: numpy allows 64 dimensions,
# and a product of dimensions past 2**62 would overflow before any size check. A zero
# dimension makes any shape empty, so the non-zero dimensions are bounded together too:
# numpy refuses an empty array whose other dimensions multiply past its index range.
MAX_DIMS = 16
MAX_DIM = 2**40
# V2 request parameter naming how inputs are laid out; "pd": one tensor per column.
CONTENT_TYPE_PANDAS = "pd"


def decode_v2_request(body: bytes, header_length: int | None = None) -> InferenceRequest:
    """Decode a V2 ``/infer`` body: inputs, optional ``outputs``, ``id`` and ``parameters``.

    ``header_length``: the ``Inference-Header-Content-Length`` header of the binary data
    extension. The first ``header_length`` bytes are then the JSON request and the rest
    holds the tensors whose ``parameters.binary_data_size`` says how many bytes are theirs,
    in input order.
    """
    if header_length is None:
        text = body
        binary: bytes | memoryview = b""
    else:
        if not 0 < header_length <= len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes: expected a JSON header length between 1 and the body size"
            )
        view = memoryview(body)
        text = view[:header_length].tobytes()
        binary = view[header_length:]
    req = _expect_object(
        parse_json(text), "request body" if header_length is None else "request header"
    )
    # numpy reads JSON true among numbers as 1: tensors are searched for booleans only
    # when the body has the word at all (a byte search, far cheaper than a scan).
    booleans = b"true" in text or b"false" in text
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        got = "an empty array" if isinstance(inputs, list) else _json_type(inputs)
        raise BadRequest(
            "'inputs' must be a non-empty array of tensors {name, shape, datatype, data} "
            f"(one 2-D tensor, or one tensor per column), got {got}"
        )
    tensors: list[Tensor] = []
    offset = 0
    for i, raw in enumerate(inputs):
        tensor, used = _decode_v2_input(raw, i, binary, offset, booleans)
        offset += used
        tensors.append(tensor)
    if offset != len(binary):
        raise BadRequest(
            f"the body holds {len(binary) - offset} bytes after the tensors' binary data "
            f"(the inputs' binary_data_size add up to {offset} of {len(binary)})"
        )
    check_unique_names(tensors)
    params = _parameters(req.get("parameters"), "parameters")
    content_type = params.get("content_type")
    if content_type is not None and not isinstance(content_type, str):
        raise BadRequest(
            f'parameters.content_type must be a string (e.g. "pd"), got {_json_type(content_type)}'
        )
    binary_default = _bool_parameter(params, "binary_data_output", "parameters")
    outputs: tuple[str, ...] = ()
    binary_outputs: set[str] = set()
    json_outputs: set[str] = set()
    raw_outputs = req.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise BadRequest(
                f"'outputs' must be an array of {{name}} objects, got {_json_type(raw_outputs)}"
            )
        names = []
        for i, out in enumerate(raw_outputs):
            obj = _expect_object(out, f"outputs[{i}]")
            out_name = obj.get("name")
            if not isinstance(out_name, str):
                raise BadRequest(f"outputs[{i}].name must be a string, got {_json_type(out_name)}")
            names.append(out_name)
            out_params = _parameters(obj.get("parameters"), f"outputs[{i}].parameters")
            wanted = _bool_parameter(out_params, "binary_data", f"outputs[{i}].parameters")
            if "binary_data" in out_params:
                (binary_outputs if wanted else json_outputs).add(out_name)
        outputs = tuple(dict.fromkeys(names))
    request_id = req.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"'id' must be a string, got {_json_type(request_id)}")
    return InferenceRequest(
        inputs=tuple(tensors),
        outputs=outputs,
        id=request_id,
        content_type=content_type,
        binary_outputs=frozenset(binary_outputs),
        json_outputs=frozenset(json_outputs),
        binary_default=binary_default,
    )


def _decode_v2_input(
    raw: Any, i: int, binary: bytes | memoryview, offset: int, booleans: bool = True
) -> tuple[Tensor, int]:
    """One element of ``inputs``; returns the tensor and the binary bytes it used."""
    where = f"inputs[{i}]"
    tensor = _expect_object(raw, where)
    name = tensor.get("name", "input-0" if i == 0 else f"input-{i}")
    if not isinstance(name, str):
        raise BadRequest(f"{where}.name must be a string, got {_json_type(name)}")
    where = f"input {name!r}" if name else where
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequest(
            f"{where}: datatype {datatype!r} is not supported: expected one of {_ACCEPTED_DATATYPES}"
        )
    shape = decode_shape(tensor.get("shape"), f"{where}: shape")
    params = _parameters(tensor.get("parameters"), f"{where}: parameters")
    size = params.get("binary_data_size")
    if size is None:
        try:
            data = decode_tensor_data(tensor.get("data"), datatype, shape, where, booleans)
        except MixedValues as mixed:
            return Tensor(name, None, mixed.values, problem=mixed.message), 0
        return Tensor(name, datatype, data), 0
    if type(size) is not int or size < 0:
        raise BadRequest(
            f"{where}: parameters.binary_data_size must be a non-negative integer, got {size!r}"
        )
    if "data" in tensor:
        raise BadRequest(f"{where} has both 'data' and parameters.binary_data_size: send one")
    if offset + size > len(binary):
        raise BadRequest(
            f"{where}: binary_data_size {size} runs past the end of the body "
            f"({len(binary) - offset} bytes left after the header and earlier tensors)"
        )
    data = decode_raw_tensor(binary[offset : offset + size], datatype, shape, where)
    return Tensor(name, datatype, data), size


def check_unique_names(tensors: Sequence[Tensor]) -> None:
    """Reject a request that names one input twice (every protocol's decoder calls it)."""
    seen: set[str] = set()
    for tensor in tensors:
        if tensor.name in seen:
            raise BadRequest(
                f"input {tensor.name!r} is given more than once: each input name must be unique"
            )
        seen.add(tensor.name)


def _parameters(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    return _expect_object(value, where)


def _bool_parameter(params: Mapping[str, Any], key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}.{key} must be true or false, got {_json_type(value)}")
    return value


def decode_raw_tensor(
    raw: bytes | memoryview, datatype: str, shape: tuple[int, ...], where: str
) -> np.ndarray[Any, Any]:
    """A tensor from its raw bytes (binary data extension, gRPC ``raw_input_contents``).

    Fixed-size types are little-endian, row-major; BYTES elements are each a 4-byte
    little-endian length and that many bytes (UTF-8 text here). Sizes are checked against
    the shape before anything is allocated.
    """
    count = math.prod(shape)
    if datatype == "BYTES":
        return _decode_raw_bytes(raw, count, shape, where)
    dtype = DATATYPES[datatype].newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"{where} has {len(raw)} bytes of {datatype} data but shape {list(shape)} needs "
            f"{count * dtype.itemsize} ({count} elements of {dtype.itemsize} bytes)"
        )
    arr = np.frombuffer(raw, dtype=dtype).astype(DATATYPES[datatype], copy=False)
    if datatype == "BOOL" and arr.size and int(np.frombuffer(raw, dtype=np.uint8).max()) > 1:
        raise BadRequest(f"{where}: BOOL elements must be the bytes 0 or 1")
    if arr.dtype.kind == "f" and arr.size and np.isinf(arr).any():  # NaN: a missing value
        raise BadRequest(f"{where} holds infinite values: expected finite numbers or NaN")
    return arr.reshape(shape)


def _decode_raw_bytes(
    raw: bytes | memoryview, count: int, shape: tuple[int, ...], where: str
) -> np.ndarray[Any, Any]:
    if count * 4 > len(raw):
        raise BadRequest(
            f"{where} has {len(raw)} bytes of BYTES data, too few for the {count} elements of "
            f"shape {list(shape)} (each needs a 4-byte length)"
        )
    view = memoryview(raw)
    values: list[str] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(view):
            raise BadRequest(f"{where}: BYTES data ends inside an element's 4-byte length")
        length = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if pos + length > len(view):
            raise BadRequest(
                f"{where}: a BYTES element declares {length} bytes but only "
                f"{len(view) - pos} remain"
            )
        try:
            values.append(str(view[pos : pos + length], "utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"{where}: a BYTES element is not UTF-8 text") from None
        pos += length
    if pos != len(view):
        raise BadRequest(
            f"{where}: {len(view) - pos} bytes follow the {count} BYTES elements of "
            f"shape {list(shape)}"
        )
    arr = np.empty(count, dtype=object)
    arr[:] = values
    return arr.reshape(shape)


def encode_raw_tensor(arr: np.ndarray[Any, Any]) -> bytes:
    """The raw bytes of ``arr`` (the inverse of :func:`decode_raw_tensor`)."""
    if arr.dtype.kind in "OUS":
        parts = []
        for value in arr.reshape(-1).tolist():
            data = value if isinstance(value, bytes) else str(value).encode()
            parts.append(len(data).to_bytes(4, "little"))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def decode_shape(shape: Any, where: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or not shape:
        raise BadRequest(
            f"{where} must be a non-empty array of non-negative integers, got {_json_type(shape)}"
        )
    if len(shape) > MAX_DIMS:
        raise BadRequest(f"{where} has {len(shape)} dimensions: at most {MAX_DIMS} are accepted")
    elements = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise BadRequest(f"{where} must hold non-negative integers, got {shape!r}")
        if dim > MAX_DIM:
            raise BadRequest(f"{where} has a dimension of {dim}: at most {MAX_DIM} is accepted")
        if dim:
            elements *= dim
    if elements > MAX_DIM:
        raise BadRequest(
            f"{where} {shape!r} multiplies out to {elements} elements (zero dimensions left "
            f"out): at most {MAX_DIM} are accepted"
        )
    return tuple(shape)


def decode_tensor_data(
    data: Any, datatype: str, shape: tuple[int, ...], where: str, booleans: bool = True
) -> np.ndarray[Any, Any]:
    """Turn JSON ``data`` (flat row-major or nested) into an array of ``shape`` and ``datatype``.

    ``booleans``: whether ``data`` may hold JSON booleans (numpy would take ``true`` among
    numbers as 1); False when the caller knows it cannot (no ``true``/``false`` in the body).
    """
    if not isinstance(data, list):
        raise BadRequest(f"{where} must be an array, got {_json_type(data)}")
    expected = math.prod(shape)
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        arr = _object_array(data, datatype, where)
        if arr.size != expected:
            raise _size_error(where, arr.size, shape)
        _check_scalars(arr, datatype, where)
        if not all(type(v) is str or v is None for v in arr.flat):
            raise MixedValues(
                f"{where}: every element of a BYTES tensor must be a string (or null), got numbers",
                arr.reshape(shape),
            )
        return arr.reshape(shape)
    try:
        arr = _as_array(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(
            f"{where} is not a rectangular array of {datatype} values: {exc}"
        ) from None
    if arr.size != expected:
        raise _size_error(where, arr.size, shape)
    # Text among the values (numpy made them all text, or kept objects for text and
    # nulls): rows of a table if anything else is there too, else a plain 400 below.
    if arr.size and (
        arr.dtype.kind in "US" or (arr.dtype.kind == "O" and any(type(v) is str for v in arr.flat))
    ):
        mixed = _object_array(data, datatype, where)
        _check_scalars(mixed, datatype, where)
        if not all(type(v) is str for v in mixed.flat):
            raise MixedValues(
                f"{where} holds text among its numbers, which a {datatype} tensor cannot take",
                mixed.reshape(shape),
            )
    if dtype.kind == "f" and arr.dtype.kind == "O":
        arr = _nulls_to_nan(arr, datatype, where)
    if arr.size and arr.dtype.kind not in _KINDS_FOR[dtype.kind]:
        if dtype.kind in "iu" and arr.dtype.kind in "fO" and _all_integers(data):
            raise BadRequest(f"{where} holds values outside the range of {datatype}")
        raise BadRequest(
            f"{where} holds {_kind_name(arr.dtype)} values, which a {datatype} tensor cannot take"
        )
    if booleans and arr.dtype.kind in "iuf" and _holds_boolean(data):
        raise BadRequest(
            f"{where} holds boolean values among its numbers, which a {datatype} tensor "
            "cannot take: send numbers (or a BOOL tensor)"
        )
    if arr.dtype != dtype:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below
            converted = arr.astype(dtype)
        if dtype.kind in "iu" and arr.size and not np.array_equal(converted, arr):
            raise BadRequest(f"{where} holds values outside the range of {datatype}")
        arr = converted
    if dtype.kind == "f" and arr.size and np.isinf(arr).any():
        raise BadRequest(f"{where} holds values that are not finite or overflow {datatype}")
    return arr.reshape(shape)


# Elements of a long JSON array converted to numpy in one call (see _as_array).
_SLICE = 65536


def _as_array(data: list[Any]) -> np.ndarray[Any, Any]:
    """``np.asarray(data)``; a long array of numbers converted a slice at a time.

    One call over a million nested rows holds the GIL for about half a second, which a
    large request decoded in a thread would make the event loop wait; between slices the
    loop gets the GIL. Slices that are not all numbers of one shape (text, ragged rows)
    are converted again in one call, for numpy's own result or error.
    """
    if len(data) <= _SLICE:
        return np.asarray(data)
    try:
        parts = [np.asarray(data[i : i + _SLICE]) for i in range(0, len(data), _SLICE)]
    except (ValueError, TypeError, OverflowError):
        return np.asarray(data)
    rest = parts[0].shape[1:]
    if all(p.dtype.kind in "biuf" and p.shape[1:] == rest for p in parts):
        return np.concatenate(parts)
    return np.asarray(data)


def _holds_boolean(values: list[Any]) -> bool:
    """Whether JSON ``values`` (nested lists) hold ``true`` or ``false`` anywhere."""
    for value in values:
        if value is True or value is False:
            return True
        if type(value) is list and _holds_boolean(value):
            return True
    return False


def _all_integers(values: list[Any]) -> bool:
    """Whether JSON ``values`` (nested lists) are all integers (for an error message)."""
    return all(_all_integers(v) if type(v) is list else type(v) is int for v in values)


def _nulls_to_nan(arr: np.ndarray[Any, Any], datatype: str, where: str) -> np.ndarray[Any, Any]:
    """A floating-point tensor given with JSON nulls (missing values): null becomes NaN.

    Whether the model takes NaN is the model's business (an imputer does); anything else
    that is not a number is rejected here.
    """
    values = arr.reshape(-1).tolist()
    for value in values:
        if value is not None and (type(value) is bool or not isinstance(value, int | float)):
            raise BadRequest(
                f"{where} holds {_json_type(value)} ({value!r}), which a {datatype} tensor cannot "
                "take: expected numbers, or null for a missing value"
            )
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64).reshape(
        arr.shape
    )


def _object_array(data: list[Any], datatype: str, where: str) -> np.ndarray[Any, Any]:
    try:
        arr = np.asarray(data, dtype=object)
    except (ValueError, TypeError) as exc:
        raise BadRequest(
            f"{where} is not a rectangular array of {datatype} values: {exc}"
        ) from None
    return arr


def _check_scalars(arr: np.ndarray[Any, Any], datatype: str, where: str) -> None:
    for v in arr.flat:
        if isinstance(v, list | dict) or type(v) is bool:
            raise BadRequest(
                f"{where} holds {_json_type(v)}, which a {datatype} tensor cannot take: "
                "expected a flat or nested array of scalars"
            )


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
    """Decode a KServe V1 ``:predict`` body.

    ``{"instances": [[...], ...]}``: rows as arrays (numbers, strings, or mixed values for a
    model with typed columns); ``{"instances": [{"column": value, ...}, ...]}``: rows as
    objects, one column per key.
    """
    req = _expect_object(parse_json(body), "request body")
    instances = req.get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadRequest(
            f"'instances' must be a non-empty array of rows, e.g. {{\"instances\": [[1.0, 2.0]]}} "
            f'or {{"instances": [{{"tenure": 34, "contract": "month"}}]}}, '
            f"got {_json_type(instances)}"
        )
    if isinstance(instances[0], dict):
        if not instances[0]:
            raise BadRequest(
                "instances[0] is an empty object: a row given as an object names each column, "
                'e.g. {"instances": [{"tenure": 34, "contract": "month"}]}'
            )
        return InferenceRequest(inputs=_v1_object_rows(instances))
    if not all(isinstance(row, list) for row in instances):
        raise BadRequest(
            "every element of 'instances' must be an array (one row of features) "
            "or, for rows as objects, every element an object"
        )
    rows = len(instances)
    cols = len(instances[0])
    if any(len(row) != cols for row in instances):
        raise BadRequest("'instances' rows must all have the same length")
    if cols == 0:
        raise BadRequest("'instances' rows are empty: each row needs one value per feature")
    values = [v for row in instances for v in row]
    if all(type(v) is str for v in values):
        arr = decode_tensor_data(instances, "BYTES", (rows, cols), "instances")
        return InferenceRequest(inputs=(Tensor("instances", "BYTES", arr),))
    if all(isinstance(v, int | float) and type(v) is not bool for v in values):
        arr = decode_tensor_data(instances, "FP64", (rows, cols), "instances", booleans=False)
        return InferenceRequest(inputs=(Tensor("instances", "FP64", arr),))
    for v in values:
        if isinstance(v, list | dict):
            raise BadRequest(
                f"'instances' rows must hold numbers, strings or null, got {_json_type(v)}"
            )
    arr = np.empty(rows * cols, dtype=object)
    arr[:] = values
    return InferenceRequest(inputs=(Tensor("instances", None, arr.reshape(rows, cols)),))


def _v1_object_rows(instances: list[Any]) -> tuple[Tensor, ...]:
    """Rows as objects -> one untyped column tensor per key, in the first row's key order."""
    columns: dict[str, list[Any]] = {}
    first = instances[0]
    for key in first:
        columns[key] = []
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise BadRequest(
                f"instances[{i}] is {_json_type(row)}: when rows are objects, every row must be one"
            )
        if row.keys() != first.keys():
            missing = [k for k in first if k not in row]
            extra = [k for k in row if k not in first]
            what = f"lacks {missing}" if missing else f"has keys the first row lacks: {extra}"
            raise BadRequest(
                f"instances[{i}] {what}: every row must name the same columns "
                "(use null for a missing value)"
            )
        for key, value in row.items():
            if isinstance(value, list | dict):
                raise BadRequest(
                    f"instances[{i}][{key!r}] is {_json_type(value)}: "
                    "a column value must be a number, a string or null"
                )
            columns[key].append(value)
    tensors = []
    for key, values in columns.items():
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        tensors.append(Tensor(key, None, arr))
    return tuple(tensors)


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


def encode_v2_binary_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    binary: Callable[[str], bool],
) -> tuple[bytes, int]:
    """A V2 response with the binary data extension: (body, JSON header length).

    Outputs for which ``binary(name)`` is true carry ``parameters.binary_data_size`` and
    their raw bytes follow the JSON header in output order; the others stay JSON.
    """
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "shape": list(arr.shape),
            "datatype": datatype_of(arr),
        }
        if binary(name):
            raw = encode_raw_tensor(arr)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _json_data(arr)
        tensors.append(entry)
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": tensors,
    }
    if request_id is not None:
        response["id"] = request_id
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join([header, *blobs]), len(header)


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
