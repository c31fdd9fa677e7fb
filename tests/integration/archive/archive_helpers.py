"""Helpers for the archive's integration tests: real models in a real MinIO, the CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlmodel_operator.localcluster import MinioServer
from mlmodel_operator.plan import HistoryEntry
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import ModelSpec, parse_model

SOURCE_BUCKET = "archive-src"
NOW = dt.datetime(2026, 3, 14, 12, 0, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Trained:
    version: str
    uri: str
    sha256: str
    size: int
    estimator: Any


def train_and_upload(minio: MinioServer, name: str, version: str) -> Trained:
    """A real LogisticRegression, different per version, uploaded as joblib."""
    mc = minio.client()
    if not mc.bucket_exists(SOURCE_BUCKET):
        mc.make_bucket(SOURCE_BUCKET)
    x, y = load_iris(return_X_y=True)
    c = 0.05 * (1 + int(hashlib.sha256(f"{name}/{version}".encode()).hexdigest(), 16) % 40)
    est = LogisticRegression(C=c, max_iter=1000).fit(x, y)
    buf = io.BytesIO()
    joblib.dump(est, buf)
    data = buf.getvalue()
    key = f"{name}/{version}/model.joblib"
    mc.put_object(SOURCE_BUCKET, key, io.BytesIO(data), len(data))
    return Trained(version, f"s3://{SOURCE_BUCKET}/{key}", hashlib.sha256(data).hexdigest(),
                   len(data), est)  # fmt: skip


def model_spec(name: str, ns: str, t: Trained, uid: str | None = None, **spec: Any) -> ModelSpec:
    """The MLModel ``name`` serving ``t`` (``uid``: another object of the same name, as
    after a delete and re-create)."""
    return parse_model(
        {
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": uid or f"uid-{name}",
                "generation": 2,
            },
            "spec": {"version": t.version, "artifact": {"uri": t.uri, "sha256": t.sha256}, **spec},
        }
    )


def entry(t: Trained) -> HistoryEntry:
    return HistoryEntry(t.version, t.sha256, t.uri, "2026-03-01T08:00:00Z")


def settings(bucket: str) -> Settings:
    return Settings(archive_bucket=bucket)


def iris_rows() -> np.ndarray[Any, Any]:
    x, _ = load_iris(return_X_y=True)
    return np.asarray(x[::7])


def run_cli(
    minio: MinioServer, bucket: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`mlmodel ARGS` as a real subprocess against this MinIO."""
    exe = Path(sys.executable).parent / "mlmodel"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")},
        "MLMODEL_S3_ENDPOINT": minio.endpoint,
        "MLMODEL_S3_ACCESS_KEY": minio.access_key,
        "MLMODEL_S3_SECRET_KEY": minio.secret_key,
        "MLMODEL_ARCHIVE_BUCKET": bucket,
    }
    return subprocess.run(
        [str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def stored_sha256(minio: MinioServer, bucket: str, key: str) -> str:
    """The sha256 of an object's bytes as stored."""
    resp = minio.client().get_object(bucket, key)
    try:
        return hashlib.sha256(resp.read()).hexdigest()
    finally:
        resp.close()
        resp.release_conn()


def keys(minio: MinioServer, bucket: str, prefix: str) -> list[str]:
    return sorted(
        o.object_name for o in minio.client().list_objects(bucket, prefix=prefix, recursive=True)
    )
