"""The project installed on a real node the way a user installs it on a laptop cluster.

``kubectl apply --server-side -k crds/`` and ``-k manifests/`` (the operator from its
image, its ServiceAccount, RBAC and two peering replicas), ``manifests/minio`` with the
MinIO image built here and a hostPath volume in place of a storage provisioner, and a
serving namespace that enforces Pod Security ``restricted`` with the S3 Secret in it.
Used by the real-node e2e tier and by ``make demo``.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import yaml

from mlmodel_operator.localcluster import (
    REPO_ROOT,
    HarnessError,
    LocalCluster,
    prometheus_operator_crds,
    wait_until,
)

SYSTEM_NS = "mlmodel-system"
S3_SECRET = "mlmodel-s3-credentials"
MINIO_USER = 10001  # the MinIO Pod's user (manifests/minio/deployment.yaml)


def laptop_credentials() -> dict[str, str]:
    """MinIO's root credentials of manifests/minio/credentials.env (laptop only)."""
    text = (REPO_ROOT / "manifests" / "minio" / "credentials.env").read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def get_json(cluster: LocalCluster, *args: str) -> Any:
    """``kubectl get ARGS -o json``, decoded."""
    return json.loads(cluster.kubectl("get", *args, "-o", "json"))


def wait_established(cluster: LocalCluster, *crds: str, timeout: float = 60.0) -> None:
    """Each CRD served (`kubectl wait` fails while a new CRD has no conditions yet)."""
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"

    def established(name: str) -> bool:
        conditions = cluster.api("GET", path + name).get("status", {}).get("conditions", [])
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    for name in crds:
        wait_until(f"CRD {name} Established", functools.partial(established, name), timeout)


def _explain(cluster: LocalCluster, namespace: str) -> str:
    pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--sort-by=.metadata.creationTimestamp", check=False
    )
    return f"{pods}\n{events[-4000:]}"


def wait_deployment_available(
    cluster: LocalCluster, namespace: str, name: str, replicas: int, timeout: float
) -> None:
    """Every replica of the Deployment updated and available, per its own status."""

    def available() -> bool:
        status = get_json(cluster, "deployment", name, "-n", namespace).get("status", {})
        return (
            int(status.get("availableReplicas") or 0) >= replicas
            and int(status.get("updatedReplicas") or 0) >= replicas
        )

    try:
        wait_until(f"deployment {namespace}/{name} available", available, timeout, 1.0)
    except TimeoutError as exc:
        raise HarnessError(f"{exc}\n{_explain(cluster, namespace)}") from None


def wait_job_complete(cluster: LocalCluster, namespace: str, name: str, timeout: float) -> None:
    """The Job's Complete condition, with its log on failure."""

    def complete() -> bool:
        status = get_json(cluster, "job", name, "-n", namespace).get("status", {})
        return any(
            c["type"] == "Complete" and c["status"] == "True" for c in status.get("conditions", [])
        )

    try:
        wait_until(f"job {namespace}/{name} complete", complete, timeout, 1.0)
    except TimeoutError as exc:
        logs = cluster.kubectl("logs", f"job/{name}", "-n", namespace, check=False)
        raise HarnessError(f"{exc}\n{logs[-3000:]}\n{_explain(cluster, namespace)}") from None


def write_minio_overlay(directory: Path, image: str, data_dir: Path) -> Path:
    """A kustomization of manifests/minio as shipped, with the MinIO image built here and a
    hostPath PersistentVolume for its claim (a kind cluster has a provisioner instead)."""
    directory.mkdir(parents=True, exist_ok=True)
    name, tag = image.rsplit(":", 1)
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "minio-data-local"},
        "spec": {
            "capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(data_dir), "type": "Directory"},
            "claimRef": {"namespace": SYSTEM_NS, "name": "minio-data"},
        },
    }
    (directory / "pv.yaml").write_text(yaml.safe_dump(pv))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO_ROOT / "manifests" / "minio", directory), "pv.yaml"],
        "images": [{"name": "quay.io/minio/minio", "newName": name, "newTag": tag}],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def install(cluster: LocalCluster, minio_image: str, workdir: Path, timeout: float = 240) -> None:
    """CRDs (with the Prometheus operator's, so the operator writes ServiceMonitors),
    the operator, MinIO and its buckets; returns once all of them run."""
    cluster.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "crds"))
    wait_established(cluster, "mlmodels.ml.lifecycle.io", "clusterkopfpeerings.kopf.dev")
    for crd in prometheus_operator_crds():
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
    wait_established(
        cluster, "servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"
    )
    cluster.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "manifests"))
    data = workdir / "minio-data"
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    os.chown(data, MINIO_USER, MINIO_USER)  # fsGroup does not reach a hostPath volume
    overlay = write_minio_overlay(workdir / "minio-overlay", minio_image, data)
    cluster.kubectl("apply", "--server-side", "-k", str(overlay))
    wait_deployment_available(cluster, SYSTEM_NS, "minio", 1, timeout)
    wait_job_complete(cluster, SYSTEM_NS, "minio-buckets", timeout)
    wait_deployment_available(cluster, SYSTEM_NS, "mlmodel-operator", 2, timeout)


def create_serving_namespace(cluster: LocalCluster, namespace: str) -> None:
    """A namespace that enforces Pod Security ``restricted``, with the S3 Secret the
    serving Pods read (MinIO's laptop credentials)."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(body))
    creds = laptop_credentials()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": S3_SECRET, "namespace": namespace},
        "stringData": {"accessKey": creds["accessKey"], "secretKey": creds["secretKey"]},
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(secret))


def service_ip(cluster: LocalCluster, namespace: str, name: str) -> str:
    """A Service's ClusterIP (the host reaches it through kube-proxy's rules)."""
    return str(get_json(cluster, "service", name, "-n", namespace)["spec"]["clusterIP"])


def minio_endpoint(cluster: LocalCluster) -> str:
    """``host:port`` of the in-cluster MinIO's Service, as this machine reaches it."""
    return f"{service_ip(cluster, SYSTEM_NS, 'minio')}:9000"


def minio_client(cluster: LocalCluster) -> Any:
    """A ``minio.Minio`` client on the in-cluster MinIO's ClusterIP, as its root user."""
    from minio import Minio

    creds = laptop_credentials()
    return Minio(
        minio_endpoint(cluster),
        access_key=creds["accessKey"],
        secret_key=creds["secretKey"],
        secure=False,
    )
