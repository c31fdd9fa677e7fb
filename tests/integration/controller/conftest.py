"""Fixtures for the operator against the real local control plane and a real MinIO."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client
from mlm_helpers import SECRET_NAME, Artifact, Models

from mlmodel_operator import example_models
from mlmodel_operator.example_models import train_churn
from mlmodel_operator.localcluster import (
    REPO_ROOT,
    LocalCluster,
    MinioServer,
    OperatorRunner,
)
from mlmodel_operator.realstack import wait_established


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster) -> None:
    """The MLModel CRD from crds/, installed and Established."""
    cluster.kubectl(
        "apply", "--server-side", "-f", str(REPO_ROOT / "crds" / "mlmodels.ml.lifecycle.io.yaml")
    )
    wait_established(cluster, "mlmodels.ml.lifecycle.io")  # kubectl wait fails on no status


@pytest.fixture(scope="session")
def models(minio: MinioServer) -> Callable[[str], Artifact]:
    """Train a real scikit-learn model per version and upload it to MinIO (once each)."""
    mc = minio.client()
    made: dict[str, Artifact] = {}

    def upload(version: str) -> Artifact:
        if version not in made:
            trained = train_churn(version)
            example_models.upload(mc, trained)
            made[version] = Artifact(trained.uri, trained.sha256, len(trained.data))
        return made[version]

    return upload


@pytest.fixture(scope="session")
def operator(
    cluster: LocalCluster, minio: MinioServer, crd: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorRunner]:
    op = OperatorRunner(
        cluster,
        minio,
        tmp_path_factory.mktemp("operator"),
        env={
            "MLMODEL_RECONCILE_INTERVAL": "5",
            "MLMODEL_SERVING_IMAGE": "registry.local/mlmodel-serving:test",
        },
        args=["--log-format=json"],
    )
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
def mlm(api: client.ApiClient, namespace: str, operator: OperatorRunner) -> Models:
    return Models(api, namespace)
