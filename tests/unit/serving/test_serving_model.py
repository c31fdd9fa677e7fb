"""The model wrapper: input checks, outputs, metadata, loading a verified artifact."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from serving_helpers import FAKE_SHA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlmodel_serving.artifacts import DigestMismatchError, sha256_file
from mlmodel_serving.model import ModelInputError, SklearnModel, library_versions, quiet_warnings


def test_outputs_follow_the_estimator(
    iris_model: SklearnModel, regressor: LinearRegression
) -> None:
    assert iris_model.outputs == ("predict", "predict_proba", "decision_function")
    assert iris_model.is_classifier
    reg = SklearnModel(regressor, "r", "1", FAKE_SHA)
    assert reg.outputs == ("predict",) and not reg.is_classifier and reg.n_features == 3


def test_predict_matches_the_estimator(
    iris_model: SklearnModel, iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]
) -> None:
    x = iris[0][:7]
    out = iris_model.predict(x, ("predict_proba", "predict"))
    assert list(out) == ["predict_proba", "predict"]
    np.testing.assert_array_equal(out["predict"], iris_model.estimator.predict(x))
    np.testing.assert_array_equal(out["predict_proba"], iris_model.estimator.predict_proba(x))


def test_check_input(iris_model: SklearnModel) -> None:
    iris_model.check_input(np.zeros((3, 4)))
    with pytest.raises(ModelInputError, match=r"expects 4 \(shape \[N, 4\]\)"):
        iris_model.check_input(np.zeros((3, 5)))
    with pytest.raises(ModelInputError, match="2-D"):
        iris_model.check_input(np.zeros(4))
    with pytest.raises(ModelInputError, match="no rows"):
        iris_model.check_input(np.zeros((0, 4)))


def test_check_outputs(iris_model: SklearnModel) -> None:
    assert iris_model.check_outputs(()) == ("predict",)
    assert iris_model.check_outputs(("predict_proba",)) == ("predict_proba",)
    with pytest.raises(
        ModelInputError, match=r"has outputs \['predict', 'predict_proba', 'decision_function'\]"
    ):
        iris_model.check_outputs(("score",))


def test_not_an_estimator() -> None:
    with pytest.raises(TypeError, match="has no predict"):
        SklearnModel({"a": 1}, "m", "1", FAKE_SHA)


def test_string_labels_metadata() -> None:
    clf = LogisticRegression().fit(
        np.array([[0.0], [1.0], [2.0], [3.0]]), ["cat", "cat", "dog", "dog"]
    )
    model = SklearnModel(clf, "pets", "1", FAKE_SHA)
    assert model.output_metadata()[0] == {"name": "predict", "datatype": "BYTES", "shape": [-1]}
    assert model.predict(np.array([[3.0]]), ("predict",))["predict"].tolist() == ["dog"]


def test_load_verifies_the_digest(
    tmp_path: Path, iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]
) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(*iris), path)
    model = SklearnModel.load(path, sha256_file(path), "iris", "7")
    assert model.n_features == 4 and model.version == "7" and model.load_seconds > 0
    with pytest.raises(DigestMismatchError):
        SklearnModel.load(path, "f" * 64, "iris", "7")


def test_library_versions() -> None:
    assert set(library_versions()) == {"python", "sklearn", "joblib", "numpy"}


class _NoisyForest(RandomForestClassifier):
    """Warns on every predict, as a model fitted on a DataFrame does on array input."""

    def predict_proba(self, X: Any) -> Any:
        warnings.warn("X does not have valid feature names", UserWarning, stacklevel=2)
        return super().predict_proba(X)


def test_quiet_warnings_leaves_one_filter_and_predictions_unchanged() -> None:
    rng = np.random.default_rng(0)
    x_fit = rng.normal(size=(60, 3))
    forest = _NoisyForest(n_estimators=5, random_state=0).fit(x_fit, x_fit[:, 0] > 0)
    x = rng.normal(size=(4, 3))
    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("always")
        expected = forest.predict_proba(x)
    assert any("feature names" in str(w.message) for w in before)
    with warnings.catch_warnings(record=True) as after:  # restores the filters afterwards
        quiet_warnings()
        assert warnings.filters == [("ignore", None, Warning, None, 0)]
        got = forest.predict_proba(x)
    assert after == []
    np.testing.assert_array_equal(got, expected)


def test_estimator_errors_on_client_values_are_input_errors_else_the_servers(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
) -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from mlmodel_serving.model import ModelInputError

    sqrt = make_pipeline(FunctionTransformer(np.sqrt), LogisticRegression(max_iter=1000))
    model = SklearnModel(sqrt.fit(*iris), "sqrt", "1", FAKE_SHA)
    # NaN sent by the client: LogisticRegression's validation refuses it -> a 400
    with pytest.raises(ModelInputError, match=r"cannot take this input.*NaN"):
        model.predict(np.array([[np.nan, 1.0, 1.0, 1.0]]), ("predict",))
    # finite input, NaN made inside the Pipeline: the model's fault, not a ModelInputError
    with pytest.raises(ValueError) as inside:
        model.predict(np.array([[-1.0, 1.0, 1.0, 1.0]]), ("predict",))
    assert not isinstance(inside.value, ModelInputError)
