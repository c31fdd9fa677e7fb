"""The operator's own Prometheus metrics, on a registry that is passed in."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlmodel_operator.conditions import Phase


class OperatorMetrics:
    """Reconciles by result, reconcile duration, archive operations, models by phase."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reconciles = Counter(
            "mlmodel_operator_reconciles_total",
            "Reconciles of MLModel objects, by result (ok, requeued, error, invalid).",
            ["result"],
            registry=registry,
        )
        self.duration = Histogram(
            "mlmodel_operator_reconcile_duration_seconds",
            "Wall time of one reconcile of one MLModel.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.archives = Counter(
            "mlmodel_operator_archive_operations_total",
            "Archive operations on retirement or deletion, by result (ok, failed, skipped).",
            ["result"],
            registry=registry,
        )
        self.models = Gauge(
            "mlmodel_operator_models",
            "MLModel objects handled by this operator, by status.phase.",
            ["phase"],
            registry=registry,
        )
        for phase in Phase.ALL:
            self.models.labels(phase=phase).set(0)
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()

    def set_phase(self, uid: str, phase: str | None) -> None:
        """Record one model's phase (None when it is gone) and refresh the gauge."""
        with self._lock:
            if phase is None:
                self._phases.pop(uid, None)
            else:
                self._phases[uid] = phase
            counts = dict.fromkeys(Phase.ALL, 0)
            for p in self._phases.values():
                counts[p] = counts.get(p, 0) + 1
        for p, n in counts.items():
            self.models.labels(phase=p).set(n)
