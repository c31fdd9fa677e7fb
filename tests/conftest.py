"""Session fixtures: the real local servers, started once and always stopped.

Unit tests (tests/unit) never touch these; integration and e2e tests ask for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from mlmodel_operator.localcluster import LocalCluster, MinioServer


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok with one Ready node."""
    with LocalCluster.up(tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    """A real MinIO server with generated credentials."""
    server = MinioServer(Path(tmp_path_factory.mktemp("minio"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def api(cluster: LocalCluster) -> Iterator[client.ApiClient]:
    """A Kubernetes API client for the session's cluster, as its admin user."""
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()
