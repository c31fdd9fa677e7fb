"""What a stable and a candidate answered to the same request, and whether they agree.

Both answers are read back from the bytes each server sent (the stable's from the
response it handed to its client), by the same decoder, so the comparison sees exactly
what a client would have seen:

- KServe V1: ``predictions``, one entry per row (the first output, ``predict``);
- Open Inference Protocol V2, JSON or the binary data extension: the ``predict`` output
  when the answer has one (the labels of a classifier, the values of a regressor);
  otherwise every output it has (``predict_proba``, ``decision_function``).

Values agree when they are equal; numbers of which either is a float agree when
``|a - b| <= 1e-9 * max(1, |a|)`` (``a`` the stable's value), and NaN agrees with NaN.
Class labels are integers or strings and are compared exactly; float labels differ by far
more than the tolerance. An answer that cannot be read, lacks the compared output or has
another number of rows is an error (:class:`UnreadableAnswer`), not a disagreement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlmodel_serving.protocol import InferenceError, decode_raw_tensor, decode_shape

#: Relative tolerance for float predictions (regressors, probabilities).
FLOAT_TOLERANCE = 1e-9
#: Values of each prediction kept in a disagreement record and its log line.
SHOWN_VALUES = 16


class UnreadableAnswer(ValueError):
    """An answer that cannot be compared: not the protocol's shape, or missing outputs."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """The compared outputs of one answer: name -> values, first axis the rows."""

    outputs: Mapping[str, np.ndarray[Any, Any]]

    def shown(self, limit: int = SHOWN_VALUES) -> dict[str, Any]:
        """The first ``limit`` values of each output (flattened), for logs and the endpoint."""
        out: dict[str, Any] = {}
        for name, arr in self.outputs.items():
            flat = arr.reshape(-1)
            values = [_plain(v) for v in flat[:limit].tolist()]
            entry: dict[str, Any] = {"values": values}
            if flat.size > limit:
                entry["of"] = int(flat.size)
            out[name] = entry
        return out


@dataclass(frozen=True, slots=True)
class Verdict:
    agree: bool
    rows: int  # rows compared
    differing_rows: tuple[int, ...]  # the first few row indices that differ


def read_v1(body: bytes) -> Prediction:
    """The ``predictions`` of a KServe V1 answer."""
    doc = _json_object(body)
    predictions = doc.get("predictions")
    if not isinstance(predictions, list):
        raise UnreadableAnswer("a V1 answer without a 'predictions' array")
    return Prediction({"predictions": _array(predictions, "predictions")})


def read_v2(body: bytes, header_length: int | None = None) -> Prediction:
    """The compared outputs of a V2 answer (``header_length``: the binary extension's)."""
    if header_length is not None:
        if not 0 <= header_length <= len(body):
            raise UnreadableAnswer(
                f"inference-header-content-length {header_length} outside a body of "
                f"{len(body)} bytes"
            )
        doc = _json_object(body[:header_length])
        rest = memoryview(body)[header_length:]
    else:
        doc = _json_object(body)
        rest = memoryview(b"")
    outputs = doc.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise UnreadableAnswer("a V2 answer without 'outputs'")
    decoded: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for entry in outputs:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise UnreadableAnswer("a V2 output that is not an object with a name")
        name = entry["name"]
        arr, used = _v2_output(entry, rest[offset:])
        offset += used
        decoded[name] = arr
    if offset != len(rest):
        raise UnreadableAnswer(f"{len(rest) - offset} bytes follow the answer's binary outputs")
    if "predict" in decoded:
        return Prediction({"predict": decoded["predict"]})
    return Prediction(decoded)


