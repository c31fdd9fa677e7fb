"""Leaf tables: the same bits as scikit-learn's forest predict, or no leaf tables at all."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import sparse
from serving_helpers import FAKE_SHA
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from mlmodel_serving import forest as forest_module
from mlmodel_serving.forest import LeafTables, compile_forest, compile_model, probe_rows
from mlmodel_serving.model import PATH_LEAF_TABLES, PATH_SKLEARN, ModelInputError, SklearnModel

N_FEATURES = 6


def _classification(n_classes: int = 3) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    return make_classification(
        n_samples=400,
        n_features=N_FEATURES,
        n_informative=4,
        n_redundant=0,
        n_classes=n_classes,
        random_state=0,
    )


@pytest.fixture(scope="module")
def rf() -> RandomForestClassifier:
    x, y = _classification()
    return RandomForestClassifier(n_estimators=25, random_state=0).fit(x, y)


def _rows(n: int, seed: int = 1) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).normal(scale=3.0, size=(n, N_FEATURES))


def _tables(estimator: Any) -> LeafTables:
    tables, reason = compile_forest(estimator)
    assert tables is not None, reason
    return tables


def _assert_same_bits(tables: LeafTables, estimator: Any, x: np.ndarray[Any, Any]) -> None:
    x32 = tables.prepare(x)
    assert x32 is not None
    mean = tables.mean(x32)
    if tables.is_classifier:
        expected = estimator.predict_proba(x)
        assert mean.dtype == expected.dtype and mean.tobytes() == expected.tobytes()
        labels = tables.labels(mean)
        assert labels.dtype == estimator.predict(x).dtype
        assert labels.tolist() == estimator.predict(x).tolist()
    else:
        expected = estimator.predict(x)
        assert mean.dtype == expected.dtype and mean.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomForestClassifier(n_estimators=20, random_state=0),
        lambda: ExtraTreesClassifier(n_estimators=20, random_state=0),
        lambda: RandomForestClassifier(n_estimators=10, max_depth=3, random_state=2),
        lambda: RandomForestClassifier(n_estimators=10, bootstrap=False, random_state=3),
        lambda: RandomForestClassifier(
            n_estimators=10, class_weight="balanced", min_samples_leaf=5, random_state=4
        ),
    ],
    ids=["rf", "extra-trees", "shallow", "no-bootstrap", "weighted-leaves"],
)
@pytest.mark.parametrize("n_rows", [1, 32, 700])
def test_classifiers_give_the_same_bits(make: Any, n_rows: int) -> None:
    x, y = _classification()
    estimator = make().fit(x, y)
    _assert_same_bits(_tables(estimator), estimator, _rows(n_rows))


@pytest.mark.parametrize(
    "labels", [["no", "yes"], [10, 20], [True, False]], ids=["strings", "ints", "bools"]
)
def test_class_labels_come_back_as_the_estimator_gives_them(labels: list[Any]) -> None:
    x, y = _classification(n_classes=2)
    named = np.array(labels)[y]
    estimator = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, named)
    _assert_same_bits(_tables(estimator), estimator, _rows(50))


@pytest.mark.parametrize("cls", [RandomForestRegressor, ExtraTreesRegressor])
def test_regressors_give_the_same_bits(cls: Any) -> None:
    x, y = make_regression(n_samples=300, n_features=N_FEATURES, random_state=0)
    estimator = cls(n_estimators=15, random_state=0).fit(x, y)
    _assert_same_bits(_tables(estimator), estimator, _rows(200))


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 40), st.just(N_FEATURES)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64),
    )
)
def test_any_finite_rows_give_the_same_bits(rf: RandomForestClassifier, x: Any) -> None:
    _assert_same_bits(_tables(rf), rf, x)


def test_the_tables_are_views_of_the_trees_not_copies(rf: RandomForestClassifier) -> None:
    tables = _tables(rf)
    assert all(
        np.shares_memory(table, member.tree_.value)
        for table, member in zip(tables.tables, rf.estimators_, strict=True)
    )


def test_probe_rows_sit_on_the_split_thresholds(rf: RandomForestClassifier) -> None:
    rows = probe_rows(rf, n_rows=200)
    assert rows.shape == (200, N_FEATURES) and np.isfinite(rows).all()
    thresholds = {float(t) for e in rf.estimators_ for t in e.tree_.threshold[e.tree_.feature >= 0]}
    on_a_threshold = sum(float(v) in thresholds for v in rows.ravel())
    assert on_a_threshold > rows.size / 10
    # Reaches many distinct leaves of the first tree, not a handful.
    assert len(set(rf.estimators_[0].apply(rows.astype(np.float32)).tolist())) > 10


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda x, y: LogisticRegression().fit(x, y), "LogisticRegression is not"),
        (
            lambda x, y: make_pipeline(StandardScaler(), RandomForestClassifier(5)).fit(x, y),
            "Pipeline is not",
        ),
        (lambda x, y: GradientBoostingClassifier(n_estimators=5).fit(x, y), "is not"),
        (
            lambda x, y: RandomForestClassifier(5).fit(x, np.column_stack([y, y])),
            "more than one output",
        ),
        (lambda x, y: RandomForestClassifier(5), "could not read the fitted trees"),
    ],
    ids=["linear", "pipeline", "boosting", "multi-output", "unfitted"],
)
def test_unsupported_estimators_keep_predict(make: Any, reason: str) -> None:
    x, y = _classification()
    tables, why = compile_forest(make(x, y))
    assert tables is None and reason in why


def test_a_subclass_is_not_assumed_to_predict_the_same_way() -> None:
    class Tweaked(RandomForestClassifier):
        pass

    x, y = _classification()
    tables, why = compile_forest(Tweaked(n_estimators=5).fit(x, y))
    assert tables is None and "Tweaked is not" in why


def test_any_difference_on_the_probe_rows_keeps_predict(
    rf: RandomForestClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    exact = LeafTables.mean

    def one_ulp_off(self: LeafTables, x32: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        out = exact(self, x32)
        return np.nextafter(out, np.inf)

    monkeypatch.setattr(forest_module.LeafTables, "mean", one_ulp_off)
    tables, why = compile_forest(rf)
    assert tables is None and "predict_proba differs" in why


def test_a_predict_that_fails_on_the_probe_rows_keeps_predict(
    rf: RandomForestClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(x: Any) -> Any:
        raise RuntimeError("no probes today")

    monkeypatch.setattr(rf, "predict_proba", broken)
    tables, why = compile_forest(rf)
    assert tables is None and "could not compare on probe rows (RuntimeError" in why


def test_a_pipeline_ending_in_a_forest_gives_the_pipelines_bits() -> None:
    x, y = _classification()
    pipe = make_pipeline(StandardScaler(), RandomForestClassifier(10, random_state=0)).fit(x, y)
    tables, head, why = compile_model(pipe)
    assert tables is not None and head is not None, why
    assert "after the Pipeline's first 1 step(s)" in why
    model = SklearnModel(pipe, "forest", "1", FAKE_SHA)
    model.use_leaf_tables()
    assert model.predict_path == PATH_LEAF_TABLES
    rows = _rows(40)
    out = model.predict(rows, ("predict", "predict_proba"))
    assert out["predict_proba"].tobytes() == pipe.predict_proba(rows).tobytes()
    assert out["predict"].tolist() == pipe.predict(rows).tolist()


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        (
            lambda: [StandardScaler(), LogisticRegression()],
            "the Pipeline's last step: LogisticRegression is not",
        ),
        (
            # Earlier steps that hand on a sparse matrix: scikit-learn's predict takes it,
            # the tables do not.
            lambda: [
                FunctionTransformer(sparse.csr_matrix),
                RandomForestClassifier(5, random_state=0),
            ],
            "do not give a finite dense array",
        ),
    ],
    ids=["linear-last", "sparse-head"],
)
def test_other_pipelines_keep_predict(steps: Any, reason: str) -> None:
    x, y = _classification()
    pipe = make_pipeline(*steps()).fit(x, y)
    tables, head, why = compile_model(pipe)
    assert tables is None and head is None and reason in why


def test_the_model_uses_tables_only_when_asked(rf: RandomForestClassifier) -> None:
    model = SklearnModel(rf, "forest", "1", FAKE_SHA)
    assert model.predict_path == PATH_SKLEARN and model.tables is None
    assert "25 trees" in model.use_leaf_tables()
    assert model.predict_path == PATH_LEAF_TABLES
    assert model.metadata()["parameters"]["predictPath"] == "leaf-tables"
    x = _rows(9)
    out = model.predict(x, ("predict_proba", "predict"))
    assert list(out) == ["predict_proba", "predict"]
    assert out["predict_proba"].tobytes() == rf.predict_proba(x).tobytes()
    assert out["predict"].tolist() == rf.predict(x).tolist()
    assert list(model.predict(x, ("predict",))) == ["predict"]


def test_a_linear_model_keeps_its_own_predict(iris_model: SklearnModel) -> None:
    assert "is not" in iris_model.use_leaf_tables()
    assert iris_model.predict_path == PATH_SKLEARN
    assert iris_model.metadata()["parameters"]["predictPath"] == "sklearn"


def test_values_beyond_float32_go_to_sklearn_and_fail_as_there(rf: RandomForestClassifier) -> None:
    model = SklearnModel(rf, "forest", "1", FAKE_SHA)
    model.use_leaf_tables()
    x = _rows(2)
    x[1, 0] = 1e39  # finite as float64, infinite once cast to float32 as the trees need
    with pytest.raises(ValueError) as from_tables:
        model.predict(x, ("predict",))
    with pytest.raises(ValueError) as from_sklearn:
        rf.predict(x)
    # The estimator's own message, as a 400 (ModelInputError) rather than a 500.
    assert isinstance(from_tables.value, ModelInputError)
    assert str(from_tables.value).endswith(str(from_sklearn.value))
