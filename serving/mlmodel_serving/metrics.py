"""Prometheus metrics of the model server, on a registry passed in (never the global one).

Per-request metrics use ``prometheus_client`` types with their label children cached,
so the hot path costs a dictionary lookup and an increment. Per-batch statistics of the
input features are kept in numpy arrays and exported by a small collector at scrape
time, so a batch of N rows costs a few vectorized operations, not N x F increments.
"""

from __future__ import annotations

import threading
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
    """Running count, sum and sum of squares of each input feature (for drift panels).

    mean = rate(sum) / rate(rows); variance follows from the sum of squares.
    """

    def __init__(self, model: str) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._rows = 0
        self._sum: np.ndarray[Any, Any] | None = None
        self._squares: np.ndarray[Any, Any] | None = None
        # Rows are summed lazily, at scrape time or when enough are pending, so that a
        # one-row request costs a list append instead of a few numpy reductions.
        self._pending: PendingRows[np.ndarray[Any, Any]] = PendingRows()

    def observe(self, x: np.ndarray[Any, Any]) -> None:
        if x.ndim != 2 or x.dtype.kind not in "biuf":
            return
        with self._lock:
            if self._pending.add(x, x.shape[0]):
                self._flush()

    def _flush(self) -> None:
        """Fold pending rows into the sums (caller holds the lock)."""
        pending = self._pending.take()
        if not pending:
            return
        width = pending[-1].shape[1]
        same = [x for x in pending if x.shape[1] == width]
        values = np.concatenate(same).astype(np.float64, copy=False)
        column_sum = values.sum(axis=0)
        column_squares = np.einsum("ij,ij->j", values, values)
        if self._sum is None or self._squares is None or self._sum.shape != column_sum.shape:
            self._sum = np.zeros_like(column_sum)
            self._squares = np.zeros_like(column_sum)
        self._rows += values.shape[0]
        self._sum += column_sum
        self._squares += column_squares

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._flush()
            rows = self._rows
            sums = None if self._sum is None else self._sum.copy()
            squares = None if self._squares is None else self._squares.copy()
        rows_metric = CounterMetricFamily(
            "mlmodel_input_rows", "Input rows seen by the model", labels=["model"]
        )
        rows_metric.add_metric([self._model], rows)
        yield rows_metric
        sum_metric = CounterMetricFamily(
            "mlmodel_input_feature_sum",
            "Sum of each numeric input feature",
            labels=["model", "feature"],
        )
        squares_metric = CounterMetricFamily(
            "mlmodel_input_feature_squares_sum",
            "Sum of squares of each numeric input feature",
            labels=["model", "feature"],
        )
        if sums is not None and squares is not None:
            for i, (s, q) in enumerate(zip(sums.tolist(), squares.tolist(), strict=True)):
                sum_metric.add_metric([self._model, str(i)], s)
                squares_metric.add_metric([self._model, str(i)], q)
        yield sum_metric
        yield squares_metric


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
