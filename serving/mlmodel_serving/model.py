"""The loaded model: a scikit-learn estimator with its identity. Knows nothing of HTTP."""

from __future__ import annotations

import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlmodel_serving.artifacts import load_verified_joblib
from mlmodel_serving.forest import LeafTables, compile_model
from mlmodel_serving.protocol import InferenceRequest
from mlmodel_serving.tabular import INPUT_NAME as INPUT_NAME
from mlmodel_serving.tabular import Columns, InputSchema
from mlmodel_serving.tabular import ModelInputError as ModelInputError

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
DECISION_FUNCTION = "decision_function"
#: What ``predict`` takes: a numeric array, or Columns for a model with text columns.
ModelInput = np.ndarray[Any, Any] | Columns
#: How ``SklearnModel.predict`` computes: the estimator's own methods, or leaf tables.
PATH_SKLEARN = "sklearn"
PATH_LEAF_TABLES = "leaf-tables"


def quiet_warnings() -> None:
    """Process-wide, once the model is loaded: a single warnings filter, ``ignore``.

    scikit-learn's parallel helper re-installs every process-wide warnings filter around
    each task it runs, and a forest runs one task per tree on every ``predict``: with the
    dozen filters numpy, scipy and Python install, a 100-tree forest spends about 40% of a
    one-row ``predict`` re-installing filters. One filter makes that cost small. It also
    silences what would be noise on every request (a model fitted on a DataFrame warns on
    each array input, and the server always passes arrays in the training column order).
    Warnings raised while loading come before this and are logged. Called by the CLI.
    """
    warnings.resetwarnings()
    warnings.simplefilter("ignore")


def library_versions() -> dict[str, str]:
    """Versions of the libraries a pickled scikit-learn model depends on."""
    import joblib
    import sklearn

    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "joblib": joblib.__version__,
        "numpy": np.__version__,
    }


