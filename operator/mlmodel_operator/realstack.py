"""The project installed on a real node the way a user installs it on a laptop cluster.

``kubectl apply --server-side -k crds/`` and ``-k manifests/`` (the operator from its
image, its ServiceAccount, RBAC and two peering replicas), ``manifests/minio`` with the
MinIO image built here and a hostPath volume in place of a storage provisioner (its setup
Job makes the buckets and the operator's least-privilege key), and a serving namespace
that enforces Pod Security ``restricted`` with its own least-privilege key in its S3
Secret (`s3keys`). MinIO's root key stays with MinIO and these setup steps.
Also a V2 client through a Service and a bounded load client that records every request.
Used by the real-node e2e tier, its benchmark and ``make demo``.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlmodel_operator import s3keys
from mlmodel_operator.kube import load_api_client
from mlmodel_operator.localcluster import (
    REPO_ROOT,
    HarnessError,
    LocalCluster,
    prometheus_operator_crds,
    wait_until,
)

SYSTEM_NS = "mlmodel-system"
S3_SECRET = s3keys.NAMESPACE_SECRET
MINIO_USER = 10001  # the MinIO Pod's user (manifests/minio/deployment.yaml)


def laptop_credentials() -> dict[str, str]:
    """MinIO's root credentials of manifests/minio/credentials.env (laptop only): for the
    setup steps (keys, example uploads) and a test's own look at the store."""
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
    """CRDs (with the Prometheus operator's, so the operator writes ServiceMonitors), the
    admission policy that puts the archive finalizer on at creation, the operator, MinIO
    and its buckets; returns once all of them run."""
    cluster.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "crds"))
    wait_established(cluster, "mlmodels.ml.lifecycle.io", "clusterkopfpeerings.kopf.dev")
    # the archive finalizer at creation: the local apiserver serves MutatingAdmissionPolicy
    cluster.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "crds" / "admission"))
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


def secret_data(cluster: LocalCluster, namespace: str, name: str) -> dict[str, str]:
    """A Secret's decoded data."""
    data = get_json(cluster, "secret", name, "-n", namespace).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def operator_credentials(cluster: LocalCluster) -> dict[str, str]:
    """The operator's least-privilege key (Secret mlmodel-operator-s3, made by the setup
    Job of manifests/minio): reads the models, reads and writes the archive."""
    return secret_data(cluster, SYSTEM_NS, s3keys.OPERATOR_SECRET)


def apply_namespace_key(cluster: LocalCluster, namespace: str) -> None:
    """The namespace's own key (`s3keys`: read ``s3://models/<namespace>/*``, write
    ``s3://model-archive/decisions/<namespace>/*``) in its Secret mlmodel-s3-credentials,
    made with MinIO's root key from this machine, as the setup Job does for ``default``."""
    creds = laptop_credentials()
    root = s3keys.S3Key(creds["accessKey"], creds["secretKey"])
    admin = s3keys.make_admin(minio_endpoint(cluster), root)
    store = s3keys.KubeSecrets(load_api_client(str(cluster.kubeconfig)))
    target = s3keys.namespace_target(namespace, s3keys.Buckets())
    s3keys.apply_target(admin, store, target)


def create_serving_namespace(cluster: LocalCluster, namespace: str) -> None:
    """A namespace that enforces Pod Security ``restricted``, with the S3 Secret the
    serving Pods read: the namespace's own least-privilege key."""
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
    apply_namespace_key(cluster, namespace)


def service_ip(cluster: LocalCluster, namespace: str, name: str) -> str:
    """A Service's ClusterIP (the host reaches it through kube-proxy's rules)."""
    return str(get_json(cluster, "service", name, "-n", namespace)["spec"]["clusterIP"])


def minio_endpoint(cluster: LocalCluster) -> str:
    """``host:port`` of the in-cluster MinIO's Service, as this machine reaches it."""
    return f"{service_ip(cluster, SYSTEM_NS, 'minio')}:9000"


def minio_client(cluster: LocalCluster) -> Any:
    """A ``minio.Minio`` client on the in-cluster MinIO's ClusterIP, as its root user (the
    setup's uploads, and a test's own look at the store)."""
    from minio import Minio

    creds = laptop_credentials()
    return Minio(
        minio_endpoint(cluster),
        access_key=creds["accessKey"],
        secret_key=creds["secretKey"],
        secure=False,
    )


# --------------------------------------------------------------------------- traffic

ROWS = [
    [0.5, -1.2, 0.3, 1.1, -0.7, 0.2, 0.9, -0.4],
    [-1.5, 0.8, -0.2, 0.4, 1.3, -0.9, 0.1, 0.6],
]


def infer_body(rows: list[list[float]] = ROWS) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [len(rows), len(rows[0])],
                    "datatype": "FP64",
                    "data": [v for row in rows for v in row],
                }
            ]
        }
    ).encode()


def predict(url: str, timeout: float = 5.0, request_id: str | None = None) -> dict[str, Any]:
    """One V2 inference on a new connection; the decoded response. ``request_id``: sent
    as ``x-request-id``, the id its decision record is filed under."""
    headers = {"Content-Type": "application/json"}
    if request_id:
        headers["x-request-id"] = request_id
    req = urllib.request.Request(url, data=infer_body(), method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body: dict[str, Any] = json.load(resp)
        return body


def wait_answering(url: str, timeout: float = 30.0) -> dict[str, Any]:
    """The first answer of a new Service: kube-proxy programs its rules a moment after the
    Service and its endpoints exist (until then the ClusterIP refuses connections)."""
    answers: list[dict[str, Any]] = []

    def answered() -> bool:
        answers.append(predict(url))
        return True

    wait_until(f"an answer from {url}", answered, timeout, 0.2)
    return answers[-1]


@dataclass
class Outcome:
    """One request of the load client: its sequence number and what came back."""

    seq: int
    ok: bool
    version: str | None = None
    error: str | None = None
    request_id: str = ""


@dataclass
class LoadClient:
    """A bounded client: ``rate`` requests per second, each on a new connection, until
    stopped or ``max_seconds`` pass. Records every outcome, failures included."""

    url: str
    rate: float = 30.0
    max_seconds: float = 300.0
    timeout: float = 5.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LoadClient:
        self._thread = threading.Thread(target=self._run, name="load-client", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        interval = 1.0 / self.rate
        seq = 0
        run = secrets.token_hex(3)
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            rid = f"load-{run}-{seq}"
            try:
                body = predict(self.url, self.timeout, rid)
                version = str(body.get("model_version"))
                self.outcomes.append(Outcome(seq, True, version=version, request_id=rid))
            except (OSError, urllib.error.URLError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                self.outcomes.append(Outcome(seq, False, error=error, request_id=rid))
            seq += 1
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def versions(self) -> list[str | None]:
        return [o.version for o in self.outcomes if o.ok]

    def wait_for(self, count: int, timeout: float) -> None:
        """Until at least ``count`` more requests were answered."""
        target = len(self.outcomes) + count
        wait_until(f"{count} more requests", lambda: len(self.outcomes) >= target, timeout)
