"""Run inside an environment of an older release (scikit-learn 1.5): train, dump, predict.

Not a test module: tests/integration/archive/test_isolated.py runs it with that
environment's Python. It plays the past: the models a team trained then, and the answers
the server of that time gave. Arguments: the input JSON, the output directory. Writes
``<model>.joblib`` and ``outputs.json`` (per request id, per output: dtype, shape and the
raw little-endian bytes in base64 for numbers, a list for labels).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def frame(columns: dict[str, list[Any]], text: list[str]) -> pd.DataFrame:
    """What the server built from named columns: object arrays (NaN when missing) for
    text, float64 for numbers."""
    data = {}
    for name, values in columns.items():
        if name in text:
            a = np.empty(len(values), dtype=object)
            for i, v in enumerate(values):
                a[i] = np.nan if v is None else v
            data[name] = a
        else:
            data[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return pd.DataFrame(data, copy=False)


def encode(values: Any) -> dict[str, Any]:
    a = np.asarray(values)
    if a.dtype.kind == "f":
        raw = np.ascontiguousarray(a, dtype="<f8").tobytes()
        return {"dtype": "<f8", "shape": list(a.shape), "b64": base64.b64encode(raw).decode()}
    return {"dtype": a.dtype.str, "shape": list(a.shape), "list": a.tolist()}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    outputs: dict[str, dict[str, Any]] = {}

    iris = spec["iris"]
    lr = LogisticRegression(C=0.8, max_iter=1000).fit(np.array(iris["x"]), np.array(iris["y"]))
    joblib.dump(lr, out / "iris.joblib")
    outputs["iris"] = {
        rid: {"predict": encode(lr.predict(np.array(x))),
              "predict_proba": encode(lr.predict_proba(np.array(x)))}
        for rid, x in iris["batches"].items()
    }  # fmt: skip
    # every batch's rows in one call, as `mlmodel replay` runs an input file
    rows = np.array([row for x in iris["batches"].values() for row in x])
    outputs["iris-all"] = {"all": {"predict": encode(lr.predict(rows)),
                                   "predict_proba": encode(lr.predict_proba(rows))}}  # fmt: skip

    churn = spec["churn"]
    text, numeric = churn["text"], churn["numeric"]
    pipeline = Pipeline([
        ("pre", ColumnTransformer([
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                  OneHotEncoder(handle_unknown="ignore")), text),
        ])),
        ("model", LogisticRegression(max_iter=1000)),
    ])  # fmt: skip
    pipeline.fit(frame(churn["columns"], text), np.array(churn["labels"], dtype=object))
    joblib.dump(pipeline, out / "churn.joblib")
    outputs["churn"] = {}
    for rid, columns in churn["batches"].items():
        x = frame(columns, text)
        outputs["churn"][rid] = {
            "predict": encode(pipeline.predict(x)),
            "predict_proba": encode(pipeline.predict_proba(x)),
        }
    (out / "outputs.json").write_text(
        json.dumps({"sklearn": sklearn.__version__, "numpy": np.__version__, "outputs": outputs})
    )


if __name__ == "__main__":
    main()
