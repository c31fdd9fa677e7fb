"""Train the example churn models and put them into MinIO/S3, for manifests/examples.

    python -m mlmodel_operator.example_upload --version 1 --version 2

Runs on a laptop against a port-forwarded MinIO, or in the cluster as the Job of
manifests/examples/upload (the operator image holds this module and scikit-learn). It
makes the ``models`` and ``model-archive`` buckets, uploads each version's artifact and
its drift baseline, and prints one machine-readable line per version on stdout:

    digest churn 1 <sha256> s3://models/default/churn/1/model.joblib

so a script can write the real digest into the MLModel (hack/kind-up.sh does). The
artifacts go under the prefix of the namespace the example is served in (``--namespace``,
default ``default`` as in manifests/examples): that namespace's key may read only
``s3://models/<namespace>/*`` (mlmodel_operator.s3keys).
Credentials come from ``MLMODEL_S3_ACCESS_KEY`` / ``MLMODEL_S3_SECRET_KEY``, as for
the operator; nothing is printed of them.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from mlmodel_operator.example_models import churn_data, train_churn, upload
from mlmodel_operator.s3keys import validate_namespace

MODELS_BUCKET = "models"
ARCHIVE_BUCKET = "model-archive"
EXAMPLE_NAMESPACE = "default"  # manifests/examples/churn-v*.yaml


def make_client(endpoint: str, secure: bool, env: dict[str, str]) -> Any:
    """A ``minio.Minio`` client from the MLMODEL_S3_* credentials in ``env``."""
    from minio import Minio

    access, secret = env.get("MLMODEL_S3_ACCESS_KEY"), env.get("MLMODEL_S3_SECRET_KEY")
    if not access or not secret:
        raise SystemExit(
            "example_upload: set MLMODEL_S3_ACCESS_KEY and MLMODEL_S3_SECRET_KEY "
            "(the MinIO credentials; manifests/minio generates them)"
        )
    return Minio(endpoint, access_key=access, secret_key=secret, secure=secure)


def wait_for_store(client: Any, timeout: float) -> None:
    """Wait (at most ``timeout`` seconds) until the object store answers a request."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_buckets()
            return
        except Exception as exc:  # connection refused while MinIO starts, or auth errors
            if time.monotonic() >= deadline:
                raise SystemExit(
                    f"example_upload: object store not reachable after {timeout:.0f}s: {exc}"
                ) from None
            time.sleep(2)


def ensure_buckets(client: Any, buckets: Sequence[str]) -> None:
    for bucket in buckets:
        if client.bucket_exists(bucket):
            print(f"bucket {bucket}: exists", file=sys.stderr)
        else:
            client.make_bucket(bucket)
            print(f"bucket {bucket}: created", file=sys.stderr)


def upload_version(
    client: Any, version: str, bucket: str = MODELS_BUCKET, namespace: str = EXAMPLE_NAMESPACE
) -> tuple[str, str]:
    """Train and upload one version with its drift baseline to
    ``s3://<bucket>/<namespace>/churn/<version>/``; returns (sha256, uri).

    The baseline is what ``mlmodel baseline --model`` makes: the features' bins and the
    proportions of the classes the model predicts on its training data, so the server
    exports ``mlmodel_prediction_psi`` (and the MLModelPredictionDrift alert has data).
    """
    import joblib

    from mlmodel_operator.baseline_cli import make_baseline

    trained = train_churn(version, bucket=bucket, namespace=namespace)
    upload(client, trained)
    x, _ = churn_data()
    # The model just trained here, from the bytes it was dumped to a moment ago.
    model = joblib.load(io.BytesIO(trained.data))
    baseline = make_baseline(x, None, bins=10, model=model)
    key = trained.key.rsplit("/", 1)[0] + "/baseline.json"
    client.put_object(bucket, key, io.BytesIO(baseline), len(baseline))
    return trained.sha256, trained.uri


def main(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> int:
    """Entry point; ``env`` defaults to the process environment."""
    environ = dict(os.environ if env is None else env)
    parser = argparse.ArgumentParser(
        prog="python -m mlmodel_operator.example_upload",
        description="Train the example churn model versions and upload them to MinIO/S3.",
    )
    parser.add_argument(
        "--endpoint",
        default=environ.get("MLMODEL_S3_ENDPOINT", "127.0.0.1:9000"),
        help="host:port of the S3 API [MLMODEL_S3_ENDPOINT, else %(default)s]",
    )
    parser.add_argument("--secure", action="store_true", help="use TLS")
    parser.add_argument(
        "--version",
        action="append",
        default=[],
        help="a version to train and upload (repeatable); none: only make the buckets",
    )
    parser.add_argument(
        "--namespace",
        default=EXAMPLE_NAMESPACE,
        help="the namespace the example is served in: its artifacts go under "
        "s3://models/<namespace>/ (%(default)s)",
    )
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for the store (%(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        validate_namespace(args.namespace, "--namespace")
    except ValueError as exc:
        parser.error(str(exc))

    client = make_client(args.endpoint, args.secure, environ)
    wait_for_store(client, args.wait)
    ensure_buckets(client, (MODELS_BUCKET, ARCHIVE_BUCKET))
    for version in args.version:
        sha256, uri = upload_version(client, version, namespace=args.namespace)
        print(f"digest churn {version} {sha256} {uri}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
