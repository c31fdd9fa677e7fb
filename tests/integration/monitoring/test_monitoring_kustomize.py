"""`kubectl kustomize manifests/monitoring` gives the dashboard ConfigMap of the builder."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from mlmodel_operator.localcluster import REPO_ROOT, binary
from mlmodel_operator.monitoring import build_dashboard_configmap

pytestmark = pytest.mark.integration


def test_kustomization_renders_the_dashboard_configmap() -> None:
    out = subprocess.run(
        [
            str(binary("kubernetes", "kubectl")),
            "kustomize",
            str(REPO_ROOT / "manifests/monitoring"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    (configmap,) = list(yaml.safe_load_all(out))
    assert configmap == build_dashboard_configmap("monitoring")
