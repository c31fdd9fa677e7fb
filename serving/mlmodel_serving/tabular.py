"""What a model takes as input, read from the fitted estimator, and requests turned into it.

A model fitted on a pandas DataFrame knows its column names (``feature_names_in_``) but
not their types. The types are read from the fitted steps that saw each column: an
encoder (OneHotEncoder, OrdinalEncoder, TargetEncoder, ...) whose categories for a column
are strings, or an imputer whose fill values are, marks that column as text (V2
``BYTES``); every other column is numeric (``FP64``). This covers Pipelines with a
ColumnTransformer, nested Pipelines, and HistGradientBoosting's own categorical encoder.

:class:`InputSchema` turns a decoded request into what ``predict`` takes:

* a numeric 2-D array for a model whose columns are all numeric (the fast path: one
  2-D tensor, or one tensor per column stacked in the model's order);
* :class:`Columns` (one typed array per column, in the model's order; a DataFrame only
  at ``predict``, so that a batch of requests builds one) for a model with text
  columns: from one tensor per column (V2, MLServer's ``content_type: "pd"``, KServe V1 rows as objects)
  or from rows of mixed values matched to the columns by position.

Every mismatch is a :class:`ModelInputError` (HTTP 400) naming the column and what is
accepted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlmodel_serving.protocol import CONTENT_TYPE_PANDAS, InferenceRequest, Tensor

if TYPE_CHECKING:
    import pandas as pd

TEXT = "BYTES"
NUMBER = "FP64"
INPUT_NAME = "input-0"
# Numeric V2 datatypes a numeric column takes (BOOL too: scikit-learn reads it as 0/1).
_NUMERIC = frozenset(
    ("BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16")
) | {"FP32", "FP64"}


class ModelInputError(ValueError):
    """The input does not fit the model (wrong rank, feature count, column or output)."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    datatype: str  # TEXT or NUMBER


@dataclass(frozen=True, slots=True)
class Columns:
    """Rows of a table as one array per column, in the model's column order.

    What a request for a model with text columns becomes. Batching concatenates these
    per column (cheap), and :meth:`frame` builds the one DataFrame ``predict`` gets.
    """

    names: tuple[str, ...]
    arrays: tuple[np.ndarray[Any, Any], ...]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.arrays[0].shape[0], len(self.arrays))

    def frame(self) -> pd.DataFrame:
        """The DataFrame: float64 numbers, text as pandas infers it (as ``read_csv`` does)."""
        import pandas as pd

        return pd.DataFrame(dict(zip(self.names, self.arrays, strict=True)), copy=False)

    @staticmethod
    def concatenate(parts: Sequence[Columns]) -> Columns:
        return Columns(
            parts[0].names,
            tuple(
                np.concatenate([part.arrays[j] for part in parts])
                for j in range(len(parts[0].names))
            ),
        )


