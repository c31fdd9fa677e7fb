"""Decision records: what the server answered, to whom, from which artifact, as Parquet.

One :class:`Decision` per inference request (whatever batching did), made on the request
path at the cost of one small object; the writer (:mod:`mlmodel_serving.decisionlog`)
turns a batch of them into one Parquet file with :func:`encode_batch`, off the request
path. The CLI reads them back with :func:`read_table` and :func:`decode_table`.

A file holds the decisions of one model version (one server process serves one). Its
columns, one row per request:

* ``request_id``, ``time`` (UTC, microseconds; when the request arrived), ``namespace``,
  ``model``, ``version``, ``sha256`` (the artifact that answered), ``protocol`` (``v2``,
  ``v1``, ``grpc``), ``status`` (HTTP status; gRPC answers carry their HTTP equivalent),
  ``error`` (the message sent to the client, null on success), ``latency_ms``, ``rows``;
* ``input.<column>``: a list with one value per row of the request, one column per model
  input, in the model's order and with its type (``double`` or ``string``), exactly as
  ``predict`` received it (a numeric model without column names has ``input.x0`` ...);
  null when the request failed before its inputs were understood. A redacted column holds
  ``hmac-sha256:<hex>`` of each value instead (:func:`redact_value`);
* ``output.<name>``: the outputs returned (``predict``, ``predict_proba``, ...), a list
  per request (a list of lists for 2-D outputs); null where not asked for or on error.

The file's key-value metadata repeats what every row shares and says how to read the
rest: ``mlmodel.format``, ``mlmodel.inputs`` (JSON: the model's columns and types),
``mlmodel.redacted`` (JSON list), ``mlmodel.predict_path`` (how the outputs were
computed: ``sklearn``, or ``leaf-tables`` for the server's compiled forests) and the
model identity.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from mlmodel_serving.tabular import NUMBER, TEXT, Column, Columns

if TYPE_CHECKING:
    import pyarrow as pa

FORMAT = "1"
INPUT_PREFIX = "input."
OUTPUT_PREFIX = "output."
REDACTED_PREFIX = "hmac-sha256:"
# The text stored for a failed request's error when columns are redacted: an error
# message may quote the value the client sent.
REDACTED_ERROR = "(message withheld: this model redacts input columns and errors may quote them)"
DEFAULT_PREFIX = "decisions"


@dataclass(slots=True)
class Decision:
    """One request's record, filled in as the request is served."""

    request_id: str
    time_ns: int  # wall clock (time.time_ns()) when the request arrived
    protocol: str
    status: int = 0
    latency_s: float = 0.0
    inputs: np.ndarray[Any, Any] | Columns | None = None
    outputs: Mapping[str, np.ndarray[Any, Any]] | None = None
    error: str | None = None
    # Whether request_id came from the client (a header or the protocol's own field);
    # if not, a V2 body's "id" replaces the one the server made up.
    id_given: bool = True


@dataclass(frozen=True)
class ModelIdentity:
    """What every record of one server process shares."""

    namespace: str
    model: str
    version: str
    sha256: str
    columns: tuple[Column, ...]  # the model's inputs, in order
    redact: frozenset[str] = field(default_factory=frozenset)
    # How the server computed the outputs (SklearnModel.predict_path): "sklearn", or
    # "leaf-tables" for its compiled forests; a re-run takes the same path.
    predict_path: str = "sklearn"


def input_columns(columns: tuple[Column, ...] | None, n_features: int | None) -> tuple[Column, ...]:
    """The record's input columns: the model's names, or ``x0``.. for a plain array."""
    if columns is not None:
        return columns
    return tuple(Column(f"x{i}", NUMBER) for i in range(n_features or 0))


