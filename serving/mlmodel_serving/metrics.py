"""Prometheus metrics of the model server, on a registry passed in (never the global one).

Per-request metrics use ``prometheus_client`` types with their label children cached,
so the hot path costs a dictionary lookup and an increment. Per-batch statistics of the
input features are kept in numpy arrays and exported by a small collector at scrape
time, so a batch of N rows costs a few vectorized operations, not N x F increments.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlmodel_serving.drift import DriftMonitor, PendingRows

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
VALUE_BUCKETS = (-1000.0, -100.0, -10.0, -1.0, 0.0, 1.0, 10.0, 100.0, 1000.0)


class FeatureStats(Collector):
    """Mean and standard deviation of each numeric input feature over the recent rows.

    Running sums exported as counters would break: a negative value makes a counter go
    down (``rate()`` reads a reset), and one huge value makes the sum infinite for good.
    So rows are summed in blocks of :data:`BLOCK_ROWS`, and the last :data:`BLOCKS`
    blocks (plus the one filling) make the window; a block leaves whole, so nothing is
    ever subtracted and an overflow leaves with its block. Each block keeps, per feature,
    the count of values, their mean and the sum of squared deviations from it, merged
    with Chan et al.'s pairwise update (no cancellation when the mean is large and the
    spread small). NaN (a missing value) is not counted. Exported as gauges: ``mlmodel_input_feature_mean``,
    ``mlmodel_input_feature_stddev`` and the rows they cover; ``mlmodel_input_rows_total``
    counts every row.
    """

    BLOCK_ROWS = 1000
    BLOCKS = 10

    def __init__(self, model: str) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._rows = 0
        # Per block: rows, and per feature (count of non-NaN values, mean, M2).
        self._blocks: deque[tuple[int, np.ndarray[Any, Any]]] = deque(maxlen=self.BLOCKS)
        self._current: np.ndarray[Any, Any] | None = None
        self._current_rows = 0
        # Rows are summed lazily, at scrape time or when enough are pending, so that a
        # one-row request costs a list append instead of a few numpy reductions.
        self._pending: PendingRows[np.ndarray[Any, Any]] = PendingRows(self.BLOCK_ROWS)

    def observe(self, x: np.ndarray[Any, Any]) -> None:
        if x.ndim != 2 or x.dtype.kind not in "biuf":
            return
        with self._lock:
            if self._pending.add(x, x.shape[0]):
                self._flush()

    def _flush(self) -> None:
        """Fold pending rows into the current block (caller holds the lock)."""
        pending = self._pending.take()
        if not pending:
            return
        width = pending[-1].shape[1]
        values = np.concatenate([x for x in pending if x.shape[1] == width])
        values = values.astype(np.float64, copy=False)
        stats = moments(values)
        if self._current is None or self._current.shape != stats.shape:
            if self._current is not None and self._current.shape != stats.shape:
                self._blocks.clear()  # another feature count: start over
            self._current = np.zeros_like(stats)
            self._current_rows = 0
        self._rows += values.shape[0]
        self._current = merge_moments(self._current, stats)
        self._current_rows += values.shape[0]
        if self._current_rows >= self.BLOCK_ROWS:
            self._blocks.append((self._current_rows, self._current))
            self._current = np.zeros_like(stats)
            self._current_rows = 0

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._flush()
            rows = self._rows
            parts = [block for _, block in self._blocks]
            window_rows = sum(n for n, _ in self._blocks) + self._current_rows
            if self._current is not None and self._current_rows:
                parts.append(self._current)
        rows_metric = CounterMetricFamily(
            "mlmodel_input_rows", "Input rows seen by the model", labels=["model"]
        )
        rows_metric.add_metric([self._model], rows)
        yield rows_metric
        window = GaugeMetricFamily(
            "mlmodel_input_feature_window_rows",
            "Recent input rows the feature mean and standard deviation cover",
            labels=["model"],
        )
        window.add_metric([self._model], window_rows)
        yield window
        mean_metric = GaugeMetricFamily(
            "mlmodel_input_feature_mean",
            "Mean of each numeric input feature over the recent rows (NaN not counted)",
            labels=["model", "feature"],
        )
        std_metric = GaugeMetricFamily(
            "mlmodel_input_feature_stddev",
            "Standard deviation of each numeric input feature over the recent rows",
            labels=["model", "feature"],
        )
        if parts:
            merged = parts[0]
            for part in parts[1:]:
                merged = merge_moments(merged, part)
            count, mean, m2 = merged
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                std = np.sqrt(m2 / count)
            for i, (m, sd, n) in enumerate(zip(mean.tolist(), std.tolist(), count.tolist(),
                                               strict=True)):  # fmt: skip
                if n > 0:
                    mean_metric.add_metric([self._model, str(i)], m)
                    std_metric.add_metric([self._model, str(i)], sd)
        yield mean_metric
        yield std_metric


def moments(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Per column of ``values``: [count of non-NaN values, their mean, sum of squared
    deviations from it] (0 for a column without values)."""
    present = ~np.isnan(values)
    count = present.sum(axis=0, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.where(present, values, 0.0).sum(axis=0) / count, 0.0)
        deviation = np.where(present, values - mean, 0.0)
        m2 = np.einsum("ij,ij->j", deviation, deviation)
    return np.stack((count, mean, m2))


