"""Why a model answered what it did: per-feature contributions (SHAP) for one row.

No I/O: the model is a loaded :class:`~mlmodel_serving.model.SklearnModel` (or a model
run in an isolated environment, :class:`~mlmodel_operator.isolated.IsolatedModel`), the row and
the background come in as the model takes them (a float64 array, or ``Columns``). The
command that finds the record and loads its exact artifact is ``mlmodel explain`` in
:mod:`mlmodel_operator.decisions_cli`. shap is imported by the caller and passed in, so
this module imports without it (it is the optional ``explain`` extra).

Which explainer, and why:

* **Tree ensembles** over numbers (RandomForest, ExtraTrees, DecisionTree,
  GradientBoosting, HistGradientBoosting): ``shap.TreeExplainer``, exact. A forest's or
  a tree's raw output *is* the class probability (or the prediction), so the
  tree-path-dependent algorithm explains it with no background; a boosted classifier's
  raw output is a log-odds score, so its probability is explained with the
  interventional algorithm over the background (shap supports this for two classes).
* **Linear models** over numbers: ``shap.LinearExplainer`` over the background. A linear
  classifier is additive in its decision function (the log-odds for a logistic
  regression), not in its probability, so that is the output explained, for the
  predicted class.
* **Everything else, Pipelines included**: a model-agnostic explainer over the original
  input columns, with the background as the masker. Text columns are coded as category
  indices (0 for a missing value) and decoded back into the DataFrame the Pipeline takes
  before every call, so a OneHotEncoder's many outputs stay one contribution per
  original column. With at most :data:`EXACT_MAX_COLUMNS` columns this is
  ``shap.explainers.Exact`` (every coalition, in one batch per row); beyond, a
  ``PermutationExplainer`` (sampled permutations; still exactly additive).

Any result that fails the additivity check (base value + contributions = the explained
output within :data:`ADDITIVITY_TOLERANCE`), or an explainer shap refuses for the model,
falls back to the model-agnostic one, and the explanation says why. A model run in an
isolated environment (``--isolated``) lives in another process: only the model-agnostic
explainer, which calls it as a black box, can explain it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlmodel_serving.model import DECISION_FUNCTION, PREDICT, PREDICT_PROBA
from mlmodel_serving.tabular import TEXT, Column, Columns

ModelInput = np.ndarray[Any, Any] | Columns
ADDITIVITY_TOLERANCE = 1e-6
EXACT_MAX_COLUMNS = 10
INSTALL_HINT = "pip install 'mlmodel-lifecycle[explain]'"


class ExplainError(ValueError):
    """The row cannot be explained (the message says why)."""


class Model(Protocol):
    """What explaining reads of a model: a SklearnModel, or an IsolatedModel (whose
    ``estimator`` is None: it lives in another process)."""

    @property
    def estimator(self) -> Any: ...

    @property
    def classes(self) -> np.ndarray[Any, Any] | None: ...

    @property
    def outputs(self) -> tuple[str, ...]: ...

    @property
    def is_classifier(self) -> bool: ...

    def predict(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray[Any, Any]]: ...


def final_step_name(model: Model) -> str:
    """The class name of the model's last step (an isolated model reports it)."""
    if model.estimator is None:
        return str(getattr(model, "final_step_name", ""))
    return type(_final_step(model.estimator)).__name__


# --------------------------------------------------------------------------- inputs


def n_rows(x: ModelInput) -> int:
    return int(x.shape[0])


def take_rows(x: ModelInput, rows: slice | np.ndarray[Any, Any]) -> ModelInput:
    """Some rows of a model input, of the same kind."""
    if isinstance(x, Columns):
        return Columns(x.names, tuple(a[rows] for a in x.arrays))
    return x[rows]


def concat_rows(parts: Sequence[ModelInput]) -> ModelInput:
    """Rows of several inputs of the same model, one after the other."""
    if isinstance(parts[0], Columns):
        return Columns.concatenate([p for p in parts if isinstance(p, Columns)])
    return np.concatenate([p for p in parts if isinstance(p, np.ndarray)], axis=0)


def row_values(x: ModelInput, names: Sequence[str]) -> list[tuple[str, Any]]:
    """The one row of ``x`` as (column, value) pairs; a missing value is None."""
    values = [a[0] for a in x.arrays] if isinstance(x, Columns) else [float(v) for v in x[0]]
    return [(name, _plain(v)) for name, v in zip(names, values, strict=True)]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass(frozen=True)
