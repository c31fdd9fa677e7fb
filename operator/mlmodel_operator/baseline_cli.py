"""`mlmodel baseline`: the drift baseline of a model version, from its training data.

    mlmodel baseline train.csv --model model.joblib --sha256 <its digest> -o baseline.json
        [--label churned]

The features part is the server's own format (``mlmodel_serving.drift``): per feature,
quantile bin edges and the training proportions. With ``--model`` the file is checked
against the model (feature count) and also records the proportions of the classes the
model predicts on the training data (``"predictions"``), from which the server exports
``mlmodel_prediction_psi``. Upload the file beside the artifact
and name it in ``spec.monitoring.drift.baselineUri``.

The model is unpickled, which runs code from the file, so ``--model`` needs
``--sha256`` (the digest the MLModel names in ``spec.artifact.sha256``): the file is read
once and the bytes that hashed to it are the bytes unpickled. ``--no-sha256`` loads a
file without the check, for a model you made yourself.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mlmodel_operator.replay import InputError, read_inputs
from mlmodel_serving.artifacts import validate_sha256
from mlmodel_serving.drift import Baseline, build_baseline


class BaselineError(Exception):
    """A baseline that cannot be made; the message says what to change."""


def drop_label(
    x: np.ndarray[Any, Any], names: list[str] | None, label: str | None
) -> tuple[np.ndarray[Any, Any], list[str] | None]:
    """The feature columns: without the ``label`` column when one is named."""
    if label is None:
        return x, names
    if names is None:
        raise BaselineError(f"--label {label!r} needs a CSV header (or JSON objects) to find it")
    if label not in names:
        raise BaselineError(f"--label {label!r} is not a column; the columns are {names}")
    keep = [i for i, n in enumerate(names) if n != label]
    return x[:, keep], [names[i] for i in keep]


def prediction_profile(model: Any, x: np.ndarray[Any, Any]) -> dict[str, Any] | None:
    """Class proportions of the model's predictions on ``x`` (None for a regressor)."""
    if not hasattr(model, "classes_"):
        return None
    predicted = np.asarray(model.predict(x))
    classes = [c.item() if hasattr(c, "item") else c for c in np.asarray(model.classes_)]
    counts = [int((predicted == c).sum()) for c in classes]
    return {
        "classes": [str(c) for c in classes],
        "proportions": [n / len(predicted) for n in counts],
    }


def make_baseline(
    x: np.ndarray[Any, Any],
    names: list[str] | None,
    bins: int,
    model: Any = None,
) -> bytes:
    """The baseline document: the server's features part, plus predictions with a model."""
    if bins < 2:
        raise BaselineError(f"--bins {bins}: expected at least 2")
    expected = getattr(model, "n_features_in_", None)
    if expected is not None and x.shape[1] != expected:
        raise BaselineError(
            f"the training data has {x.shape[1]} feature columns but the model expects "
            f"{expected}: name the label column with --label"
        )
    doc = orjson.loads(build_baseline(x, bins=bins, feature_names=names).to_json())
    profile = prediction_profile(model, x) if model is not None else None
    if profile is not None:
        doc["predictions"] = profile
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    # What the server will accept for this model.
    Baseline.from_json(data, x.shape[1], profile["classes"] if profile else None)
    return data


def load_model(path: Path, sha256: str | None) -> Any:
    """Unpickle a local model file; with ``sha256``, only if its digest matches.

    The file is read once and the digest is computed over the very bytes that are then
    unpickled (from memory): a file replaced after it was hashed is never loaded.
    """
    import joblib

    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256.lower():
        raise BaselineError(f"{path}: sha256 is {digest}, not {sha256}: refusing to load it")
    return joblib.load(io.BytesIO(data))


def model_digest(args: argparse.Namespace) -> str | None:
    """The digest ``--model`` must have, or None with the explicit ``--no-sha256``."""
    if args.sha256 and args.no_sha256:
        raise BaselineError("give --sha256 or --no-sha256, not both")
    if args.sha256:
        return validate_sha256(args.sha256.lower())
    if args.no_sha256:
        return None
    raise BaselineError(
        "--model needs --sha256 SHA256 (the model's digest, as in spec.artifact.sha256): "
        "the file is unpickled, which runs code from it; --no-sha256 loads a file you made "
        "yourself without the check"
    )


def baseline(args: argparse.Namespace) -> int:
    try:
        x, names = read_inputs(Path(args.train))
        x, names = drop_label(x, names, args.label)
        model = load_model(Path(args.model), model_digest(args)) if args.model else None
        data = make_baseline(x, names, args.bins, model)
    except (InputError, BaselineError, OSError, ValueError) as exc:
        print(f"mlmodel baseline: {exc}", file=sys.stderr)
        return 2
    if args.output == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(args.output).write_bytes(data)
        print(f"wrote {args.output}: {x.shape[0]} rows, {x.shape[1]} features", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    """Add ``baseline`` to the `mlmodel` parser."""
    p = sub.add_parser("baseline", help="make the drift baseline of a model from its training data")
    p.add_argument("train", help="training data: CSV (header optional) or JSON lines")
    p.add_argument("--model", help="the model file (joblib): checks the features, adds classes")
    p.add_argument(
        "--sha256",
        metavar="SHA256",
        help="the digest of --model (as in spec.artifact.sha256): it is unpickled only if its "
        "bytes have it; required with --model",
    )
    p.add_argument(
        "--no-sha256",
        action="store_true",
        help="load --model without a digest check (unpickling runs code from the file: only "
        "for a model you made yourself)",
    )
    p.add_argument("--label", help="the label column of the training data, left out")
    p.add_argument("--bins", type=int, default=10, help="quantile bins (default: %(default)s)")
    p.add_argument("-o", "--output", default="baseline.json", help="'-' for stdout")
    p.set_defaults(func=baseline)
