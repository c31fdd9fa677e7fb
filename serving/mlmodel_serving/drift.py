"""Input drift: the population stability index (PSI) of each feature against a baseline.

A baseline is a small JSON document built from the training data with
:func:`build_baseline` and stored next to the model (``monitoring.drift.baselineUri``)::

    {"version": 1, "rows": 150,
     "features": [{"name": "0", "edges": [5.1, 5.8, 6.4], "proportions": [0.27, 0.25, 0.23, 0.25]}, ...]}

``edges`` are the k-1 inner cut points of k bins (the first and last bins are open), and
``proportions`` the training fraction in each bin. The server bins the rows it is asked
to predict over a sliding window and exports, per feature,
``PSI = sum((actual - expected) * ln(actual / expected))``. As a rule of thumb, PSI under
0.1 is stable, 0.1-0.25 a moderate shift, over 0.25 a large one. An optional
``"predictions": {"classes": [...], "proportions": [...]}`` part (written by
``mlmodel baseline --model``) adds the PSI of the classes a classifier predicts.

Binning is done lazily (at scrape time, or when enough rows are pending), so a request
pays only a list append.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import orjson

EPSILON = 1e-4  # stands in for an empty bin, so that ln() stays finite
BASELINE_VERSION = 1


@dataclass(frozen=True)
class FeatureBaseline:
    name: str
    edges: np.ndarray[Any, Any]
    proportions: np.ndarray[Any, Any]


@dataclass(frozen=True)
class PredictionBaseline:
    """Training proportions of the classes a classifier predicts (optional part)."""

    classes: tuple[str, ...]
    proportions: np.ndarray[Any, Any]


@dataclass(frozen=True)
class Baseline:
    features: tuple[FeatureBaseline, ...]
    rows: int = 0
    predictions: PredictionBaseline | None = None

    @classmethod
    def from_json(
        cls, data: bytes, n_features: int | None = None, classes: Sequence[str] | None = None
    ) -> Baseline:
        """Parse and check a baseline document; ValueError names what is wrong.

        ``classes`` (the model's, as strings) is checked against the optional
        ``predictions`` part.
        """
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"drift baseline is not valid JSON: {exc}") from None
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("features"), list)
            or not doc["features"]
        ):
            raise ValueError('drift baseline must be an object with a non-empty "features" array')
        if doc.get("version", BASELINE_VERSION) != BASELINE_VERSION:
            raise ValueError(
                f"drift baseline version {doc.get('version')!r} is not supported: expected 1"
            )
        features = []
        for i, raw in enumerate(doc["features"]):
            where = f"features[{i}]"
            if not isinstance(raw, dict):
                raise ValueError(
                    f"drift baseline {where} must be an object with edges and proportions"
                )
            try:
                edges = np.asarray(raw.get("edges"), dtype=np.float64)
                proportions = np.asarray(raw.get("proportions"), dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"drift baseline {where}: edges and proportions must be arrays of numbers"
                ) from None
            if edges.ndim != 1 or proportions.ndim != 1 or len(proportions) != len(edges) + 1:
                raise ValueError(
                    f"drift baseline {where}: expected k-1 edges and k proportions, "
                    f"got {edges.size} edges and {proportions.size} proportions"
                )
            if len(edges) and not (np.diff(edges) > 0).all():
                raise ValueError(f"drift baseline {where}: edges must be strictly increasing")
            if (proportions < 0).any() or not math.isclose(
                float(proportions.sum()), 1.0, abs_tol=1e-3
            ):
                raise ValueError(f"drift baseline {where}: proportions must be >= 0 and sum to 1")
            features.append(FeatureBaseline(str(raw.get("name", i)), edges, proportions))
        if n_features is not None and len(features) != n_features:
            raise ValueError(
                f"drift baseline has {len(features)} features but the model expects {n_features}"
            )
        rows = doc.get("rows", 0)
        predictions = _parse_predictions(doc.get("predictions"), classes)
        return cls(tuple(features), int(rows) if isinstance(rows, int) else 0, predictions)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "version": BASELINE_VERSION,
            "rows": self.rows,
            "features": [
                {"name": f.name, "edges": f.edges.tolist(), "proportions": f.proportions.tolist()}
                for f in self.features
            ],
        }
        if self.predictions is not None:
            doc["predictions"] = {
                "classes": list(self.predictions.classes),
                "proportions": self.predictions.proportions.tolist(),
            }
        return orjson.dumps(doc)


def _parse_predictions(raw: Any, classes: Sequence[str] | None) -> PredictionBaseline | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("classes"), list):
        raise ValueError(
            'drift baseline "predictions" must be {"classes": [...], "proportions": [...]}'
        )
    names = [str(c) for c in raw["classes"]]
    try:
        proportions = np.asarray(raw.get("proportions"), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            "drift baseline predictions.proportions must be an array of numbers"
        ) from None
    if proportions.ndim != 1 or len(proportions) != len(names) or not names:
        raise ValueError("drift baseline predictions: one proportion per class expected")
    if (proportions < 0).any() or not math.isclose(float(proportions.sum()), 1.0, abs_tol=1e-3):
        raise ValueError("drift baseline predictions.proportions must be >= 0 and sum to 1")
    if classes is not None and list(classes) != names:
        raise ValueError(
            f"drift baseline predictions are for classes {names} "
            f"but the model predicts {list(classes)}"
        )
    return PredictionBaseline(tuple(names), proportions)


def build_baseline(x: Any, bins: int = 10, feature_names: Sequence[str] | None = None) -> Baseline:
    """A baseline from training data: quantile bins per feature (ties merged)."""
    data = np.asarray(x, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(
            f"expected training data of shape [N, F] with N >= 1, got {list(data.shape)}"
        )
    names = (
        list(feature_names) if feature_names is not None else [str(i) for i in range(data.shape[1])]
    )
    if len(names) != data.shape[1]:
        raise ValueError(f"{len(names)} feature names for {data.shape[1]} features")
    features = []
    for j, name in enumerate(names):
        column = data[:, j]
        edges = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, column, side="left"), minlength=len(edges) + 1)
        features.append(FeatureBaseline(name, edges, counts / counts.sum()))
    return Baseline(tuple(features), rows=data.shape[0])


def psi(expected: np.ndarray[Any, Any], counts: np.ndarray[Any, Any]) -> float:
    """Population stability index of observed ``counts`` against ``expected`` proportions."""
    total = counts.sum()
    if total == 0:
        return 0.0
    actual = np.maximum(counts / total, EPSILON)
    base = np.maximum(expected, EPSILON)
    return float(((actual - base) * np.log(actual / base)).sum())


T = TypeVar("T")


class PendingRows(Generic[T]):
    """Items of input rows kept until enough rows are pending to fold them in one go.

    Used under its owner's lock: a one-row request then costs a list append, and the
    numpy work runs once per ``limit`` rows (or at scrape time).
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._items: list[T] = []
        self._rows = 0

    def add(self, item: T, rows: int) -> bool:
        """Keep ``item`` (``rows`` rows); True when enough rows are pending to fold."""
        self._items.append(item)
        self._rows += rows
        return self._rows >= self.limit

    def take(self) -> list[T]:
        """Everything pending, oldest first; the buffer is empty afterwards."""
        items = self._items
        self._items = []
        self._rows = 0
        return items


class DriftMonitor:
    """Bins recent input rows per feature against a baseline; PSI over a sliding window."""

    def __init__(self, baseline: Baseline, window_rows: int = 10_000, min_rows: int = 100) -> None:
        self.baseline = baseline
        self.window_rows = window_rows
        self.min_rows = min_rows
        self._lock = threading.Lock()
        self._pending: PendingRows[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]] = (
            PendingRows()
        )
        # A chunk: (rows, counts per feature, counts per predicted class)
        self._chunks: deque[tuple[int, list[np.ndarray[Any, Any]]]] = deque()
        sizes = [len(f.proportions) for f in baseline.features]
        self._class_index: dict[str, int] = {}
        if baseline.predictions is not None:
            self._class_index = {c: i for i, c in enumerate(baseline.predictions.classes)}
            sizes.append(len(baseline.predictions.classes) + 1)  # the last: unknown classes
        self._window = [np.zeros(n, dtype=np.int64) for n in sizes]
        self._window_total = 0

    def observe(self, x: np.ndarray[Any, Any], labels: np.ndarray[Any, Any] | None = None) -> None:
        """Record input rows and, for classifiers, the class predicted for each."""
        if x.ndim != 2 or x.shape[1] != len(self.baseline.features) or x.dtype.kind not in "biuf":
            return
        if labels is not None and labels.shape[0] != x.shape[0]:
            labels = None
        with self._lock:
            if self._pending.add((x, labels), x.shape[0]):
                self._flush()

    def _flush(self) -> None:
        pending = self._pending.take()
        if not pending:
            return
        rows = np.concatenate([x for x, _ in pending]).astype(np.float64, copy=False)
        counts = [
            np.bincount(
                np.searchsorted(f.edges, rows[:, j], side="left"), minlength=len(f.proportions)
            )
            for j, f in enumerate(self.baseline.features)
        ]
        if self.baseline.predictions is not None:
            unknown = len(self._class_index)
            index = [
                self._class_index.get(str(label), unknown)
                for _, labels in pending
                if labels is not None
                for label in labels.tolist()
            ]
            counts.append(np.bincount(np.asarray(index, dtype=np.int64), minlength=unknown + 1))
        self._chunks.append((rows.shape[0], counts))
        self._window_total += rows.shape[0]
        for total, chunk in zip(self._window, counts, strict=True):
            total += chunk
        # Drop whole chunks while the rest still fills the window.
        while self._chunks and self._window_total - self._chunks[0][0] >= self.window_rows:
            n, old = self._chunks.popleft()
            self._window_total -= n
            for total, chunk in zip(self._window, old, strict=True):
                total -= chunk

    def snapshot(self) -> tuple[int, dict[str, float], float | None]:
        """(rows in the window, PSI by feature name, PSI of the predicted classes).

        No PSI below ``min_rows``; the class PSI is None without a ``predictions`` part.
        Rows predicted as a class the baseline does not know count against it.
        """
        with self._lock:
            self._flush()
            rows = self._window_total
            if rows < self.min_rows:
                return rows, {}, None
            features = self.baseline.features
            by_feature = {
                f.name: psi(f.proportions, counts)
                for f, counts in zip(features, self._window[: len(features)], strict=True)
            }
            predicted = None
            if self.baseline.predictions is not None:
                expected = np.append(self.baseline.predictions.proportions, 0.0)
                predicted = psi(expected, self._window[len(features)])
            return rows, by_feature, predicted