def infer_columns(estimator: Any) -> tuple[Column, ...] | None:
    """The model's named input columns with their types, or None if it has no names."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        return None
    text: set[str] = set()
    for names_seen, is_text in _column_evidence(estimator, None):
        text.update(name for name, flag in zip(names_seen, is_text, strict=False) if flag)
    return tuple(Column(str(n), TEXT if str(n) in text else NUMBER) for n in names)


def _column_evidence(
    obj: Any, names: Sequence[str] | None
) -> Iterator[tuple[Sequence[str], list[bool]]]:
    """(column names, is-text flags) from every fitted step that saw named columns.

    ``names``: the columns a step without its own ``feature_names_in_`` received
    unchanged from the step before it (an imputer inside a Pipeline hands on arrays).
    """
    seen = getattr(obj, "feature_names_in_", None)
    cols = [str(n) for n in seen] if seen is not None else names
    if cols is not None:
        categories = getattr(obj, "categories_", None)
        if isinstance(categories, list) and len(categories) == len(cols):
            yield cols, [np.asarray(c).dtype.kind in "OUS" for c in categories]
        statistics = getattr(obj, "statistics_", None)
        if isinstance(statistics, np.ndarray) and statistics.dtype.kind in "OUS":
            yield cols, [True] * len(cols)  # an imputer fitted on text columns
    steps = getattr(obj, "steps", None)
    if isinstance(steps, list):  # Pipeline: columns pass through 1:1 steps unchanged
        carried = cols
        for _, step in steps:
            if step is None or step == "passthrough":
                continue
            yield from _column_evidence(step, carried)
            carried = carried if _keeps_columns(step) else None
    transformers = getattr(obj, "transformers_", None)
    if isinstance(transformers, list):  # ColumnTransformer (fitted)
        for _, transformer, selected in transformers:
            if isinstance(transformer, str):  # "drop" / "passthrough"
                continue
            yield from _column_evidence(transformer, _selected_names(selected, cols))
    for attr in ("transformer_list",):  # FeatureUnion
        for _, transformer in getattr(obj, attr, None) or []:
            if not isinstance(transformer, str):
                yield from _column_evidence(transformer, cols)
    for attr in ("_preprocessor", "best_estimator_", "estimator_"):
        inner = getattr(obj, attr, None)
        if inner is not None and hasattr(inner, "fit"):
            yield from _column_evidence(inner, cols)


def _keeps_columns(step: Any) -> bool:
    """A step whose output columns are its input columns (imputers)."""
    return type(step).__name__ in {"SimpleImputer", "KNNImputer", "IterativeImputer"} and not (
        getattr(step, "add_indicator", False)
    )


def _selected_names(selected: Any, cols: Sequence[str] | None) -> list[str] | None:
    """Column names a ColumnTransformer selection names (strings, indices or a mask)."""
    if isinstance(selected, str):
        return [selected]
    arr = np.asarray(selected)
    if arr.dtype.kind in "OUS":
        return [str(v) for v in arr.reshape(-1)]
    if cols is None:
        return None
    if arr.dtype.kind == "b" and arr.size == len(cols):
        return [c for c, keep in zip(cols, arr.tolist(), strict=True) if keep]
    if arr.dtype.kind in "iu":
        return [cols[i] for i in arr.reshape(-1).tolist() if -len(cols) <= i < len(cols)]
    return None


class InputSchema:
    """The inputs of one model and the conversion of requests into them."""

    def __init__(self, n_features: int | None, columns: tuple[Column, ...] | None) -> None:
        self.n_features = n_features
        self.columns = columns
        self.tabular = columns is not None and any(c.datatype == TEXT for c in columns)
        self._index = {c.name: i for i, c in enumerate(columns or ())}

    @classmethod
    def of(cls, estimator: Any) -> InputSchema:
        n = getattr(estimator, "n_features_in_", None)
        return cls(int(n) if n is not None else None, infer_columns(estimator))

    @property
    def shape_text(self) -> str:
        return f"[N, {self.n_features}]" if self.n_features is not None else "[N, F]"

    def describe(self) -> str:
        """``tenure (FP64), contract (BYTES)``: the accepted columns, for messages."""
        return ", ".join(f"{c.name} ({c.datatype})" for c in self.columns or ())

    def metadata(self) -> list[dict[str, Any]]:
        """V2 model metadata ``inputs``: one per column, or the single 2-D tensor."""
        if self.columns is None:
            return [{"name": INPUT_NAME, "datatype": NUMBER, "shape": [-1, self.n_features or -1]}]
        return [{"name": c.name, "datatype": c.datatype, "shape": [-1]} for c in self.columns]

    # -- requests -> model input ---------------------------------------------------------

    def prepare(self, request: InferenceRequest) -> np.ndarray[Any, Any] | Columns:
        """The model input for ``request``: a numeric array or, with text columns, Columns."""
        inputs = request.inputs
        by_column = (
            len(inputs) > 1
            or request.content_type == CONTENT_TYPE_PANDAS
            or (inputs[0].datatype is None and inputs[0].data.ndim == 1)
            or (
                (self.columns is not None and inputs[0].name in self._index)
                and inputs[0].data.ndim == 1
            )
        )
        if by_column:
            return self._from_columns(inputs)
        tensor = inputs[0]
        if self.tabular:
            return self._from_rows(tensor)
        return self._numeric_matrix(tensor)

    def _numeric_matrix(self, tensor: Tensor) -> np.ndarray[Any, Any]:
        """One 2-D tensor for an all-numeric model (today's fast path)."""
        if tensor.problem is not None:
            raise ModelInputError(tensor.problem)
        x = tensor.data
        if x.ndim != 2:
            raise ModelInputError(
                f"input {tensor.name!r} has shape {list(x.shape)}: expected a 2-D shape "
                f"{self.shape_text}"
                + (
                    f", or one tensor per column ({self.describe()})"
                    if self.columns is not None
                    else ""
                )
            )
        self._check_rows(x.shape[0], tensor.name)
        if self.n_features is not None and x.shape[1] != self.n_features:
            raise ModelInputError(
                f"input {tensor.name!r} has {x.shape[1]} features per row: the model expects "
                f"{self.n_features} (shape {self.shape_text})"
            )
        if x.dtype.kind == "O":  # BYTES or mixed JSON values: each must read as a number
            return self._numbers_from_values(x, tensor.name)
        return x

    def _check_rows(self, rows: int, name: str) -> None:
        if rows == 0:
            raise ModelInputError(
                f"input {name!r} has no rows: expected shape {self.shape_text} with N >= 1"
            )

    def _numbers_from_values(self, x: np.ndarray[Any, Any], where: str) -> np.ndarray[Any, Any]:
        flat = x.reshape(-1).tolist()
        out = np.empty(len(flat), dtype=np.float64)
        for i, value in enumerate(flat):
            out[i] = _to_number(value, where)
        return out.reshape(x.shape)

    def _from_rows(self, tensor: Tensor) -> Columns:
        """One 2-D tensor of rows for a model with text columns: columns by position."""
        columns = self.columns
        assert columns is not None
        x = tensor.data
        if x.ndim != 2 or x.shape[1] != len(columns):
            raise ModelInputError(
                f"input {tensor.name!r} has shape {list(x.shape)}: this model takes named "
                f"columns {self.describe()}; send rows of {len(columns)} values in that "
                "order, or one tensor per column"
            )
        self._check_rows(x.shape[0], tensor.name)
        return self._frame(
            [
                self._column_values(column, x[:, j], tensor.datatype)
                for j, column in enumerate(columns)
            ]
        )

    def _from_columns(self, inputs: Sequence[Tensor]) -> np.ndarray[Any, Any] | Columns:
        """One tensor per column, matched to the model's columns by name."""
        columns = self.columns
        if columns is None:
            raise ModelInputError(
                f"the request sends {len(inputs)} named tensor(s) "
                f"({', '.join(repr(t.name) for t in inputs)}), but the model was not fitted on "
                f"named columns: send one 2-D tensor of shape {self.shape_text}"
            )
        given = {t.name: t for t in inputs}
        unknown = [name for name in given if name not in self._index]
        if unknown:
            raise ModelInputError(
                f"unknown column {unknown[0]!r}: the model takes columns {self.describe()}"
            )
        missing = [c for c in columns if c.name not in given]
        if missing:
            raise ModelInputError(
                "missing column(s) "
                + ", ".join(f"{c.name!r} ({c.datatype})" for c in missing)
                + f": the model takes columns {self.describe()}"
            )
        rows: int | None = None
        values = []
        for column in columns:
            tensor = given[column.name]
            data = tensor.data
            if data.ndim == 2 and data.shape[1] == 1:
                data = data[:, 0]
            if data.ndim != 1:
                raise ModelInputError(
                    f"column {column.name!r} has shape {list(tensor.data.shape)}: "
                    "a column takes shape [N] or [N, 1]"
                )
            if rows is None:
                rows = data.shape[0]
                self._check_rows(rows, column.name)
            elif data.shape[0] != rows:
                raise ModelInputError(
                    f"column {column.name!r} has {data.shape[0]} rows but "
                    f"{columns[0].name!r} has {rows}: every column needs the same number"
                )
            values.append(self._column_values(column, data, tensor.datatype))
        if not self.tabular:
            return np.column_stack(values) if len(values) > 1 else values[0].reshape(-1, 1)
        return self._frame(values)

    def _column_values(
        self, column: Column, data: np.ndarray[Any, Any], datatype: str | None
    ) -> np.ndarray[Any, Any]:
        """One column's values as the model was trained with: float64, or text objects."""
        if column.datatype == TEXT:
            if datatype is not None and datatype != TEXT:
                raise ModelInputError(
                    f"column {column.name!r} takes text (BYTES), got a {datatype} tensor"
                )
            out = np.empty(data.shape[0], dtype=object)
            for i, value in enumerate(data.tolist()):
                if value is None:
                    out[i] = math.nan  # a missing value, as pandas reads one
                elif isinstance(value, str):
                    out[i] = value
                else:
                    raise ModelInputError(
                        f"column {column.name!r} takes text (BYTES) or null, got {value!r}"
                    )
            return out
        if datatype is not None and datatype in _NUMERIC:
            return data.astype(np.float64, copy=False)
        out = np.empty(data.shape[0], dtype=np.float64)
        for i, value in enumerate(data.tolist()):
            if datatype == TEXT:
                out[i] = _to_number(value, f"column {column.name!r}")
            elif value is None:
                out[i] = math.nan
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[i] = value
            else:
                raise ModelInputError(
                    f"column {column.name!r} takes numbers (FP64) or null, got {value!r}"
                )
        return out

    def _frame(self, values: list[np.ndarray[Any, Any]]) -> Columns:
        assert self.columns is not None
        return Columns(tuple(c.name for c in self.columns), tuple(values))


def _to_number(value: Any, where: str) -> float:
    """A JSON value or BYTES string sent for a numeric feature, as a float (or a 400)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if value is None:
        return math.nan
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
            ok = False
        else:
            ok = math.isfinite(number)
        if ok:
            return number
    raise ModelInputError(
        f"{where} holds {value!r} where the model takes a number: send finite numbers "
        "(numeric tensors, or null for a missing value)"
    )
