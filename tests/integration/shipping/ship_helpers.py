"""Helpers for the shipping checks: install the CRDs and the operator's identity, make a
kubeconfig with the ServiceAccount's token,"""

from __future__ import annotations

from pathlib import Path

import yaml

from mlmodel_operator.localcluster import REPO_ROOT, LocalCluster
from mlmodel_operator.realstack import wait_established

MANIFESTS = REPO_ROOT / "manifests"
NAMESPACE = "mlmodel-system"
SERVICE_ACCOUNT = "mlmodel-operator"
SA_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
# The objects that make up the operator's identity and permissions (no Deployment: the
# tests run the operator as a local process with this identity's token instead).
IDENTITY_FILES = ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "peering.yaml")


def install_crds(cluster: LocalCluster) -> None:
    """The MLModel and kopf peering CRDs from crds/, applied and Established."""
    cluster.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "crds"))
    wait_established(
        cluster, "mlmodels.ml.lifecycle.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"
    )


def install_identity(cluster: LocalCluster) -> None:
    """Namespace, ServiceAccount, ClusterRole(Binding) and peering object, for real."""
    args = [a for f in IDENTITY_FILES for a in ("-f", str(MANIFESTS / "operator" / f))]
    cluster.kubectl("apply", "--server-side", *args)


def token_kubeconfig(cluster: LocalCluster, path: Path, duration: str = "2h") -> Path:
    """A kubeconfig holding a TokenRequest token of the operator's ServiceAccount only."""
    assert cluster.pki is not None
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, f"--duration={duration}"
    ).strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.pki.ca_cert),
                },
            }
        ],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": SERVICE_ACCOUNT}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
