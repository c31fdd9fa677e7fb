"""`mlmodel explain`'s computation on real fitted models, no server: which explainer, which
output, one contribution per original column, and the additivity check."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shap
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from mlmodel_operator.archive_cli import CliError
from mlmodel_operator.decisions_cli import require_explain_libraries
from mlmodel_operator.example_models import CHURN_TEXT, churn_frame, fit_churn_pipeline
from mlmodel_operator.explain import (
    ExplainError,
    Explanation,
    RowCodec,
    additivity_line,
    estimator_kind,
    explain_row,
    plot_contributions,
    take_rows,
)
from mlmodel_serving.decisions import input_columns
from mlmodel_serving.model import SklearnModel
from mlmodel_serving.tabular import Columns

IRIS_X, IRIS_Y = load_iris(return_X_y=True)


def served(estimator: Any) -> SklearnModel:
    return SklearnModel(estimator, "m", "1", "0" * 64)


def explain(estimator: Any, x: np.ndarray[Any, Any], row: int) -> Explanation:
    model = served(estimator)
    columns = input_columns(model.schema.columns, model.n_features)
    return explain_row(shap, model, columns, x[row : row + 1], x[::7])


def churn_columns(n: int, seed: int) -> Columns:
    frame, _ = churn_frame(n, seed)
    arrays = [
        frame[c].to_numpy(dtype=object, na_value=math.nan)
        if c in CHURN_TEXT
        else frame[c].to_numpy(dtype=np.float64)
        for c in frame.columns
    ]
    return Columns(tuple(frame.columns), tuple(arrays))


def test_a_forest_is_explained_exactly_by_its_trees() -> None:
    est = DecisionTreeClassifier(max_depth=4, random_state=0).fit(IRIS_X, IRIS_Y)
    e = explain(est, IRIS_X, 120)
    assert e.method.startswith("shap.TreeExplainer (tree_path_dependent")
    assert e.target.output == "predict_proba" and e.target.column == est.predict(IRIS_X[120:121])[0]
    assert e.explained_value == est.predict_proba(IRIS_X[120:121]).max()
    assert e.additive and e.background_rows == 0 and e.notes == ()
    magnitudes = [abs(c.contribution) for c in e.contributions]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert "holds" in additivity_line(e)


def test_a_tree_regressor_explains_its_prediction() -> None:
    x, y = make_regression(200, 5, random_state=0)
    e = explain(RandomForestRegressor(n_estimators=10, random_state=0).fit(x, y), x, 3)
    assert e.target.output == "predict" and e.additive and len(e.contributions) == 5


def test_a_boosted_classifier_explains_the_probability_of_either_class() -> None:
    x, y = make_classification(300, 5, random_state=0)
    est = GradientBoostingClassifier(n_estimators=30, random_state=0).fit(x, y)
    predicted = est.predict(x)
    for label in (0, 1):
        row = int(np.flatnonzero(predicted == label)[0])
        e = explain(est, x, row)
        assert e.method.startswith(
            "shap.TreeExplainer (interventional, model_output='probability')"
        )
        assert e.target.column == label and e.additive
        assert math.isclose(e.explained_value, est.predict_proba(x[row : row + 1])[0, label])


def test_what_shap_refuses_is_explained_model_agnostically_and_said() -> None:
    est = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(IRIS_X, IRIS_Y)
    e = explain(est, IRIS_X, 60)  # three classes: no TreeExplainer probability
    assert e.method.startswith("shap.explainers.Exact") and e.additive
    assert "could not explain this GradientBoostingClassifier" in e.notes[0]


def test_a_logistic_regression_is_explained_in_its_decision_function() -> None:
    est = LogisticRegression(max_iter=1000).fit(IRIS_X, IRIS_Y)
    e = explain(est, IRIS_X, 70)
    assert e.method.startswith("shap.LinearExplainer") and e.additive
    label = est.predict(IRIS_X[70:71])[0]
    assert e.target.label == (
        f"decision_function (logit, before softmax) of class {label} (the predicted class)"
    )
    x, y = make_classification(200, 4, random_state=1)
    binary = LogisticRegression().fit(x, y)
    for label in (0, 1):
        row = int(np.flatnonzero(binary.predict(x) == label)[0])
        e = explain(binary, x, row)
        assert e.additive and e.target.label.startswith("decision_function (log-odds) of class")
        assert math.isclose(
            e.explained_value, (1 if label else -1) * binary.decision_function(x[row : row + 1])[0]
        )


def test_a_numeric_pipeline_without_probabilities() -> None:
    est = make_pipeline(StandardScaler(), SVC()).fit(IRIS_X, IRIS_Y)
    assert estimator_kind(est) == "other"
    e = explain(est, IRIS_X, 10)
    assert e.target.output == "decision_function" and e.method.startswith("shap.explainers.Exact")
    assert e.additive and e.background_rows == len(IRIS_X[::7])


def test_many_columns_use_the_permutation_explainer() -> None:
    x, y = make_classification(200, 12, random_state=0)
    e = explain(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), x, 5)
    assert e.method.startswith("shap.explainers.Permutation") and e.additive
    assert len(e.contributions) == 12


def test_a_dataframe_pipeline_is_explained_per_original_column() -> None:
    model = served(fit_churn_pipeline("onehot"))
    rows, background = churn_columns(40, 3), churn_columns(60, 4)
    e = explain_row(shap, model, model.schema.columns, take_rows(rows, slice(5, 6)), background)
    assert {c.feature for c in e.contributions} == {
        "tenure",
        "monthly_charges",
        "total_charges",
        "contract",
        "payment_method",
        "internet_service",
    }
    assert all(isinstance(c.value, str) for c in e.contributions if c.feature in CHURN_TEXT)
    assert "text columns coded as category indices" in e.method
    label = model.predict(take_rows(rows, slice(5, 6)), ("predict",))["predict"][0]
    assert e.target.label == f"predict_proba of class {str(label)!r} (the predicted class)"
    assert e.additive and e.background_rows == 60


def test_the_codec_gives_back_the_strings_and_the_missing_values() -> None:
    cols = churn_columns(80, 9)
    model = served(fit_churn_pipeline("onehot"))
    codec = RowCodec.fit(model.schema.columns, [cols])
    back = codec.decode(codec.encode(cols))
    for a, b in zip(cols.arrays, back.arrays, strict=True):
        assert [None if isinstance(v, float) and math.isnan(v) else v for v in a.tolist()] == [
            None if isinstance(v, float) and math.isnan(v) else v for v in b.tolist()
        ]
    assert any(isinstance(v, float) for v in back.arrays[4].tolist())  # a missing payment_method
    assert np.array_equal(
        model.predict(cols, ("predict_proba",))["predict_proba"],
        model.predict(back, ("predict_proba",))["predict_proba"],
    )


def test_one_row_at_a_time() -> None:
    est = DecisionTreeClassifier(random_state=0).fit(IRIS_X, IRIS_Y)
    with pytest.raises(ExplainError, match="one row, got 2"):
        explain_row(shap, served(est), input_columns(None, 4), IRIS_X[:2], IRIS_X)


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    e = explain(DecisionTreeClassifier(random_state=0).fit(IRIS_X, IRIS_Y), IRIS_X, 100)
    plot_contributions(e, tmp_path / "why.png", "request r1")
    assert (tmp_path / "why.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_shap_the_message_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "shap", None)  # import shap now raises ImportError
    with pytest.raises(CliError, match=r"pip install 'mlmodel-lifecycle\[explain\]'"):
        require_explain_libraries(plot=False)
    monkeypatch.setitem(sys.modules, "shap", shap)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(CliError, match=r"--plot needs matplotlib"):
        require_explain_libraries(plot=True)
    assert require_explain_libraries(plot=False) is shap
