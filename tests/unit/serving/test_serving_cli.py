"""The CLI's pieces that need no running server: settings errors, logging, loading."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import joblib
import pytest
from serving_helpers import make_settings
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from mlmodel_serving.artifacts import DigestMismatchError, sha256_file
from mlmodel_serving.cli import JsonFormatter, TextFormatter, load_model, main, tune_process


def test_bad_settings_exit_2_with_the_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MLMODEL_MODEL_NAME", "MLMODEL_ARTIFACT_URI", "MLMODEL_ARTIFACT_SHA256"):
        monkeypatch.delenv(name, raising=False)
    assert main(["--model-name", "m", "--artifact-uri", "/x", "--artifact-sha256", "nothex"]) == 2
    assert "64 lowercase hex" in capsys.readouterr().err


def test_json_log_lines_carry_the_extra_fields() -> None:
    record = logging.LogRecord(
        "mlmodel_serving", logging.INFO, __file__, 1, "loaded %s", ("m",), None
    )
    record.sha256 = "abc"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "loaded m" and line["level"] == "info" and line["sha256"] == "abc"
    assert "sha256=abc" in TextFormatter().format(record)


def test_load_model_verifies_and_caches(tmp_path: Path, iris_estimator: LogisticRegression) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(iris_estimator, path)
    sha = sha256_file(path)
    settings = make_settings(
        artifact_uri=str(path), artifact_sha256=sha, cache_dir=tmp_path / "cache"
    )
    model = load_model(settings)
    assert model.sha256 == sha and model.load_seconds > 0
    assert (tmp_path / "cache" / "sha256" / sha).is_file()
    with pytest.raises(DigestMismatchError):
        load_model(
            make_settings(
                artifact_uri=str(path), artifact_sha256="e" * 64, cache_dir=tmp_path / "cache"
            )
        )


def test_load_model_uses_leaf_tables_for_a_forest_unless_turned_off(tmp_path: Path) -> None:
    x, y = make_classification(n_samples=200, n_features=5, random_state=0)
    path = tmp_path / "forest.joblib"
    joblib.dump(RandomForestClassifier(n_estimators=8, random_state=0).fit(x, y), path)
    sha = sha256_file(path)
    common = {"artifact_uri": str(path), "artifact_sha256": sha, "cache_dir": tmp_path / "c"}
    on = load_model(make_settings(**common))
    off = load_model(make_settings(**common, leaf_tables=False))
    assert (on.predict_path, off.predict_path) == ("leaf-tables", "sklearn")
    assert on.predict(x, ("predict_proba",))["predict_proba"].tobytes() == (
        off.predict(x, ("predict_proba",))["predict_proba"].tobytes()
    )


def test_load_model_names_an_unwritable_cache_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="set MLMODEL_CACHE_DIR or --cache-dir"):
        load_model(make_settings(cache_dir=blocker / "cache"))


def test_tune_process_sets_the_gil_switch_interval_and_logs_warnings() -> None:
    before = sys.getswitchinterval()
    try:
        tune_process(make_settings(gil_switch_interval_ms=0.3))
        assert sys.getswitchinterval() == pytest.approx(0.0003)
        assert warnings.showwarning.__module__ == "logging"  # warnings go to the log
        tune_process(make_settings(gil_switch_interval_ms=0))  # 0 leaves it as it is
        assert sys.getswitchinterval() == pytest.approx(0.0003)
    finally:
        sys.setswitchinterval(before)
        logging.captureWarnings(False)