class RowCodec:
    """Rows of mixed columns as numbers for shap's maskers, and back.

    Numbers stay as they are (NaN included); a text column's values become category
    indices: 0 for a missing value, ``i + 1`` for ``categories[j][i]``. Decoding gives
    the ``Columns`` the model takes, so the model sees exactly the strings it would be
    sent (every code comes from the row or the background).
    """

    columns: tuple[Column, ...]
    categories: tuple[tuple[str, ...], ...]  # per column; empty for numbers

    @classmethod
    def fit(cls, columns: Sequence[Column], inputs: Sequence[Columns]) -> RowCodec:
        cats = []
        for j, column in enumerate(columns):
            seen: set[str] = set()
            if column.datatype == TEXT:
                for x in inputs:
                    seen.update(str(v) for v in x.arrays[j].tolist() if _plain(v) is not None)
            cats.append(tuple(sorted(seen)))
        return cls(tuple(columns), tuple(cats))

    def encode(self, x: Columns) -> np.ndarray[Any, Any]:
        out = np.empty((x.shape[0], len(self.columns)), dtype=np.float64)
        for j, column in enumerate(self.columns):
            if column.datatype == TEXT:
                index = {v: i + 1 for i, v in enumerate(self.categories[j])}
                out[:, j] = [
                    0 if _plain(v) is None else index[str(v)] for v in x.arrays[j].tolist()
                ]
            else:
                out[:, j] = np.asarray(x.arrays[j], dtype=np.float64)
        return out

    def decode(self, z: np.ndarray[Any, Any]) -> Columns:
        arrays = []
        for j, column in enumerate(self.columns):
            if column.datatype == TEXT:
                lookup = np.empty(len(self.categories[j]) + 1, dtype=object)
                lookup[0] = math.nan  # as a missing text value reaches predict
                lookup[1:] = self.categories[j]
                arrays.append(lookup[z[:, j].astype(np.int64)])
            else:
                arrays.append(np.ascontiguousarray(z[:, j], dtype=np.float64))
        return Columns(tuple(c.name for c in self.columns), tuple(arrays))


# --------------------------------------------------------------------------- the output


