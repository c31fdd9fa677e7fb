"""Fixtures for the operator against the real local control plane and a real MinIO."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Callable, Iterator

import joblib
import pytest
from kubernetes import client, config
from mlm_helpers import SECRET_NAME, Artifact, Models, OperatorProcess
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlmodel_operator.localcluster import (
    REPO_ROOT,
    LocalCluster,
    MinioServer,
)


@pytest.fixture(scope="session")
def api(cluster: LocalCluster) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster) -> None:
    """The MLModel CRD from crds/, installed and Established."""
    cluster.kubectl(
        "apply", "--server-side", "-f", str(REPO_ROOT / "crds" / "mlmodels.ml.lifecycle.io.yaml")
    )
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/mlmodels.ml.lifecycle.io"
    )


@pytest.fixture(scope="session")
def models(minio: MinioServer) -> Callable[[str], Artifact]:
    """Train a real scikit-learn model per version and upload it to MinIO (cached)."""
    mc = minio.client()
    if not mc.bucket_exists("models"):
        mc.make_bucket("models")
    made: dict[str, Artifact] = {}

    def upload(version: str) -> Artifact:
        if version not in made:
            x, y = load_iris(return_X_y=True)
            c = 0.1 * (1 + (int(hashlib.sha256(version.encode()).hexdigest(), 16) % 20))
            model = LogisticRegression(C=c, max_iter=500).fit(x, y)
            buf = io.BytesIO()
            joblib.dump(model, buf)
            data = buf.getvalue()
            key = f"churn/{version}/model.joblib"
            mc.put_object("models", key, io.BytesIO(data), len(data))
            made[version] = Artifact(
                f"s3://models/{key}", hashlib.sha256(data).hexdigest(), len(data)
            )
        return made[version]

    return upload


@pytest.fixture(scope="session")
def operator(
    cluster: LocalCluster, minio: MinioServer, crd: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster, minio, tmp_path_factory.mktemp("operator"))
    op.start()
    try:
        yield op
    finally:
        op.stop()
        if os.environ.get("MLMODEL_SHOW_OPERATOR_LOG"):
            print(op.log())


@pytest.fixture()
def namespace(api: client.ApiClient, minio: MinioServer) -> Iterator[str]:
    """A fresh namespace holding the S3 credentials Secret the serving pods use."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_secret(
        name,
        {
            "metadata": {"name": SECRET_NAME},
            "stringData": {"accessKey": minio.access_key, "secretKey": minio.secret_key},
        },
    )
    yield name
    core.delete_namespace(name)


@pytest.fixture()
def mlm(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Models:
    return Models(api, namespace)