@dataclass
class SklearnModel:
    """One scikit-learn estimator (or Pipeline), its name, version and artifact digest."""

    estimator: Any
    name: str
    version: str
    sha256: str
    load_seconds: float = 0.0
    n_features: int | None = field(init=False)
    schema: InputSchema = field(init=False)
    outputs: tuple[str, ...] = field(init=False)
    classes: np.ndarray[Any, Any] | None = field(init=False)
    tables: LeafTables | None = field(init=False, default=None)
    # With tables for a Pipeline's last step: the Pipeline of the steps before it.
    tables_head: Any = field(init=False, default=None)
    predict_path: str = field(init=False, default=PATH_SKLEARN)

    def __post_init__(self) -> None:
        if not callable(getattr(self.estimator, PREDICT, None)):
            raise TypeError(
                f"the artifact holds a {type(self.estimator).__name__}, which has no predict(): "
                "expected a scikit-learn estimator or Pipeline"
            )
        self.schema = InputSchema.of(self.estimator)
        self.n_features = self.schema.n_features
        optional = (PREDICT_PROBA, DECISION_FUNCTION)
        self.outputs = (
            PREDICT,
            *(name for name in optional if callable(getattr(self.estimator, name, None))),
        )
        classes = getattr(self.estimator, "classes_", None)
        self.classes = np.asarray(classes) if classes is not None else None

    @classmethod
    def load(cls, path: Path, sha256: str, name: str, version: str) -> SklearnModel:
        """Load a verified joblib artifact (the digest is checked again before unpickling)."""
        start = time.perf_counter()
        estimator = load_verified_joblib(path, sha256)
        return cls(estimator, name, version, sha256, load_seconds=time.perf_counter() - start)

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    def use_leaf_tables(self) -> str:
        """Predict through leaf tables if they give the estimator's exact results; says why.

        Only RandomForest and ExtraTrees models (bare, or as a Pipeline's last step)
        qualify, and only after ``compile_model`` has compared both paths bit for bit;
        otherwise nothing changes.
        """
        tables, head, reason = compile_model(self.estimator)
        if tables is not None:
            self.tables, self.tables_head = tables, head
            self.predict_path = PATH_LEAF_TABLES
        return reason

    def check_outputs(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        """The outputs to compute: ``requested``, or ``("predict",)`` when none were named."""
        if not requested:
            return (PREDICT,)
        for name in requested:
            if name not in self.outputs:
                raise ModelInputError(
                    f"unknown output {name!r}: model {self.name!r} has outputs {list(self.outputs)}"
                )
        return requested

    def prepare(self, request: InferenceRequest) -> ModelInput:
        """The decoded request as ``predict`` takes it (see :class:`InputSchema`)."""
        return self.schema.prepare(request)

    def check_input(self, x: np.ndarray[Any, Any]) -> None:
        """Reject a numeric array that does not have the shape ``[N, n_features]``, N >= 1."""
        expected = self.schema.shape_text
        if x.ndim != 2:
            raise ModelInputError(
                f"input has shape {list(x.shape)}: expected a 2-D shape {expected}"
            )
        if x.shape[0] == 0:
            raise ModelInputError(f"input has no rows: expected shape {expected} with N >= 1")
        if self.n_features is not None and x.shape[1] != self.n_features:
            raise ModelInputError(
                f"input has {x.shape[1]} features per row: model {self.name!r} expects "
                f"{self.n_features} (shape {expected})"
            )

    def predict(self, x: ModelInput, outputs: tuple[str, ...]) -> dict[str, np.ndarray[Any, Any]]:
        """Compute the named outputs for the rows of ``x`` (already prepared).

        A ``ValueError`` from the estimator on input it validates and rejects (a
        DataFrame's values, NaN where the model takes none, numbers beyond float32 for a
        tree) is the client's: a :class:`ModelInputError`. On finite numeric input the
        same error comes from inside the model (a step that makes NaN): it stays an
        error of the server.
        """
        try:
            return self._predict(x, outputs)
        except ModelInputError:
            raise
        except ValueError as exc:
            if isinstance(x, np.ndarray) and not _rejectable(x):
                raise
            raise ModelInputError(f"model {self.name!r} cannot take this input: {exc}") from None

    def _predict(self, x: ModelInput, outputs: tuple[str, ...]) -> dict[str, np.ndarray[Any, Any]]:
        if isinstance(x, Columns):
            return self._predict_frame(x.frame(), outputs)
        return self._predict_frame(x, outputs)

    def _predict_frame(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray[Any, Any]]:
        tables = self.tables
        x32 = None
        if tables is not None:
            head = self.tables_head
            x32 = tables.prepare(x if head is None else head.transform(x))
        if tables is None or x32 is None:
            return {name: np.asarray(getattr(self.estimator, name)(x)) for name in outputs}
        if DECISION_FUNCTION in outputs:  # not in the tables: the estimator computes it
            return {name: np.asarray(getattr(self.estimator, name)(x)) for name in outputs}
        mean = tables.mean(x32)
        if not tables.is_classifier:
            return {PREDICT: mean}
        return {name: mean if name == PREDICT_PROBA else tables.labels(mean) for name in outputs}

    def output_metadata(self) -> list[dict[str, Any]]:
        meta = []
        for name in self.outputs:
            if name == PREDICT:
                dtype = _label_datatype(self.classes) if self.classes is not None else "FP64"
                meta.append({"name": PREDICT, "datatype": dtype, "shape": [-1]})
            elif name == PREDICT_PROBA:
                n_classes = len(self.classes) if self.classes is not None else -1
                meta.append({"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, n_classes]})
            else:  # decision_function: [N] for two classes, [N, classes] beyond
                n_classes = len(self.classes) if self.classes is not None else 0
                shape = [-1, n_classes] if n_classes > 2 else [-1]
                meta.append({"name": DECISION_FUNCTION, "datatype": "FP64", "shape": shape})
        return meta

    def metadata(self) -> dict[str, Any]:
        """V2 model metadata, with the artifact identity and library versions as parameters."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "sklearn",
            "inputs": self.schema.metadata(),
            "outputs": self.output_metadata(),
            "parameters": {
                "version": self.version,
                "sha256": self.sha256,
                "estimator": type(self.estimator).__name__,
                "predictPath": self.predict_path,
                **({"content_type": "pd"} if self.schema.tabular else {}),
                **library_versions(),
            },
        }


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _rejectable(x: np.ndarray[Any, Any]) -> bool:
    """Numeric input scikit-learn's validation rejects: NaN, or beyond float32's range."""
    if x.dtype.kind != "f":
        return x.dtype.kind not in "biu"  # text or objects: the values were the client's
    return bool(np.isnan(x).any() or (np.abs(x) > _FLOAT32_MAX).any())


def _label_datatype(classes: np.ndarray[Any, Any]) -> str:
    kind = classes.dtype.kind
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    if kind == "b":
        return "BOOL"
    return "BYTES"
