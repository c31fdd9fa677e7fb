"""Drift baselines and the PSI of recent inputs against them."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from serving_helpers import Client, make_settings, v2_body

from mlmodel_serving.app import create_app
from mlmodel_serving.drift import (
    Baseline,
    DriftMonitor,
    PendingRows,
    PredictionBaseline,
    build_baseline,
    psi,
)
from mlmodel_serving.model import SklearnModel


def test_build_baseline_round_trips_through_json(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
) -> None:
    baseline = build_baseline(iris[0], bins=5, feature_names=["sl", "sw", "pl", "pw"])
    assert [f.name for f in baseline.features] == ["sl", "sw", "pl", "pw"] and baseline.rows == 150
    for f in baseline.features:
        assert len(f.proportions) == len(f.edges) + 1 and f.proportions.sum() == pytest.approx(1)
    again = Baseline.from_json(baseline.to_json(), n_features=4)
    assert again.to_json() == baseline.to_json()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"nope", "not valid JSON"),
        (b"{}", "non-empty"),
        (orjson.dumps({"version": 2, "features": [{}]}), "version 2"),
        (
            orjson.dumps({"features": [{"edges": [1, 2], "proportions": [0.5, 0.5]}]}),
            "k-1 edges and k proportions",
        ),
        (
            orjson.dumps({"features": [{"edges": [2, 1], "proportions": [0.2, 0.3, 0.5]}]}),
            "strictly increasing",
        ),
        (orjson.dumps({"features": [{"edges": [1], "proportions": [0.2, 0.3]}]}), "sum to 1"),
        (
            orjson.dumps({"features": [{"edges": ["a"], "proportions": [0.5, 0.5]}]}),
            "arrays of numbers",
        ),
        (
            orjson.dumps({"features": [{"edges": [1], "proportions": [0.5, 0.5]}]}),
            "model expects 4",
        ),
    ],
)
def test_bad_baselines_are_refused_with_a_reason(doc: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Baseline.from_json(doc, n_features=4)


def test_psi() -> None:
    expected = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(expected, np.array([25, 25, 25, 25])) == pytest.approx(0)
    assert psi(expected, np.array([0, 0, 0, 0])) == 0
    assert psi(expected, np.array([70, 10, 10, 10])) > 0.25
    assert psi(expected, np.array([100, 0, 0, 0])) > 1  # empty bins stay finite


def test_monitor_window_and_minimum(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
) -> None:
    x = iris[0]
    monitor = DriftMonitor(build_baseline(x), window_rows=300, min_rows=100)
    monitor.observe(x[::3])
    assert monitor.snapshot() == (50, {}, None)
    monitor.observe(x)
    rows, by_feature, _ = monitor.snapshot()
    assert rows == 200 and max(by_feature.values()) < 0.1  # the training data itself
    shifted = x.copy()
    shifted[:, 2] += 10.0
    for _ in range(4):
        monitor.observe(shifted)
        monitor.snapshot()
    rows, by_feature, _ = monitor.snapshot()
    assert 300 <= rows < 450  # old chunks left the window
    assert by_feature["2"] > 1 and by_feature["0"] < 0.1
    monitor.observe(np.zeros((3, 7)))  # another shape is ignored, not an error
    assert monitor.snapshot()[0] == rows


def test_psi_metrics_through_the_app(
    iris_model: SklearnModel, iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]
) -> None:
    registry = CollectorRegistry()
    app = create_app(make_settings(max_batch_size=0), iris_model, registry)
    client = Client(app)
    try:
        assert registry.get_sample_value("mlmodel_drift_baseline_loaded", {"model": "iris"}) is None
        app.set_drift_baseline(None)
        assert registry.get_sample_value("mlmodel_drift_baseline_loaded", {"model": "iris"}) == 0
        app.set_drift_baseline(build_baseline(iris[0]))
        shifted = iris[0].copy()
        shifted[:, 3] = 100.0
        assert client.post("/v2/models/iris/infer", v2_body(shifted.tolist())).status == 200

        def value(feature: str) -> float | None:
            return registry.get_sample_value(
                "mlmodel_feature_psi", {"model": "iris", "feature": feature}
            )

        assert value("3") is not None and value("3") > 1  # type: ignore[operator]
        assert value("0") is not None and value("0") < 0.1  # type: ignore[operator]
        assert registry.get_sample_value("mlmodel_drift_window_rows", {"model": "iris"}) == 150
        assert registry.get_sample_value("mlmodel_drift_baseline_loaded", {"model": "iris"}) == 1
        assert registry.get_sample_value("mlmodel_prediction_psi", {"model": "iris"}) is None
        app.set_drift_baseline(
            with_predictions(build_baseline(iris[0]), ["0", "1", "2"], [0.2, 0.3, 0.5])
        )
        assert client.post("/v2/models/iris/infer", v2_body(iris[0].tolist())).status == 200
        assert registry.get_sample_value("mlmodel_prediction_psi", {"model": "iris"}) is not None
    finally:
        client.close()


def with_predictions(baseline: Baseline, classes: list[str], proportions: list[float]) -> Baseline:
    return Baseline(
        baseline.features, baseline.rows, PredictionBaseline(tuple(classes), np.array(proportions))
    )


def test_the_predictions_part(iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> None:
    doc = with_predictions(
        build_baseline(iris[0]), ["0", "1", "2"], [1 / 3, 1 / 3, 1 / 3]
    ).to_json()
    parsed = Baseline.from_json(doc, n_features=4, classes=["0", "1", "2"])
    assert parsed.predictions is not None and parsed.predictions.classes == ("0", "1", "2")
    assert Baseline.from_json(doc, n_features=4).predictions is not None
    with pytest.raises(ValueError, match="the model predicts"):
        Baseline.from_json(doc, n_features=4, classes=["a", "b", "c"])
    bad = orjson.loads(doc)
    bad["predictions"]["proportions"] = [0.5, 0.5]
    with pytest.raises(ValueError, match="one proportion per class"):
        Baseline.from_json(orjson.dumps(bad), n_features=4)


def test_predicted_class_psi(iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> None:
    x, y = iris
    baseline = with_predictions(build_baseline(x), ["0", "1", "2"], [1 / 3, 1 / 3, 1 / 3])
    monitor = DriftMonitor(baseline, min_rows=10)
    monitor.observe(x, y)
    assert monitor.snapshot()[2] == pytest.approx(0, abs=1e-9)
    skewed = DriftMonitor(baseline, min_rows=10)
    skewed.observe(x, np.zeros(len(x), dtype=np.int64))
    assert skewed.snapshot()[2] > 1
    unknown = DriftMonitor(baseline, min_rows=10)
    unknown.observe(x, np.full(len(x), 7))
    assert unknown.snapshot()[2] > 1
    no_labels = DriftMonitor(build_baseline(x), min_rows=10)
    no_labels.observe(x, y)
    assert no_labels.snapshot()[2] is None


def test_pending_rows_fold_once_enough_rows_wait() -> None:
    pending: PendingRows[str] = PendingRows(limit=5)
    assert not pending.add("a", 2) and not pending.add("b", 2)
    assert pending.add("c", 1)  # 5 rows pending: time to fold
    assert pending.take() == ["a", "b", "c"]
    assert pending.take() == [] and not pending.add("d", 4)
