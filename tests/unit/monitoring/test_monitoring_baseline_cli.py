"""`mlmodel baseline`: a baseline the server accepts, from training data and the model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import joblib
import numpy as np
import orjson
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlmodel_operator.cli import main
from mlmodel_operator.example_models import churn_data
from mlmodel_serving.drift import Baseline, DriftMonitor

NAMES = [f"f{i}" for i in range(8)]


@pytest.fixture()
def train(tmp_path: Path) -> tuple[Path, Path, str]:
    x, y = churn_data(n=500)
    csv = tmp_path / "train.csv"
    lines = [",".join([*NAMES, "churned"])]
    lines += [",".join(f"{v:.6f}" for v in [*row, label]) for row, label in zip(x, y, strict=True)]
    csv.write_text("\n".join(lines) + "\n")
    model = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), model)
    return csv, model, hashlib.sha256(model.read_bytes()).hexdigest()


def test_baseline_from_training_data_and_model(
    tmp_path: Path, train: tuple[Path, Path, str]
) -> None:
    csv, model, sha = train
    out = tmp_path / "baseline.json"
    code = main(["baseline", str(csv), "--model", str(model), "--sha256", sha,
                 "--label", "churned", "--bins", "5", "-o", str(out)])  # fmt: skip
    assert code == 0
    baseline = Baseline.from_json(out.read_bytes(), n_features=8)  # as the server loads it
    assert [f.name for f in baseline.features] == NAMES and baseline.rows == 500
    assert all(len(f.proportions) == 5 for f in baseline.features)
    predictions = orjson.loads(out.read_bytes())["predictions"]
    assert predictions["classes"] == ["0", "1"]
    assert sum(predictions["proportions"]) == pytest.approx(1)
    assert 0.3 < predictions["proportions"][0] < 0.7
    # The training data itself does not drift against its own baseline.
    x = np.loadtxt(csv, delimiter=",", skiprows=1)[:, :8]
    monitor = DriftMonitor(baseline, window_rows=500)
    monitor.observe(x)
    assert max(monitor.snapshot()[1].values()) < 0.05


def test_regressor_and_no_model(tmp_path: Path, train: tuple[Path, Path, str]) -> None:
    csv, _, _ = train
    x, y = churn_data(n=500)
    reg = tmp_path / "reg.joblib"
    joblib.dump(LinearRegression().fit(x, y), reg)
    out = tmp_path / "b.json"
    sha = hashlib.sha256(reg.read_bytes()).hexdigest()
    argv = ["baseline", str(csv), "--model", str(reg), "--sha256", sha, "--label", "churned"]
    assert main([*argv, "-o", str(out)]) == 0
    assert "predictions" not in orjson.loads(out.read_bytes())
    assert main(["baseline", str(csv), "--label", "churned", "-o", str(out)]) == 0
    assert len(Baseline.from_json(out.read_bytes()).features) == 8


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "9 feature columns but the model expects 8: name the label column with --label"),
        (["--label", "nope"], "--label 'nope' is not a column"),
        (["--label", "churned", "--sha256", "0" * 64], "refusing to load it"),
        (["--label", "churned", "--bins", "1"], "--bins 1: expected at least 2"),
    ],
)
def test_refusals_say_what_to_change(
    tmp_path: Path,
    train: tuple[Path, Path, str],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    csv, model, sha = train
    out = tmp_path / "b.json"
    argv = ["baseline", str(csv), "--model", str(model), "--sha256", sha, "-o", str(out)]
    assert main([*argv, *extra]) == 2  # a later --sha256 in extra wins
    assert message in capsys.readouterr().err
    assert not out.exists()
