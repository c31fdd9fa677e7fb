"""The documented install, applied for real: the controllers make the Pods, the namespace's
enforced Pod Security admits them, kwok schedules them and reports them Ready.

kwok runs no containers, so this shows the objects are created, admitted and scheduled as
they would be on a cluster; what runs inside them is tested as local processes.
"""

from __future__ import annotations

import json

import pytest
from ship_helpers import MANIFESTS, NAMESPACE

from mlmodel_operator.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.integration


def get(cluster: LocalCluster, *args: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(
        cluster.kubectl("get", "-n", NAMESPACE, *args, "-o", "json")
    )
    return result


def available(cluster: LocalCluster, deployment: str) -> int:
    status = get(cluster, "deployment", deployment).get("status") or {}
    assert isinstance(status, dict)
    return int(status.get("availableReplicas") or 0)


def test_manifests_minio_and_upload_job_install_and_their_pods_are_admitted(
    shipping_cluster: LocalCluster,
) -> None:
    # this control plane has no storage provisioner (kind has one): a volume for MinIO's
    # claim, of no class, as a claim without a class binds when there is no default class
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "shipping-minio-data"},
        "spec": {
            "capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "hostPath": {"path": "/nonexistent/kwok-runs-no-containers"},
        },
    }
    shipping_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(volume))
    for kustomization in ("", "minio", "examples/upload"):
        shipping_cluster.kubectl("apply", "--server-side", "-k", str(MANIFESTS / kustomization))

    wait_until(
        "operator 2/2 available", lambda: available(shipping_cluster, "mlmodel-operator") == 2, 60
    )
    wait_until("minio 1/1 available", lambda: available(shipping_cluster, "minio") == 1, 60)

    def job_pod_running(job: str) -> bool:
        pods = get(shipping_cluster, "pods", "-l", f"job-name={job}")["items"]
        assert isinstance(pods, list)
        # kwok reports a Job's Pod Running, then Succeeded
        return any(p["status"].get("phase") in ("Running", "Succeeded") for p in pods)

    for job in ("minio-buckets", "upload-example-models"):
        wait_until(f"a Pod of Job {job}", lambda j=job: job_pod_running(j), 60)

    # two operator replicas with a budget that allows one of them down at a time
    def disruptions_allowed() -> int:
        status = get(shipping_cluster, "pdb", "mlmodel-operator").get("status") or {}
        assert isinstance(status, dict)
        return int(status.get("disruptionsAllowed") or 0)

    wait_until("the budget allows one disruption", lambda: disruptions_allowed() == 1, 30)
    events = shipping_cluster.kubectl("get", "events", "-n", NAMESPACE)
    assert "violates PodSecurity" not in events and "FailedCreate" not in events
    # MinIO's root key, from kustomize's generator (the operator's own key is written by
    # the setup Job, which kwok does not run: tests/integration/shipping/test_s3keys.py)
    secret = get(shipping_cluster, "secret", "minio-root")
    data = secret["data"]
    assert isinstance(data, dict) and sorted(data) == ["accessKey", "secretKey"]
