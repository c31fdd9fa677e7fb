"""The forest micro-benchmark: both paths timed, compared bit for bit, rendered."""

from __future__ import annotations

import pytest
from benchmarks.serving import bench_forest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier


def test_measure_times_both_paths_and_renders_the_ratio() -> None:
    x, y = make_classification(n_samples=200, n_features=5, random_state=0)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    results = bench_forest.measure(forest, x, [1, 7], pairs=4)
    assert [r["rows"] for r in results] == [1, 7]
    for r in results:
        assert r["sklearn_ms"] > 0 and r["tables_ms"] > 0
        assert r["speedup"] == pytest.approx(r["sklearn_ms"] / r["tables_ms"])
    text = bench_forest.render(results, "python benchmarks/run.py forest")
    assert "| 7 | 4 |" in text and "speed-up" in text


def test_a_model_without_tables_is_an_error() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=50, n_features=3, n_informative=2, n_redundant=0)
    with pytest.raises(RuntimeError, match="no leaf tables"):
        bench_forest.measure(LogisticRegression().fit(x, y), x, [1], pairs=1)


def test_bad_batch_sizes_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_forest.main(["--batch", "1,zero"])
    assert "--batch '1,zero'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_forest.main(["--batch", "0"])
    assert ">= 1" in capsys.readouterr().err
