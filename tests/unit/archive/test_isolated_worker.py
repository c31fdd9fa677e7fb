"""`--isolated`, the pure parts: which versions to install, the cache key, the worker's
protocol (run in this process on a real model) and the array codec."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlmodel_operator import isolated_worker
from mlmodel_operator.example_models import churn_frame, fit_churn_pipeline
from mlmodel_operator.isolated import (
    IsolationError,
    Requirements,
    encode_input,
    environment_key,
    recorded_requirements,
)
from mlmodel_operator.manifest import MANIFEST_FORMAT, ManifestView
from mlmodel_serving.tabular import Columns

RELEASE = {
    "mlmodel-lifecycle": "0.9.0",
    "python": "3.11.7",
    "scikit-learn": "1.5.2",
    "joblib": "1.4.2",
    "numpy": "1.26.4",
    "imageIsDefault": True,
    "note": "...",
}


def manifest(release: dict[str, Any] | None, trained: str | None = "1.5.1") -> ManifestView:
    raw = {
        "format": MANIFEST_FORMAT,
        "model": "m", "namespace": "ns", "version": "1", "sha256": "0" * 64, "size": 1,
        "artifactUri": "s3://b/k",
        "libraries": {"trainedWith": {"scikit-learn": trained}, "servingRelease": release},
    }  # fmt: skip
    return ManifestView.parse(raw, "test")


def test_the_serving_release_that_decided_is_pinned() -> None:
    req = recorded_requirements(manifest(RELEASE), "1.5.1")
    assert req.lines() == ["joblib==1.4.2", "numpy==1.26.4", "scikit-learn==1.5.2", "pandas"]
    assert req.python == "3.11.7" and "serving release" in req.source
    with_pandas = recorded_requirements(manifest({**RELEASE, "pandas": "2.2.3"}), None)
    assert "pandas==2.2.3" in with_pandas.lines() and "pandas" not in with_pandas.lines()


def test_a_custom_image_falls_back_to_the_pickled_version() -> None:
    req = recorded_requirements(manifest({**RELEASE, "imageIsDefault": False}), "1.5.1")
    assert req.lines() == ["scikit-learn==1.5.1", "numpy", "joblib", "pandas"]
    assert "custom image" in req.source
    no_manifest = recorded_requirements(None, "1.4.0")
    assert no_manifest.lines()[0] == "scikit-learn==1.4.0" and "no archive manifest" in (
        no_manifest.source
    )


def test_unknown_or_odd_versions_are_refused_before_pip_sees_them() -> None:
    with pytest.raises(IsolationError, match="no recorded scikit-learn version"):
        recorded_requirements(None, None)
    with pytest.raises(IsolationError, match="not a version number"):
        recorded_requirements(manifest({**RELEASE, "numpy": "1.0 --index-url http://x"}), None)


def test_the_cache_key_follows_the_requirements_and_the_interpreter() -> None:
    a = Requirements((("scikit-learn", "1.5.2"),), ("numpy",), None, "x")
    b = Requirements((("scikit-learn", "1.5.1"),), ("numpy",), None, "x")
    assert environment_key(a, "3.11.7") == environment_key(a, "3.11.7")
    assert environment_key(a, "3.11.7") != environment_key(b, "3.11.7")
    assert environment_key(a, "3.11.7") != environment_key(a, "3.12.1")


@pytest.mark.parametrize(
    "values",
    [
        np.array([[0.1, -0.0, np.nan], [np.inf, 5e-324, 1.7976931348623157e308]]),
        np.array([3, -1, 2**62], dtype=np.int64),
        np.array([True, False]),
        np.array(["churn", "stay"], dtype=object),
        np.array(["a", "bc"]),
        np.array(["a", np.nan], dtype=object),
    ],
)
def test_arrays_cross_the_process_boundary_unchanged(values: np.ndarray[Any, Any]) -> None:
    wire = json.loads(json.dumps(isolated_worker.encode(values), allow_nan=False))
    back = isolated_worker.decode(wire)
    assert back.dtype == values.dtype and back.shape == values.shape
    if values.dtype.kind == "f":
        assert back.tobytes() == values.tobytes()  # bit for bit, NaN and -0.0 included
    elif values.dtype.kind == "O":
        assert [v if v == v else "nan" for v in back] == [v if v == v else "nan" for v in values]
    else:
        assert back.tolist() == values.tolist()


def run_worker(*requests: dict[str, Any]) -> list[dict[str, Any]]:
    out = io.StringIO()
    lines = "".join(json.dumps(r) + "\n" for r in requests)
    isolated_worker.serve(io.StringIO(lines), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def dump(estimator: Any, path: Path) -> str:
    joblib.dump(estimator, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_worker_runs_a_model_as_the_server_does(tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    lr = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path / "m.joblib"
    sha = dump(lr, path)
    rows = np.ascontiguousarray(x[::30])
    loaded, predicted = run_worker(
        {"op": "load", "path": str(path), "sha256": sha},
        {"op": "predict", "outputs": ["predict", "predict_proba"], "input": encode_input(rows)},
    )
    assert loaded["ok"] and loaded["info"]["estimator"] == "LogisticRegression"
    assert loaded["info"]["outputs"] == ["predict", "predict_proba", "decision_function"]
    assert isolated_worker.decode(loaded["info"]["classes"]).tolist() == [0, 1, 2]
    assert predicted["ok"]
    proba = isolated_worker.decode(predicted["outputs"]["predict_proba"])
    assert proba.tobytes() == lr.predict_proba(rows).tobytes()


def test_the_worker_builds_the_servers_dataframe_for_text_columns(tmp_path: Path) -> None:
    pipeline = fit_churn_pipeline("onehot")
    path = tmp_path / "churn.joblib"
    sha = dump(pipeline, path)
    frame, _ = churn_frame(20, seed=4)
    arrays = tuple(
        frame[c].to_numpy(dtype=object) if frame[c].dtype == object else frame[c].to_numpy()
        for c in frame.columns
    )
    columns = Columns(tuple(frame.columns), arrays)
    _, answer = run_worker(
        {"op": "load", "path": str(path), "sha256": sha},
        {"op": "predict", "outputs": ["predict_proba"], "input": encode_input(columns)},
    )
    assert answer["ok"], answer
    got = isolated_worker.decode(answer["outputs"]["predict_proba"])
    assert got.tobytes() == pipeline.predict_proba(columns.frame()).tobytes()


def test_the_worker_unpickles_only_the_bytes_it_hashed(tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    sha = dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), path)
    path.write_bytes(path.read_bytes() + b"\0")
    refused, no_model, unknown = run_worker(
        {"op": "load", "path": str(path), "sha256": sha},
        {"op": "predict", "outputs": ["predict"], "input": encode_input(np.zeros((1, 1)))},
        {"op": "fly"},
    )
    assert not refused["ok"] and "sha256 mismatch" in refused["error"] and sha in refused["error"]
    assert not no_model["ok"] and no_model["error"] == "no artifact loaded"
    assert not unknown["ok"] and "unknown op 'fly'" in unknown["error"]