def redact_value(key: bytes, value: Any) -> str | None:
    """``hmac-sha256:<hex>`` of a value's canonical text; None stays None (missing).

    Canonical text: a string as UTF-8; a number as Python's shortest ``repr`` of the
    float64 (``42.0``, ``0.1``). NaN is a missing value and is not hashed.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = value if isinstance(value, str) else repr(float(value))
    digest = hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()
    return REDACTED_PREFIX + digest


def partition_key(prefix: str, ident: ModelIdentity, at: dt.datetime, name: str) -> str:
    """``<prefix>/<ns>/<model>/<version>/dt=YYYY-MM-DD/<name>.parquet``."""
    day = at.astimezone(dt.UTC).strftime("%Y-%m-%d")
    return "/".join(
        (prefix.strip("/"), ident.namespace, ident.model, ident.version, f"dt={day}", name)
    )


def model_prefix(prefix: str, namespace: str, model: str, version: str | None = None) -> str:
    """The key prefix of a model's (or one version's) decisions, ending in ``/``."""
    parts = [prefix.strip("/"), namespace, model] + ([version] if version else [])
    return "/".join(parts) + "/"


# ------------------------------------------------------------------------------- writing


def encode_batch(
    decisions: Sequence[Decision], ident: ModelIdentity, redact_key: bytes | None = None
) -> bytes:
    """One Parquet file (zstd) holding ``decisions``."""
    import pyarrow.parquet as pq

    table = to_table(decisions, ident, redact_key)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def to_table(
    decisions: Sequence[Decision], ident: ModelIdentity, redact_key: bytes | None = None
) -> pa.Table:
    import pyarrow as pa

    if ident.redact and redact_key is None:
        raise ValueError("redacted columns need a key")
    n = len(decisions)
    errors: list[str | None] = [d.error for d in decisions]
    if ident.redact:
        errors = [None if e is None else REDACTED_ERROR for e in errors]
    times = np.fromiter((d.time_ns // 1000 for d in decisions), dtype=np.int64, count=n)
    rows = np.fromiter(
        (0 if d.inputs is None else d.inputs.shape[0] for d in decisions), dtype=np.int32, count=n
    )
    columns: dict[str, pa.Array] = {
        "request_id": pa.array([d.request_id for d in decisions], pa.string()),
        "time": pa.array(times, pa.timestamp("us", tz="UTC")),
        "namespace": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, dtype=np.int32)), pa.array([ident.namespace])
        ),
        "model": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, dtype=np.int32)), pa.array([ident.model])
        ),
        "version": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, dtype=np.int32)), pa.array([ident.version])
        ),
        "sha256": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, dtype=np.int32)), pa.array([ident.sha256])
        ),
        "protocol": pa.array([d.protocol for d in decisions], pa.string()),
        "status": pa.array(np.fromiter((d.status for d in decisions), np.int16, n)),
        "error": pa.array(errors, pa.string()),
        "latency_ms": pa.array(
            np.fromiter((d.latency_s * 1000.0 for d in decisions), np.float64, n)
        ),
        "rows": pa.array(rows),
    }
    columns.update(_input_arrays(decisions, ident, redact_key, rows))
    names: list[str] = []
    for d in decisions:
        for name in d.outputs or ():
            if name not in names:
                names.append(name)
    for name in names:
        arrays = [None if d.outputs is None else d.outputs.get(name) for d in decisions]
        columns[OUTPUT_PREFIX + name] = _list_array(arrays, _output_type(arrays))
    metadata = {
        "mlmodel.format": FORMAT,
        "mlmodel.namespace": ident.namespace,
        "mlmodel.model": ident.model,
        "mlmodel.version": ident.version,
        "mlmodel.sha256": ident.sha256,
        "mlmodel.inputs": json.dumps(
            [{"name": c.name, "datatype": c.datatype} for c in ident.columns]
        ),
        "mlmodel.redacted": json.dumps(sorted(ident.redact)),
        "mlmodel.predict_path": ident.predict_path,
    }
    return pa.table(columns).replace_schema_metadata(metadata)


def _input_arrays(
    decisions: Sequence[Decision],
    ident: ModelIdentity,
    redact_key: bytes | None,
    rows: np.ndarray[Any, Any],
) -> dict[str, pa.Array]:
    """The ``input.<column>`` list columns: each column's values of every record are
    concatenated once (one array per column for the whole file), then cut by offsets."""
    import pyarrow as pa

    inputs = [d.inputs for d in decisions]
    present = [x for x in inputs if x is not None]
    width = len(ident.columns)
    offsets = pa.array(np.concatenate(([0], np.cumsum(rows, dtype=np.int64))).astype(np.int32))
    mask = pa.array(np.fromiter((x is None for x in inputs), bool, len(inputs)))
    arrays = [x for x in present if isinstance(x, np.ndarray) and x.ndim == 2]
    tables = [x for x in present if isinstance(x, Columns) and len(x.arrays) == width]
    flat: list[np.ndarray[Any, Any]] | None = None
    if not present:
        flat = [np.empty(0) for _ in ident.columns]
    elif len(arrays) == len(present) and all(x.shape[1] == width for x in arrays):
        matrix: np.ndarray[Any, Any] = np.concatenate(arrays)
        flat = [matrix[:, j] for j in range(width)]
    elif len(tables) == len(present):
        flat = [np.concatenate([x.arrays[j] for x in tables]) for j in range(width)]
    out: dict[str, pa.Array] = {}
    for j, column in enumerate(ident.columns):
        redacted = column.name in ident.redact
        datatype = pa.string() if (redacted or column.datatype == TEXT) else pa.float64()
        if flat is None:  # records of different shapes (never from one server): one by one
            values = [_input_column(x, j) for x in inputs]
            if redacted:
                assert redact_key is not None
                values = [_redact_array(v, redact_key) for v in values]
            out[INPUT_PREFIX + column.name] = _list_array(values, datatype)
            continue
        column_values = flat[j]
        if redacted:
            assert redact_key is not None
            column_values = _redact_array(column_values, redact_key)
        out[INPUT_PREFIX + column.name] = pa.ListArray.from_arrays(
            offsets, _flat_values(column_values, datatype), mask=mask
        )
    return out


def _input_column(
    inputs: np.ndarray[Any, Any] | Columns | None, j: int
) -> np.ndarray[Any, Any] | None:
    if inputs is None:
        return None
    if isinstance(inputs, Columns):
        return inputs.arrays[j]
    if inputs.ndim != 2 or j >= inputs.shape[1]:
        return None
    return inputs[:, j]


@overload
def _redact_array(values: np.ndarray[Any, Any], key: bytes) -> np.ndarray[Any, Any]: ...
@overload
def _redact_array(values: None, key: bytes) -> None: ...
def _redact_array(values: np.ndarray[Any, Any] | None, key: bytes) -> np.ndarray[Any, Any] | None:
    if values is None:
        return None
    out = np.empty(values.shape[0], dtype=object)
    for i, value in enumerate(values.tolist()):
        out[i] = redact_value(key, value)
    return out


def _output_type(arrays: Sequence[np.ndarray[Any, Any] | None]) -> pa.DataType:
    import pyarrow as pa

    present = [a for a in arrays if a is not None]
    kinds = {a.dtype.kind for a in present}
    if kinds & {"U", "S", "O"}:
        inner: pa.DataType = pa.string()
    elif kinds <= {"i", "u", "b"} and kinds:
        inner = pa.int64()
    else:
        inner = pa.float64()
    if any(a.ndim == 2 for a in present):
        return pa.list_(inner)
    return inner


def _list_array(values: Sequence[np.ndarray[Any, Any] | None], datatype: pa.DataType) -> pa.Array:
    """A list column: one list per record (null where the record has no value)."""
    import pyarrow as pa

    present = [v for v in values if v is not None]
    lengths = np.fromiter((0 if v is None else v.shape[0] for v in values), np.int64, len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    mask = np.fromiter((v is None for v in values), bool, len(values))
    flat: np.ndarray[Any, Any] = np.concatenate(present) if present else np.empty(0)
    if pa.types.is_list(datatype):  # 2-D outputs: list of rows, each a list
        inner_type = datatype.value_type
        width = int(flat.shape[-1]) if flat.ndim == 2 else 0
        inner_values = _flat_values(flat.reshape(-1), inner_type)
        inner_offsets = np.arange(0, flat.shape[0] * width + 1, max(width, 1), dtype=np.int32)
        if width == 0:
            inner_offsets = np.zeros(flat.shape[0] + 1, dtype=np.int32)
        inner = pa.ListArray.from_arrays(pa.array(inner_offsets), inner_values)
        return pa.ListArray.from_arrays(pa.array(offsets), inner, mask=pa.array(mask))
    return pa.ListArray.from_arrays(
        pa.array(offsets), _flat_values(flat.reshape(-1), datatype), mask=pa.array(mask)
    )


def _flat_values(flat: np.ndarray[Any, Any], datatype: pa.DataType) -> pa.Array:
    import pyarrow as pa

    if pa.types.is_string(datatype):
        items = [
            None
            if v is None or (isinstance(v, float) and math.isnan(v))
            else (v.decode() if isinstance(v, bytes) else str(v))
            for v in flat.tolist()
        ]
        return pa.array(items, pa.string())
    if pa.types.is_integer(datatype):
        return pa.array(flat.astype(np.int64, copy=False))
    return pa.array(flat.astype(np.float64, copy=False))


def output_values(values: np.ndarray[Any, Any]) -> list[Any]:
    """An output as a record stores it (and :class:`Record` returns it): to compare a
    re-run with the record, value for value (float64 bit for bit, int64, or text)."""
    kind = values.dtype.kind
    if kind in "USO":
        return (
            [
                None
                if v is None or (isinstance(v, float) and math.isnan(v))
                else (v.decode() if isinstance(v, bytes) else str(v))
                for v in values.reshape(-1).tolist()
            ]
            if values.ndim == 1
            else [output_values(row) for row in values]
        )
    cast = values.astype(np.int64 if kind in "iub" else np.float64, copy=False)
    return cast.tolist()  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Record:
    """One decision read back from a file."""

    request_id: str
    time: dt.datetime
    namespace: str
    model: str
    version: str
    sha256: str
    protocol: str
    status: int
    error: str | None
    latency_ms: float
    rows: int
    inputs: dict[str, list[Any]] | None  # column -> one value per row
    outputs: dict[str, list[Any]]  # output name -> as returned
    columns: tuple[Column, ...]
    redacted: frozenset[str]
    predict_path: str = "sklearn"
    key: str = ""  # the object it was read from

    def model_input(self) -> np.ndarray[Any, Any] | Columns:
        """The input exactly as ``predict`` received it: a float64 array, or Columns."""
        if self.inputs is None:
            raise ValueError(f"request {self.request_id} has no recorded inputs ({self.error})")
        hidden = [c.name for c in self.columns if c.name in self.redacted]
        if hidden:
            raise ValueError(
                f"request {self.request_id}: column(s) {', '.join(hidden)} are redacted "
                "(stored as a keyed hash), so its inputs cannot be re-run"
            )
        arrays = []
        for column in self.columns:
            values = self.inputs[column.name]
            if column.datatype == TEXT:
                out = np.empty(len(values), dtype=object)
                for i, v in enumerate(values):
                    out[i] = math.nan if v is None else v
                arrays.append(out)
            else:
                arrays.append(
                    np.array([math.nan if v is None else v for v in values], dtype=np.float64)
                )
        if any(c.datatype == TEXT for c in self.columns):
            return Columns(tuple(c.name for c in self.columns), tuple(arrays))
        if not arrays:
            return np.empty((0, 0), dtype=np.float64)
        return np.column_stack(arrays)

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "namespace": self.namespace,
            "model": self.model,
            "version": self.version,
            "sha256": self.sha256,
            "protocol": self.protocol,
            "status": self.status,
            "error": self.error,
            "latency_ms": self.latency_ms,
            "rows": self.rows,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "redacted": sorted(self.redacted),
            "predict_path": self.predict_path,
            "object": self.key,
        }


def read_table(data: bytes) -> pa.Table:
    """A Parquet file's table (with its metadata).

    The bytes are copied into a buffer Arrow owns and read on this thread: read straight
    from the Python ``bytes``, an Arrow pool thread may drop the last reference to them
    while the interpreter exits, and the process aborts ("terminate called without an
    active exception"; apache/arrow#34314, seen with pyarrow 26 in 29 runs of 150).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    owned = pa.BufferOutputStream()
    owned.write(data)
    return pq.ParquetFile(pa.BufferReader(owned.getvalue())).read(use_threads=False)


def decode_table(table: pa.Table, key: str = "") -> list[Record]:
    """The records of one file."""
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("mlmodel.format") != FORMAT:
        raise ValueError(
            f"{key or 'file'} is not a decision file of format {FORMAT} "
            f"(mlmodel.format: {meta.get('mlmodel.format')!r})"
        )
    columns = tuple(Column(c["name"], c["datatype"]) for c in json.loads(meta["mlmodel.inputs"]))
    redacted = frozenset(json.loads(meta.get("mlmodel.redacted", "[]")))
    data = table.to_pydict()
    outputs = [n[len(OUTPUT_PREFIX) :] for n in table.column_names if n.startswith(OUTPUT_PREFIX)]
    records = []
    for i in range(table.num_rows):
        inputs: dict[str, list[Any]] | None = {
            c.name: data[INPUT_PREFIX + c.name][i] for c in columns
        }
        assert inputs is not None
        if columns and all(v is None for v in inputs.values()):
            inputs = None
        at = data["time"][i]
        records.append(
            Record(
                request_id=data["request_id"][i],
                time=at if at.tzinfo else at.replace(tzinfo=dt.UTC),
                namespace=data["namespace"][i],
                model=data["model"][i],
                version=data["version"][i],
                sha256=data["sha256"][i],
                protocol=data["protocol"][i],
                status=int(data["status"][i]),
                error=data["error"][i],
                latency_ms=float(data["latency_ms"][i]),
                rows=int(data["rows"][i]),
                inputs=inputs,
                outputs={
                    name: data[OUTPUT_PREFIX + name][i]
                    for name in outputs
                    if data[OUTPUT_PREFIX + name][i] is not None
                },
                columns=columns,
                redacted=redacted,
                predict_path=meta.get("mlmodel.predict_path", "sklearn"),
                key=key,
            )
        )
    return records
