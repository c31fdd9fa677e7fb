"""The example "churn" model of `make demo` and manifests/examples: trained, not downloaded.

Each version is a real scikit-learn model trained on a fixed synthetic data set, so
every run produces the same predictions; v1 is a logistic regression, later versions
random forests.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

N_FEATURES = 8


@dataclass(frozen=True)
class TrainedArtifact:
    """The bytes of one joblib artifact and where it goes."""

    version: str
    data: bytes
    sha256: str
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def churn_data(n: int = 2000, seed: int = 7) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """A fixed synthetic churn data set: 8 numeric features, a binary label."""
    x, y = make_classification(
        n_samples=n, n_features=N_FEATURES, n_informative=5, n_redundant=1, random_state=seed
    )
    return x.astype(np.float64), y


def train_churn(
    version: str, bucket: str = "models", name: str = "churn", namespace: str | None = None
) -> TrainedArtifact:
    """Train version ``version`` of the example model and serialise it with joblib.

    Its key is ``<namespace>/<name>/<version>/model.joblib`` with a ``namespace`` (the
    prefix a namespace's key may read, s3keys), else ``<name>/<version>/model.joblib``.
    """
    x, y = churn_data()
    if version == "1":
        model: Any = LogisticRegression(max_iter=1000).fit(x, y)
    else:
        seed = int(hashlib.sha256(version.encode()).hexdigest()[:8], 16)
        model = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=seed).fit(x, y)
    buf = io.BytesIO()
    joblib.dump(model, buf)
    data = buf.getvalue()
    return TrainedArtifact(
        version=version,
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        bucket=bucket,
        key=f"{namespace + '/' if namespace else ''}{name}/{version}/model.joblib",
    )


def upload(client: Any, artifact: TrainedArtifact) -> None:
    """Put the artifact into its bucket (made if missing) with a ``minio.Minio`` client."""
    if not client.bucket_exists(artifact.bucket):
        client.make_bucket(artifact.bucket)
    client.put_object(artifact.bucket, artifact.key, io.BytesIO(artifact.data), len(artifact.data))


# -- the mixed-type churn model: a DataFrame of numbers and strings ----------------------

#: Columns of :func:`churn_frame`: numbers (with some missing), then text.
CHURN_NUMERIC = ("tenure", "monthly_charges", "total_charges")
CHURN_TEXT = ("contract", "payment_method", "internet_service")


def churn_frame(n: int = 2000, seed: int = 11) -> tuple[Any, np.ndarray[Any, Any]]:
    """A fixed synthetic churn table, the way such data usually arrives (a DataFrame).

    Numeric and text columns, about 3% of values missing in ``total_charges`` and
    ``payment_method`` (NaN, as ``pandas.read_csv`` gives them), and string labels
    ``"churn"`` / ``"stay"``. Returns ``(frame, labels)``.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n).astype(np.float64)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], n, p=[0.55, 0.25, 0.2])
    payment = rng.choice(["card", "bank-transfer", "electronic-check", "mailed-check"], n)
    internet = rng.choice(["fiber", "dsl", "none"], n, p=[0.45, 0.35, 0.2])
    monthly = np.round(rng.normal(65, 25, n).clip(18, 120), 2)
    total = np.round(monthly * tenure + rng.normal(0, 30, n), 2)
    score = (
        -0.05 * tenure
        + 0.02 * monthly
        + np.where(contract == "month-to-month", 1.5, -0.8)
        + np.where(payment == "electronic-check", 0.7, 0.0)
        + np.where(internet == "fiber", 0.5, 0.0)
        + rng.normal(0, 0.8, n)
    )
    labels = np.where(score > 0.3, "churn", "stay")
    frame = pd.DataFrame(
        {
            "tenure": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "contract": contract.astype(object),
            "payment_method": payment.astype(object),
            "internet_service": internet.astype(object),
        }
    )
    frame.loc[rng.random(n) < 0.03, "total_charges"] = np.nan
    frame.loc[rng.random(n) < 0.03, "payment_method"] = np.nan
    return frame, labels


def churn_pipeline(kind: str = "onehot") -> Any:
    """An unfitted churn Pipeline of the usual shape, over :func:`churn_frame`'s columns.

    ``onehot``: impute, scale the numbers, one-hot the text, LogisticRegression.
    ``ordinal``: impute, ordinal-encode the text, RandomForest.
    ``hgb``: HistGradientBoosting with the text columns as categorical features
    (fit it on the frame with those columns as ``category`` dtype: :func:`as_categories`).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    numeric = list(CHURN_NUMERIC)
    text = list(CHURN_TEXT)
    if kind == "hgb":
        return HistGradientBoostingClassifier(max_iter=60, random_state=0)
    if kind == "onehot":
        encode: Any = OneHotEncoder(handle_unknown="ignore")
        final: Any = LogisticRegression(max_iter=1000)
        scale: Any = StandardScaler()
    elif kind == "ordinal":
        encode = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
        final = RandomForestClassifier(n_estimators=40, max_depth=8, random_state=0)
        scale = "passthrough"
    else:
        raise ValueError(f"unknown churn pipeline kind {kind!r}: onehot, ordinal or hgb")
    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), scale), numeric),
            ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), encode), text),
        ]
    )
    return Pipeline([("pre", pre), ("model", final)])


def as_categories(frame: Any) -> Any:
    """``frame`` with the text columns as pandas ``category`` dtype (for HistGradientBoosting)."""
    out = frame.copy()
    for column in CHURN_TEXT:
        out[column] = out[column].astype("category")
    return out


def fit_churn_pipeline(kind: str = "onehot") -> Any:
    """:func:`churn_pipeline` fitted on :func:`churn_frame`."""
    frame, labels = churn_frame()
    model = churn_pipeline(kind)
    return model.fit(as_categories(frame) if kind == "hgb" else frame, labels)