def _v2_output(entry: Mapping[str, Any], rest: memoryview) -> tuple[np.ndarray[Any, Any], int]:
    name = entry["name"]
    try:
        shape = decode_shape(entry.get("shape"), f"output {name!r} shape")
    except InferenceError as exc:
        raise UnreadableAnswer(exc.message) from None
    datatype = entry.get("datatype")
    params = entry.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(rest):
            raise UnreadableAnswer(f"output {name!r}: binary_data_size {size!r} outside the body")
        if not isinstance(datatype, str):
            raise UnreadableAnswer(f"output {name!r} has no datatype")
        try:
            arr = decode_raw_tensor(rest[:size], datatype, shape, f"output {name!r}")
        except (InferenceError, KeyError) as exc:
            raise UnreadableAnswer(f"output {name!r}: {exc}") from None
        return arr, size
    data = entry.get("data")
    if not isinstance(data, list):
        raise UnreadableAnswer(f"output {name!r} has neither data nor binary_data_size")
    arr = _array(data, name)
    if arr.size != math.prod(shape):
        raise UnreadableAnswer(f"output {name!r}: {arr.size} values for shape {list(shape)}")
    return arr.reshape(shape), 0


def compare(stable: Prediction, candidate: Prediction) -> Verdict:
    """Whether ``candidate`` predicts what ``stable`` did for every row.

    Raises :class:`UnreadableAnswer` when the candidate lacks an output the stable has, or
    answers another number of rows.
    """
    rows = 0
    differing: np.ndarray[Any, Any] | None = None
    for name, a in stable.outputs.items():
        b = candidate.outputs.get(name)
        if b is None:
            raise UnreadableAnswer(
                f"the candidate's answer has no output {name!r} (it has "
                f"{', '.join(candidate.outputs) or 'none'})"
            )
        n = a.shape[0] if a.ndim else 1
        if (b.shape[0] if b.ndim else 1) != n:
            raise UnreadableAnswer(
                f"output {name!r}: the candidate answered shape {list(b.shape)} for the "
                f"stable's {list(a.shape)}"
            )
        rows = max(rows, n)
        row_differs = _rows_differ(a.reshape(n, -1), b.reshape(n, -1))
        differing = row_differs if differing is None else differing | row_differs
    if differing is None or not differing.any():
        return Verdict(True, rows, ())
    return Verdict(False, rows, tuple(np.flatnonzero(differing)[:SHOWN_VALUES].tolist()))


def _rows_differ(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """One boolean per row: some value of the row differs (``a``, ``b``: ``[rows, k]``)."""
    if a.shape[1] != b.shape[1]:
        return np.ones(a.shape[0], dtype=bool)
    if a.dtype.kind in "iufb" and b.dtype.kind in "iufb":
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            x, y = a.astype(np.float64), b.astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                close = np.abs(x - y) <= FLOAT_TOLERANCE * np.maximum(1.0, np.abs(x))
            close |= np.isnan(x) & np.isnan(y)
            close |= x == y  # equal infinities
            differs: np.ndarray[Any, Any] = ~close.all(axis=1)
            return differs
        unequal: np.ndarray[Any, Any] = (a != b).any(axis=1)
        return unequal
    out = np.zeros(a.shape[0], dtype=bool)
    for i, (ra, rb) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        out[i] = any(not _values_agree(x, y) for x, y in zip(ra, rb, strict=True))
    return out


def _values_agree(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and (isinstance(a, float) or isinstance(b, float))
    ):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b or abs(a - b) <= FLOAT_TOLERANCE * max(1.0, abs(a))
    return type(a) is type(b) and bool(a == b)


def _json_object(body: bytes | memoryview) -> Mapping[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UnreadableAnswer(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UnreadableAnswer("the answer is not a JSON object")
    return doc


def _array(values: Sequence[Any], where: str) -> np.ndarray[Any, Any]:
    """A JSON array as numpy: numbers as numbers, anything else as objects (never mixed
    into strings, so that ``1`` and ``"1"`` stay different)."""
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged
        raise UnreadableAnswer(f"{where}: rows of different lengths") from None
    if arr.dtype.kind in "US":  # text: compared as Python strings
        return np.asarray(values, dtype=object)
    if arr.dtype.kind not in "iufbO":
        raise UnreadableAnswer(f"{where}: values of type {arr.dtype}")
    return arr


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN
    return value
