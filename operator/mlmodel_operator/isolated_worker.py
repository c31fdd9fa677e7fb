"""The process that loads and runs one artifact inside an isolated environment.

Started by :mod:`mlmodel_operator.isolated` as ``<env>/bin/python -I isolated_worker.py``.
It imports nothing of this project and, at the top, nothing but the standard library, so
it runs with whatever numpy, joblib, scikit-learn and pandas the environment was built
with, years from now too. It speaks JSON lines on stdin/stdout, one answer per request:

- ``{"op": "versions"}``: Python's version and every installed distribution's.
- ``{"op": "load", "path": ..., "sha256": ...}``: reads the file once, checks the digest of
  those bytes, and unpickles *the same bytes* (never the path again). Answers what the
  estimator is and the warnings it raised (an ``InconsistentVersionWarning``, say).
- ``{"op": "predict", "outputs": [...], "input": ...}``: the named methods on the input,
  each called as the model server calls it (an array, or a DataFrame for named columns).

Arrays travel as ``{"dtype", "shape", "b64"}`` (raw little-endian bytes: float64 values
come back bit for bit) or, for text and objects, ``{"dtype", "shape", "list"}``.
Kept to Python 3.9 syntax: an old recorded Python may run it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import platform
import sys
import traceback
import warnings
from typing import Any

OUTPUTS = ("predict", "predict_proba", "decision_function")


def encode(values: Any) -> dict[str, Any]:
    import numpy as np

    a = np.asarray(values)
    if a.dtype.kind in "biuf":
        data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        return {
            "dtype": data.dtype.str,
            "shape": list(a.shape),
            "b64": base64.b64encode(data.tobytes()).decode("ascii"),
        }
    items = [None if isinstance(v, float) and math.isnan(v) else v for v in a.ravel().tolist()]
    return {"dtype": "object" if a.dtype.kind == "O" else a.dtype.str, "shape": list(a.shape),
            "list": [_plain(v) for v in items]}  # fmt: skip


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def decode(data: dict[str, Any]) -> Any:
    import numpy as np

    shape = tuple(data["shape"])
    if "b64" in data:
        raw = base64.b64decode(data["b64"])
        return np.frombuffer(raw, dtype=np.dtype(data["dtype"])).reshape(shape).copy()
    items = [math.nan if v is None else v for v in data["list"]]
    if data["dtype"] == "object":
        out = np.empty(len(items), dtype=object)
        for i, v in enumerate(items):
            out[i] = v
        return out.reshape(shape)
    return np.array(items, dtype=np.dtype(data["dtype"])).reshape(shape)


def model_input(data: dict[str, Any]) -> Any:
    """A float64 array, or the DataFrame the server builds from named columns."""
    if "array" in data:
        return decode(data["array"])
    import pandas as pd

    columns = data["columns"]
    return pd.DataFrame({c["name"]: decode(c["values"]) for c in columns}, copy=False)


def versions() -> dict[str, Any]:
    import importlib.metadata

    packages = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[str(name).lower()] = dist.version
    return {"python": platform.python_version(), "packages": packages}


def _final_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if isinstance(steps, list) and steps else estimator


def load(path: str, sha256: str) -> tuple[Any, dict[str, Any]]:
    import joblib

    with open(path, "rb") as f:
        data = f.read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ValueError(
            f"sha256 mismatch for {path}: expected {sha256}, the bytes hash to {actual}"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = joblib.load(io.BytesIO(data))
    if not callable(getattr(estimator, "predict", None)):
        raise TypeError(f"the artifact holds a {type(estimator).__name__}, which has no predict()")
    classes = getattr(estimator, "classes_", None)
    names = getattr(estimator, "feature_names_in_", None)
    info = {
        "estimator": type(estimator).__name__,
        "finalStep": type(_final_step(estimator)).__name__,
        "outputs": [n for n in OUTPUTS if callable(getattr(estimator, n, None))],
        "classes": None if classes is None else encode(classes),
        "nFeatures": getattr(estimator, "n_features_in_", None),
        "featureNames": None if names is None else [str(n) for n in names],
        "warnings": [
            f"{w.category.__name__}: {str(w.message).splitlines()[0] if str(w.message) else ''}"
            for w in caught
        ],
    }
    return estimator, info


def serve(stdin: Any, stdout: Any) -> None:
    estimator = None
    for line in stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "versions":
                answer: dict[str, Any] = {"ok": True, "versions": versions()}
            elif op == "load":
                estimator, info = load(request["path"], request["sha256"])
                answer = {"ok": True, "info": info}
            elif op == "predict":
                if estimator is None:
                    raise RuntimeError("no artifact loaded")
                x = model_input(request["input"])
                outputs = {}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # as the server runs
                    for name in request["outputs"]:
                        outputs[name] = encode(getattr(estimator, name)(x))
                answer = {"ok": True, "outputs": outputs}
            elif op == "quit":
                return
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:  # the caller decides what a failure means
            first = str(exc).splitlines()[0] if str(exc) else ""
            answer = {"ok": False, "type": type(exc).__name__, "error": first,
                      "traceback": traceback.format_exc(limit=-3)}  # fmt: skip
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


def main() -> None:
    # The answers get their own copy of stdout; whatever a library prints goes to stderr.
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    serve(sys.stdin, channel)


if __name__ == "__main__":
    main()