@dataclass(frozen=True)
class Target:
    """The one number explained: a column of one of the model's outputs."""

    output: str  # predict_proba, decision_function or predict
    column: int | None  # column of a 2-D output; None for a 1-D one
    sign: float  # -1.0: the first class of a two-class decision_function
    label: str  # what it is, in words

    def pick(self, values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The explained number per row, from the output's array."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 2:
            v = v[:, self.column if self.column is not None else 0]
        return self.sign * v


def predicted_class(model: Model, x_row: ModelInput) -> tuple[int, Any]:
    """The index in ``classes_`` and the label the model predicts for the row."""
    assert model.classes is not None
    label = model.predict(x_row, (PREDICT,))[PREDICT][0]
    matches = np.flatnonzero(model.classes == label)
    if matches.size == 0:
        raise ExplainError(f"the predicted label {label!r} is not one of the model's classes")
    return int(matches[0]), _plain(label)


def choose_target(model: Model, x_row: ModelInput, linear: bool) -> Target:
    """The probability of the predicted class for a classifier (its decision function for
    a linear model, or one without probabilities); the prediction for a regressor."""
    if not model.is_classifier:
        return Target(PREDICT, None, 1.0, "predict (the model's prediction)")
    assert model.classes is not None
    k, label = predicted_class(model, x_row)
    n_classes = len(model.classes)
    if PREDICT_PROBA in model.outputs and not linear:
        return Target(
            PREDICT_PROBA, k, 1.0, f"predict_proba of class {label!r} (the predicted class)"
        )
    if DECISION_FUNCTION not in model.outputs:
        raise ExplainError("the classifier has neither predict_proba nor decision_function")
    logistic = final_step_name(model) == "LogisticRegression"
    what = "score"
    if logistic:
        what = "log-odds" if n_classes == 2 else "logit, before softmax"
    if n_classes == 2:
        return Target(
            DECISION_FUNCTION, None, 1.0 if k == 1 else -1.0,
            f"decision_function ({what}) of class {label!r} (the predicted class)",
        )  # fmt: skip
    return Target(
        DECISION_FUNCTION, k, 1.0,
        f"decision_function ({what}) of class {label!r} (the predicted class)",
    )  # fmt: skip


def _final_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if isinstance(steps, list) and steps else estimator


def target_values(model: Model, target: Target, x: ModelInput) -> np.ndarray[Any, Any]:
    """The explained number for every row of ``x``, computed the way the server does."""
    return target.pick(model.predict(x, (target.output,))[target.output])


# --------------------------------------------------------------------------- explaining


@dataclass(frozen=True)
class Contribution:
    feature: str
    value: Any  # the row's value (None: missing)
    contribution: float


@dataclass(frozen=True)
class Explanation:
    method: str  # the shap explainer and how it was used
    why: str  # why this explainer
    target: Target
    explained_value: float  # the output computed for the row, as the server does
    base_value: float
    contributions: tuple[Contribution, ...]  # sorted by magnitude, largest first
    background_rows: int  # rows the explainer used as background (0: none needed)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total(self) -> float:
        return math.fsum(c.contribution for c in self.contributions)

    @property
    def additivity_gap(self) -> float:
        return abs(self.base_value + self.total - self.explained_value)

    @property
    def additive(self) -> bool:
        return self.additivity_gap <= ADDITIVITY_TOLERANCE

    def as_json(self) -> dict[str, Any]:
        return {
            "explainer": self.method,
            "why": self.why,
            "explained": {
                "output": self.target.output,
                "description": self.target.label,
                "value": self.explained_value,
            },
            "baseValue": self.base_value,
            "contributions": [
                {"feature": c.feature, "value": c.value, "contribution": c.contribution}
                for c in self.contributions
            ],
            "additivity": {
                "baseValuePlusContributions": self.base_value + self.total,
                "explainedValue": self.explained_value,
                "difference": self.additivity_gap,
                "tolerance": ADDITIVITY_TOLERANCE,
                "holds": self.additive,
            },
            "backgroundRows": self.background_rows,
            "notes": list(self.notes),
        }


_FOREST_CLASSIFIERS = (
    "RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier",
    "ExtraTreeClassifier",
)  # fmt: skip
_TREE_REGRESSORS = (
    "RandomForestRegressor", "ExtraTreesRegressor", "DecisionTreeRegressor",
    "ExtraTreeRegressor", "GradientBoostingRegressor", "HistGradientBoostingRegressor",
)  # fmt: skip
_BOOSTED_CLASSIFIERS = ("GradientBoostingClassifier", "HistGradientBoostingClassifier")


def estimator_kind(estimator: Any) -> str:
    """``tree``, ``linear`` or ``other`` (a Pipeline is always ``other``)."""
    cls = type(estimator)
    if not cls.__module__.startswith("sklearn."):
        return "other"
    name = cls.__name__
    if name in _FOREST_CLASSIFIERS + _TREE_REGRESSORS + _BOOSTED_CLASSIFIERS:
        return "tree"
    linear_module = cls.__module__.startswith("sklearn.linear_model") or name in (
        "LinearSVC", "LinearSVR",
    )  # fmt: skip
    if linear_module and hasattr(estimator, "coef_") and hasattr(estimator, "intercept_"):
        coef = np.asarray(estimator.coef_)
        if coef.ndim == 1 or (
            coef.ndim == 2 and (estimator_is_classifier(estimator) or coef.shape[0] == 1)
        ):
            return "linear"
    return "other"


def estimator_is_classifier(estimator: Any) -> bool:
    return getattr(estimator, "classes_", None) is not None


def explain_row(
    shap: Any,
    model: Model,
    columns: Sequence[Column],
    x_row: ModelInput,
    background: ModelInput,
) -> Explanation:
    """Contributions of each of ``columns`` to the model's output for the one row ``x_row``.

    ``background``: rows of the same model (other decisions), at least one.
    """
    if n_rows(x_row) != 1:
        raise ExplainError(f"explain takes one row, got {n_rows(x_row)}")
    if n_rows(background) == 0:
        raise ExplainError("the background has no rows")
    kind = estimator_kind(model.estimator) if isinstance(x_row, np.ndarray) else "other"
    notes: list[str] = []
    if model.estimator is None:
        notes.append(
            "the version runs in an isolated environment (another process), so it is "
            "explained by the model-agnostic explainer, which only calls it"
        )
    if kind in ("tree", "linear") and isinstance(x_row, np.ndarray):
        target = choose_target(model, x_row, linear=kind == "linear")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if kind == "tree":
                    result = _tree(shap, model, columns, target, x_row, background)
                else:
                    result = _linear(shap, model, columns, target, x_row, background)
        except Exception as exc:  # shap refuses some models: say so, explain another way
            notes.append(
                f"shap.{'TreeExplainer' if kind == 'tree' else 'LinearExplainer'} could not "
                f"explain this {type(model.estimator).__name__} ({_short(exc)}): used the "
                "model-agnostic explainer instead"
            )
        else:
            if result.additive:
                return result
            notes.append(
                f"{result.method} was off by {result.additivity_gap:.3g} in the additivity "
                "check: used the model-agnostic explainer instead"
            )
    target = choose_target(model, x_row, linear=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = _agnostic(shap, model, columns, target, x_row, background)
    return dataclasses.replace(result, notes=tuple(notes))


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _sorted(
    columns: Sequence[Column], x_row: ModelInput, values: np.ndarray[Any, Any]
) -> tuple[Contribution, ...]:
    names = [c.name for c in columns]
    pairs = row_values(x_row, names)
    items = [
        Contribution(name, value, float(v))
        for (name, value), v in zip(pairs, np.asarray(values, dtype=np.float64), strict=True)
    ]
    return tuple(sorted(items, key=lambda c: (-abs(c.contribution), c.feature)))


def _one_output(
    values: Any, expected: Any, target: Target, n_features: int
) -> tuple[np.ndarray[Any, Any], float]:
    """shap's values for one row and its base value, for the target's class.

    shap gives ``[rows, features, classes]`` for several outputs (with one expected value
    per class) and ``[rows, features]`` for one (for a two-class model: the second class).
    """
    v = np.asarray(values, dtype=np.float64)
    base = np.ravel(np.asarray(expected, dtype=np.float64))
    if v.ndim == 3 and target.column is not None:
        return v[0, :, target.column], float(base[target.column])
    if v.ndim != 2 or v.shape[1] != n_features:
        raise ExplainError(f"unexpected shap output of shape {list(v.shape)}")
    return v[0], float(base[0])


def _tree(
    shap: Any,
    model: Model,
    columns: Sequence[Column],
    target: Target,
    x_row: np.ndarray[Any, Any],
    background: ModelInput,
) -> Explanation:
    est = model.estimator
    name = type(est).__name__
    explained = float(target_values(model, target, x_row)[0])
    n = x_row.shape[1]
    if target.output == PREDICT_PROBA and name in _BOOSTED_CLASSIFIERS:
        assert isinstance(background, np.ndarray)
        if len(model.classes if model.classes is not None else ()) != 2:
            raise ExplainError(
                "shap explains a boosted classifier's probability for two classes only"
            )
        explainer = shap.TreeExplainer(
            est, background, model_output="probability", feature_perturbation="interventional"
        )
        values = explainer.shap_values(x_row)
        # One output: the probability of the second class; the first's is 1 minus it.
        v, base = _one_output(
            values, explainer.expected_value, Target(PREDICT_PROBA, 1, 1.0, ""), n
        )
        if target.column == 0:
            v, base = -v, 1.0 - base
        return Explanation(
            "shap.TreeExplainer (interventional, model_output='probability')",
            f"a {name}'s raw output is a log-odds score: its probability is explained over "
            "the background sample",
            target, explained, base, _sorted(columns, x_row, v), int(background.shape[0]),
        )  # fmt: skip
    explainer = shap.TreeExplainer(est, feature_perturbation="tree_path_dependent")
    values = explainer.shap_values(x_row)
    v, base = _one_output(values, explainer.expected_value, target, n)
    what = "class probability" if target.output == PREDICT_PROBA else "prediction"
    return Explanation(
        "shap.TreeExplainer (tree_path_dependent, model_output='raw')",
        f"a {name}'s raw output is its {what}: explained exactly from the trees, with "
        "their training cover as the background",
        target, explained, base, _sorted(columns, x_row, v), 0,
    )  # fmt: skip


def _linear(
    shap: Any,
    model: Model,
    columns: Sequence[Column],
    target: Target,
    x_row: np.ndarray[Any, Any],
    background: ModelInput,
) -> Explanation:
    assert isinstance(background, np.ndarray)
    explained = float(target_values(model, target, x_row)[0])
    explainer = shap.LinearExplainer(model.estimator, background)
    values = explainer.shap_values(x_row)
    v, base = _one_output(
        values, explainer.expected_value, Target("", target.column, 1.0, ""), x_row.shape[1]
    )
    if target.sign < 0:  # the first of two classes: its decision function is the negative
        v, base = -v, -base
    return Explanation(
        "shap.LinearExplainer (interventional)",
        f"a {type(model.estimator).__name__} is additive in its decision function: each "
        "contribution is coefficient x (value - background mean)",
        target, explained, base, _sorted(columns, x_row, v), int(background.shape[0]),
    )  # fmt: skip


def _agnostic(
    shap: Any,
    model: Model,
    columns: Sequence[Column],
    target: Target,
    x_row: ModelInput,
    background: ModelInput,
) -> Explanation:
    decode: Callable[[np.ndarray[Any, Any]], ModelInput]
    if isinstance(x_row, Columns):
        assert isinstance(background, Columns)
        codec = RowCodec.fit(columns, [x_row, background])
        z_row, z_bg = codec.encode(x_row), codec.encode(background)
        decode = codec.decode
        coded = " (text columns coded as category indices, decoded before each call)"
    else:
        assert isinstance(background, np.ndarray)
        z_row = np.asarray(x_row, dtype=np.float64)
        z_bg = np.asarray(background, dtype=np.float64)

        def decode(z: np.ndarray[Any, Any]) -> ModelInput:
            return np.ascontiguousarray(z, dtype=np.float64)

        coded = ""

    def f(z: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return target_values(model, target, decode(z))

    explained = float(f(z_row)[0])
    masker = shap.maskers.Independent(z_bg, max_samples=z_bg.shape[0])
    m = z_row.shape[1]
    if m <= EXACT_MAX_COLUMNS:
        result = shap.explainers.Exact(f, masker)(z_row, batch_size=2**m, silent=True)
        method = "shap.explainers.Exact (every coalition of the columns)" + coded
    else:
        evals = max(500, 10 * (2 * m + 1))
        result = shap.explainers.Permutation(f, masker, seed=0)(
            z_row, max_evals=evals, batch_size=2 * m + 1, silent=True
        )
        method = f"shap.explainers.Permutation ({evals} evaluations, seed 0)" + coded
    values = np.asarray(result.values, dtype=np.float64)[0]
    base = float(np.ravel(result.base_values)[0])
    return Explanation(
        method,
        "model-agnostic: the model is called on the row with columns replaced by the "
        "background's, so each original input column gets one contribution",
        target, explained, base, _sorted(columns, x_row, values), int(z_bg.shape[0]),
    )  # fmt: skip


# --------------------------------------------------------------------------- output


def format_contributions(expl: Explanation) -> list[str]:
    """The contributions as table rows (feature, value, signed contribution)."""
    from mlmodel_operator.archive_cli import format_table

    rows = [["FEATURE", "VALUE", "CONTRIBUTION"]]
    rows += [
        [
            c.feature,
            "(missing)" if c.value is None else _value_text(c.value),
            f"{c.contribution:+.6g}",
        ]
        for c in expl.contributions
    ]
    return format_table(rows).splitlines()


def _value_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def additivity_line(expl: Explanation) -> str:
    verdict = "holds" if expl.additive else "FAILS"
    return (
        f"base value {expl.base_value:.9g} + sum of contributions {expl.total:+.9g} = "
        f"{expl.base_value + expl.total:.9g}; explained output {expl.explained_value:.9g}; "
        f"difference {expl.additivity_gap:.2g} (tolerance {ADDITIVITY_TOLERANCE:g}): {verdict}"
    )


def plot_contributions(expl: Explanation, path: Path, title: str) -> None:
    """A horizontal bar chart of the contributions, largest at the top, as a PNG (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = list(reversed(expl.contributions))
    labels = [
        f"{c.feature} = {'(missing)' if c.value is None else _value_text(c.value)}" for c in items
    ]
    values = [c.contribution for c in items]
    fig = Figure(figsize=(8, 1.6 + 0.4 * len(items)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.barh(labels, values, color=["#c0392b" if v > 0 else "#2e86c1" for v in values])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"contribution to {expl.target.label}")
    ax.set_title(
        f"{title}\nbase {expl.base_value:.4g} -> output {expl.explained_value:.4g}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
