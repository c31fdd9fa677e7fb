"""Leaf tables: a tree ensemble's ``predict`` without scikit-learn's per-tree task machinery.

A fitted RandomForest or ExtraTrees answers ``predict`` by running one joblib task per
tree: each task re-validates the input, walks the tree, copies out the leaf values
and adds them to the sum under a lock. For one to a few dozen rows that
bookkeeping is most of the time (a 100-tree forest: ~7.5 ms for one row, of which the
tree walks are well under one).

A ``LeafTables`` does the same arithmetic with the bookkeeping taken out of the loop:

* at load, each tree's leaf values are taken as the rows scikit-learn looks up (a view
  of the tree's own array, so no memory is added);
* per call, the input is cast to float32 once, each tree is walked by scikit-learn's
  own Cython ``Tree.apply``, and the looked-up rows are added in estimator order into
  one float64 array, then divided by the number of trees.

That is the order of operations of scikit-learn's ``predict_proba`` (scikit-learn 1.4
and later, ``n_jobs`` unset), so the results are the same bits, not merely close.
``compile_forest`` checks this on probe rows before it returns tables, and returns
``None`` (the caller keeps scikit-learn's ``predict``) for anything outside the
supported shape or on any difference at all. (With ``n_jobs`` set, scikit-learn adds
the trees in whatever order its threads finish, so its own last bits vary from call
to call; the tables keep estimator order.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Estimator classes with leaf tables, by module and name; subclasses are not assumed
#: to predict the same way, so an exact class match is required.
CLASSIFIERS = frozenset(
    {
        ("sklearn.ensemble._forest", "RandomForestClassifier"),
        ("sklearn.ensemble._forest", "ExtraTreesClassifier"),
    }
)
REGRESSORS = frozenset(
    {
        ("sklearn.ensemble._forest", "RandomForestRegressor"),
        ("sklearn.ensemble._forest", "ExtraTreesRegressor"),
    }
)

#: Rows the load-time check predicts both ways and compares bit for bit.
PROBE_ROWS = 512


@dataclass(frozen=True)
class LeafTables:
    """Per-tree ``Tree`` objects and their leaf values, in estimator order."""

    trees: tuple[Any, ...]
    tables: tuple[np.ndarray[Any, Any], ...]
    classes: np.ndarray[Any, Any] | None

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    def prepare(self, x: Any) -> np.ndarray[Any, Any] | None:
        """``x`` as the float32 C array the trees walk, or None to let scikit-learn predict.

        None for anything but a dense array (a Pipeline step may hand on a sparse matrix),
        and when the cast is not finite: a finite float64 beyond float32's range becomes
        infinite, and scikit-learn rejects that with its own error.
        """
        if not isinstance(x, np.ndarray):
            return None
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x32).all():
            return None
        return x32

    def mean(self, x32: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The forest's mean leaf value per row: class probabilities, or the regression."""
        first = self.tables[0]
        out = np.zeros((x32.shape[0], *first.shape[1:]), dtype=np.float64)
        for tree, table in zip(self.trees, self.tables, strict=True):
            np.add(out, table.take(tree.apply(x32), axis=0), out=out)  # `take`: ~2x `[]`
        out /= len(self.trees)
        return out

    def labels(self, proba: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Class labels from probabilities, as ``ForestClassifier.predict`` picks them."""
        if self.classes is None:
            raise TypeError("a regressor's tables have no class labels")
        return np.asarray(self.classes.take(np.argmax(proba, axis=1), axis=0))


def compile_forest(estimator: Any) -> tuple[LeafTables | None, str]:
    """Leaf tables for ``estimator`` and why, or ``(None, reason)`` to keep ``predict``.

    Never raises for an unsupported or odd estimator: anything unexpected is a reason
    to keep scikit-learn's own path.
    """
    kind = (type(estimator).__module__, type(estimator).__name__)
    if kind not in CLASSIFIERS and kind not in REGRESSORS:
        return None, f"{type(estimator).__name__} is not a RandomForest or ExtraTrees model"
    try:
        tables = _build(estimator, is_classifier=kind in CLASSIFIERS)
    except _Unsupported as exc:
        return None, str(exc)
    except Exception as exc:  # an estimator from another scikit-learn: keep its own path
        return None, f"could not read the fitted trees ({type(exc).__name__}: {exc})"
    try:
        mismatch = _check(estimator, tables)
    except Exception as exc:  # predict itself failed on the probe rows: keep its own path
        return None, f"could not compare on probe rows ({type(exc).__name__}: {exc})"
    if mismatch:
        return None, mismatch
    return tables, f"leaf tables for {len(tables.trees)} trees, equal to predict on probe rows"


def compile_model(estimator: Any) -> tuple[LeafTables | None, Any, str]:
    """``(tables, head, reason)`` for a forest, or a Pipeline whose last step is one.

    For a Pipeline, ``head`` is the Pipeline of its earlier steps: predict with the
    tables on ``head.transform(x)``, as ``Pipeline.predict`` hands the last step the
    transformed rows. The forest is checked on its own probe rows, and the whole
    Pipeline once more on random rows of its input. ``head`` is None for a bare forest.
    """
    kind = (type(estimator).__module__, type(estimator).__name__)
    if kind != ("sklearn.pipeline", "Pipeline"):
        tables, reason = compile_forest(estimator)
        return tables, None, reason
    try:
        head, final = estimator[:-1], estimator.steps[-1][1]
    except Exception as exc:
        return None, None, f"could not split the Pipeline ({type(exc).__name__}: {exc})"
    tables, reason = compile_forest(final)
    if tables is None:
        return None, None, f"the Pipeline's last step: {reason}"
    try:
        mismatch = _check_pipeline(estimator, head, tables)
    except Exception as exc:  # a step that cannot take random numeric rows
        return (
            None,
            None,
            f"could not compare the Pipeline on random rows ({type(exc).__name__}: {exc})",
        )
    if mismatch:
        return None, None, mismatch
    return tables, head, f"{reason}, after the Pipeline's first {len(head.steps)} step(s)"


class _Unsupported(Exception):
    pass


def _build(estimator: Any, *, is_classifier: bool) -> LeafTables:
    """Each tree's leaf values as the rows its ``predict_proba`` (or ``predict``) returns.

    scikit-learn 1.4 and later store a classifier leaf's class fractions and return them
    as they are (earlier versions normalised weighted counts on every call; with those,
    the probe comparison fails and the estimator keeps its own ``predict``).
    """
    if int(estimator.n_outputs_) != 1:
        raise _Unsupported("more than one output")
    trees = tuple(member.tree_ for member in estimator.estimators_)
    if not trees:
        raise _Unsupported("no fitted trees")
    if not is_classifier:
        values = tuple(np.ascontiguousarray(t.value[:, 0, 0], dtype=np.float64) for t in trees)
        return LeafTables(trees, values, None)
    n_classes = int(estimator.n_classes_)
    if any(int(m.n_classes_) != n_classes for m in estimator.estimators_):
        raise _Unsupported("a tree has a different number of classes from the forest")
    fractions = tuple(
        np.ascontiguousarray(t.value[:, 0, :n_classes], dtype=np.float64) for t in trees
    )
    return LeafTables(trees, fractions, np.asarray(estimator.classes_))


def probe_rows(estimator: Any, n_rows: int = PROBE_ROWS, seed: int = 0) -> np.ndarray[Any, Any]:
    """Rows that reach many leaves: each feature drawn from around its split thresholds.

    Values sit on, just below and just above the thresholds the trees split on, so the
    comparison exercises both sides of the ``<=`` tests, plus a spread beyond them.
    """
    rng = np.random.default_rng(seed)
    n_features = int(estimator.n_features_in_)
    # Every split's (feature, threshold), grouped by feature with numpy: a big forest has
    # millions of splits, too many for a Python loop at start-up.
    trees = [member.tree_ for member in estimator.estimators_]
    inner = [tree.children_left != -1 for tree in trees]
    features = np.concatenate([t.feature[i] for t, i in zip(trees, inner, strict=True)])
    thresholds = np.concatenate([t.threshold[i] for t, i in zip(trees, inner, strict=True)])
    order = np.argsort(features, kind="stable")
    bounds = np.searchsorted(features[order], np.arange(n_features + 1))
    per_feature = [thresholds[order[bounds[j] : bounds[j + 1]]] for j in range(n_features)]
    columns = []
    for values in per_feature:
        if not len(values):
            columns.append(rng.normal(size=n_rows))
            continue
        low, high = float(values.min()), float(values.max())
        span = max(high - low, 1.0)
        picks = rng.choice(values, size=n_rows)
        nudge = rng.choice(np.array([-1.0, 0.0, 1.0]), size=n_rows) * span * 1e-6
        spread = rng.uniform(low - span, high + span, size=n_rows)
        columns.append(np.where(rng.random(n_rows) < 0.75, picks + nudge, spread))
    return np.column_stack(columns).astype(np.float64)


def _check(estimator: Any, tables: LeafTables) -> str:
    """An empty string when the tables give predict's (and predict_proba's) exact bits."""
    return _compare(estimator, probe_rows(estimator), tables, None, "probe rows")


def _check_pipeline(pipeline: Any, head: Any, tables: LeafTables) -> str:
    """An empty string when head + tables give the whole Pipeline's exact bits."""
    rows = np.random.default_rng(0).normal(size=(256, int(pipeline.n_features_in_)))
    return _compare(pipeline, rows, tables, head.transform, "random rows through the Pipeline")


def _compare(
    model: Any,
    rows: np.ndarray[Any, Any],
    tables: LeafTables,
    transform: Callable[[Any], Any] | None,
    what: str,
) -> str:
    """Compare ``model`` with the tables (after ``transform``) on 1, 32 and all ``rows``."""
    for x in (rows[:1], rows[:32], rows):
        x32 = tables.prepare(x if transform is None else transform(x))
        if x32 is None:
            return f"{what} do not give a finite dense array"
        mean = tables.mean(x32)
        if tables.is_classifier:
            if not _same(mean, model.predict_proba(x)):
                return f"predict_proba differs from the leaf tables on {len(x)} {what}"
            if not _same(tables.labels(mean), model.predict(x)):
                return f"predict differs from the leaf tables on {len(x)} {what}"
        elif not _same(mean, model.predict(x)):
            return f"predict differs from the leaf tables on {len(x)} {what}"
    return ""


def _same(a: np.ndarray[Any, Any], b: Any) -> bool:
    b = np.asarray(b)
    return bool(a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b))