def merge_moments(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The moments of two sets of rows together (Chan, Golub and LeVeque's update)."""
    na, mean_a, m2_a = a
    nb, mean_b, m2_b = b
    n = na + nb
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        share = np.where(n > 0, nb / np.where(n > 0, n, 1.0), 0.0)
        delta = mean_b - mean_a
        mean = np.where(nb > 0, mean_a + delta * share, mean_a)
        m2 = np.where(nb > 0, m2_a + m2_b + delta * delta * na * share, m2_a)
    return np.stack((n, mean, m2))


class DriftStats(Collector):
    """PSI of each feature against the drift baseline, computed at scrape time."""

    def __init__(self, model: str) -> None:
        self._model = model
        self.monitor: DriftMonitor | None = None
        self.baseline_loaded: bool | None = None  # None: no baseline configured

    def observe(self, x: np.ndarray[Any, Any], labels: np.ndarray[Any, Any] | None) -> None:
        monitor = self.monitor
        if monitor is not None:
            monitor.observe(x, labels)

    def collect(self) -> Iterator[Metric]:
        if self.baseline_loaded is None:
            return
        loaded = GaugeMetricFamily(
            "mlmodel_drift_baseline_loaded",
            "1 when the drift baseline was loaded, 0 when it is configured but could not be",
            labels=["model"],
        )
        loaded.add_metric([self._model], 1.0 if self.baseline_loaded else 0.0)
        yield loaded
        if self.monitor is None:
            return
        rows, by_feature, predicted = self.monitor.snapshot()
        window = GaugeMetricFamily(
            "mlmodel_drift_window_rows", "Input rows in the drift window", labels=["model"]
        )
        window.add_metric([self._model], rows)
        yield window
        psi = GaugeMetricFamily(
            "mlmodel_feature_psi",
            "Population stability index of each input feature against the baseline",
            labels=["model", "feature"],
        )
        for feature, value in by_feature.items():
            psi.add_metric([self._model, feature], value)
        yield psi
        if predicted is not None:
            classes = GaugeMetricFamily(
                "mlmodel_prediction_psi",
                "Population stability index of the predicted classes against the baseline",
                labels=["model"],
            )
            classes.add_metric([self._model], predicted)
            yield classes


SHADOW_RESULTS = ("agree", "disagree", "error")


class ShadowMetrics:
    """Shadow traffic: mirrored requests by result, copies dropped, the candidate's time.

    ``version`` is the stable's version (as in ``mlmodel_model_info``), ``candidate`` the
    candidate's (from the shadow configuration).
    """

    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        self.model = model
        self._requests = Counter(
            "mlmodel_shadow_requests",
            "Requests mirrored to the candidate, by result (agree, disagree, error)",
            ["model", "version", "candidate", "result"],
            registry=registry,
        )
        self._dropped = Counter(
            "mlmodel_shadow_dropped",
            "Sampled copies not sent: too many mirrored requests in flight",
            ["model", "candidate"],
            registry=registry,
        )
        self._duration = Histogram(
            "mlmodel_shadow_duration_seconds",
            "Time the candidate took to answer a mirrored request",
            ["model", "candidate"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, str], Any] = {}

    def start(self, version: str, candidate: str) -> None:
        """Create the candidate's series at 0, so that the first mirrored requests show up
        as an increase."""
        for result in SHADOW_RESULTS:
            self._child(version, candidate, result)
        self._dropped.labels(self.model, candidate)
        self._duration.labels(self.model, candidate)

    def result(self, version: str, candidate: str, result: str) -> None:
        self._child(version, candidate, result).inc()

    def _child(self, version: str, candidate: str, result: str) -> Any:
        key = (version, candidate, result)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._requests.labels(
                self.model, version, candidate, result
            )
        return child

    def dropped(self, candidate: str) -> None:
        self._dropped.labels(self.model, candidate).inc()

    def duration(self, candidate: str, seconds: float) -> None:
        self._duration.labels(self.model, candidate).observe(seconds)


class ServingMetrics:
    """All metrics of one model server, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        self.registry = registry
        self.model = model
        self._requests = Counter(
            "mlmodel_requests",
            "HTTP requests by protocol, route and status code",
            ["model", "protocol", "route", "code"],
            registry=registry,
        )
        self._latency = Histogram(
            "mlmodel_request_duration_seconds",
            "Time from a request's last byte to its response, by protocol and route",
            ["model", "protocol", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._batch_size = Histogram(
            "mlmodel_batch_size",
            "Rows per predict call",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        ).labels(model)
        self._batch_requests = Histogram(
            "mlmodel_batch_requests",
            "Requests per predict call",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        ).labels(model)
        self._queue_wait = Histogram(
            "mlmodel_batch_queue_wait_seconds",
            "Time a request waited in the batching queue before its predict call started",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ).labels(model)
        self._predict_duration = Histogram(
            "mlmodel_predict_duration_seconds",
            "Time spent inside the model's predict call(s) for one batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ).labels(model)
        self._predictions = Counter(
            "mlmodel_predictions",
            "Predicted rows by class (classifiers)",
            ["model", "class"],
            registry=registry,
        )
        self._prediction_value = Histogram(
            "mlmodel_prediction_value",
            "Predicted values (regressors)",
            ["model"],
            buckets=VALUE_BUCKETS,
            registry=registry,
        ).labels(model)
        self._model_info = Gauge(
            "mlmodel_model_info",
            "The loaded model's identity and library versions (value 1)",
            ["model", "version", "sha256", "python", "sklearn", "joblib", "numpy"],
            registry=registry,
        )
        self._load_seconds = Gauge(
            "mlmodel_model_load_seconds",
            "Time to fetch, verify and load the model artifact",
            ["model"],
            registry=registry,
        ).labels(model)
        self._ready = Gauge(
            "mlmodel_model_ready",
            "1 when the verified model is loaded and serving",
            ["model"],
            registry=registry,
        ).labels(model)
        self.features = FeatureStats(model)
        registry.register(self.features)
        self.drift = DriftStats(model)
        registry.register(self.drift)
        self.shadow = ShadowMetrics(registry, model)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._class_children: dict[Any, Any] = {}

    def observe_request(self, protocol: str, route: str, code: int, seconds: float) -> None:
        key = (protocol, route, code)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self._requests.labels(self.model, protocol, route, str(code)),
                self._latency.labels(self.model, protocol, route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, rows: int, requests: int, predict_seconds: float) -> None:
        self._batch_size.observe(rows)
        self._batch_requests.observe(requests)
        self._predict_duration.observe(predict_seconds)

    def observe_inputs(self, x: Any, labels: np.ndarray[Any, Any] | None = None) -> None:
        """Input rows (and, for classifiers, the predicted class of each) for drift."""
        if not isinstance(x, np.ndarray):  # Columns of a model with text: not summed
            return
        self.features.observe(x)
        self.drift.observe(x, labels)

    def observe_queue_wait(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def observe_predictions(self, predictions: np.ndarray[Any, Any], is_classifier: bool) -> None:
        if is_classifier:
            if predictions.shape[0] <= 16:
                for label in predictions.tolist():
                    self._class_counter(label).inc()
            else:
                labels, counts = np.unique(predictions, return_counts=True)
                for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
                    self._class_counter(label).inc(count)
        elif predictions.dtype.kind in "iuf":
            for value in predictions.reshape(-1).tolist():
                self._prediction_value.observe(value)

    def _class_counter(self, label: Any) -> Any:
        child = self._class_children.get(label)
        if child is None:
            child = self._class_children[label] = self._predictions.labels(self.model, str(label))
        return child

    def set_model_info(
        self, version: str, sha256: str, versions: dict[str, str], load_seconds: float
    ) -> None:
        self._model_info.labels(
            self.model,
            version,
            sha256,
            versions["python"],
            versions["sklearn"],
            versions["joblib"],
            versions["numpy"],
        ).set(1)
        self._load_seconds.set(load_seconds)

    def set_ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
