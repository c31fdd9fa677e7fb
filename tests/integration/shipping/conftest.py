"""Fixtures for the shipping checks: the CRDs and the operator's identity on a real apiserver."""

from __future__ import annotations

import pytest
from ship_helpers import install_crds, install_identity

from mlmodel_operator.localcluster import LocalCluster


@pytest.fixture(scope="session")
def shipping_cluster(cluster: LocalCluster) -> LocalCluster:
    """The session's control plane with the CRDs and the operator's identity installed."""
    install_crds(cluster)
    install_identity(cluster)
    return cluster
