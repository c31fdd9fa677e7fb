"""The example upload (the Job of manifests/examples and manifests/minio) against real MinIO."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from mlmodel_operator.localcluster import MinioServer

pytestmark = pytest.mark.integration


def test_upload_prints_the_digest_of_what_it_stored(minio: MinioServer) -> None:
    env = {
        **os.environ,
        "MLMODEL_S3_ACCESS_KEY": minio.access_key,
        "MLMODEL_S3_SECRET_KEY": minio.secret_key,
    }
    # as the Job runs it: `python -m mlmodel_operator.example_upload --endpoint ... --version 1`
    argv = ["--endpoint", minio.endpoint, "--version", "1", "--wait", "10"]
    result = subprocess.run(
        [sys.executable, "-m", "mlmodel_operator.example_upload", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    (line,) = result.stdout.splitlines()
    word, name, version, sha256, uri = line.split()
    assert (word, name, version, uri) == (
        "digest",
        "churn",
        "1",
        "s3://models/default/churn/1/model.joblib",  # the example namespace's prefix
    )
    mc = minio.client()
    assert mc.bucket_exists("models") and mc.bucket_exists("model-archive")
    stored = mc.get_object("models", "default/churn/1/model.joblib").read()
    assert hashlib.sha256(stored).hexdigest() == sha256
    assert b'"features"' in mc.get_object("models", "default/churn/1/baseline.json").read()
    assert minio.secret_key not in result.stdout + result.stderr


def test_missing_credentials_say_which_variables(minio: MinioServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_S3_")}
    result = subprocess.run(
        [sys.executable, "-m", "mlmodel_operator.example_upload", "--endpoint", minio.endpoint],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "MLMODEL_S3_ACCESS_KEY and MLMODEL_S3_SECRET_KEY" in result.stderr
