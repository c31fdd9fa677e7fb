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


def train_churn(version: str, bucket: str = "models", name: str = "churn") -> TrainedArtifact:
    """Train version ``version`` of the example model and serialise it with joblib."""
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
        key=f"{name}/{version}/model.joblib",
    )


def upload(client: Any, artifact: TrainedArtifact) -> None:
    """Put the artifact into its bucket (made if missing) with a ``minio.Minio`` client."""
    if not client.bucket_exists(artifact.bucket):
        client.make_bucket(artifact.bucket)
    client.put_object(artifact.bucket, artifact.key, io.BytesIO(artifact.data), len(artifact.data))
