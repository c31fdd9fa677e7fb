"""A fleet at rest costs nothing (issue 17): once every model serves, the operator's timer
reconciles read their Deployments, Services and monitoring objects from its watches, and
the artifacts it verified are not fetched again, so neither the apiserver nor the object
store hears from it; and bytes changed under the same key are still refused before the
version's Pods change.

Counted by the servers themselves: the kube-apiserver's ``apiserver_request_total`` (every
client; nothing else touches these resources while the models rest) and MinIO's own S3
request counter. The operator runs on a control plane and a MinIO of its own, so no other
test's models are counted.
"""

from __future__ import annotations

import io
import ssl
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from mlm_helpers import Artifact, Models, models_namespace

from mlmodel_operator.example_models import train_churn
from mlmodel_operator.localcluster import (
    REPO_ROOT,
    LocalCluster,
    MinioServer,
    OperatorRunner,
    prometheus_operator_crds,
    wait_until,
)
from mlmodel_operator.realstack import wait_established

pytestmark = pytest.mark.integration

INTERVAL = 2.0  # the operator's timer, seconds
MODELS = 6
# What the operator reads or writes; WATCH is left out (a watch is one request for as
# long as it lasts, whatever the number of models).
RESOURCES = (
    "mlmodels",
    "deployments",
    "services",
    "secrets",
    "events",
    "servicemonitors",
    "prometheusrules",
)


@pytest.fixture(scope="module")
def rest_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster.up(tmp_path_factory.mktemp("rest-cluster")) as c:
        c.kubectl(
            "apply",
            "--server-side",
            "-f",
            str(REPO_ROOT / "crds" / "mlmodels.ml.lifecycle.io.yaml"),
        )
        for path in prometheus_operator_crds():  # the monitoring objects are watched too
            c.kubectl("apply", "--server-side", "-f", str(path))
        for name in (
            "mlmodels.ml.lifecycle.io",
            "servicemonitors.monitoring.coreos.com",
            "prometheusrules.monitoring.coreos.com",
        ):
            wait_established(c, name)
        yield c


@pytest.fixture(scope="module")
def rest_minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    server = MinioServer(tmp_path_factory.mktemp("rest-minio"), metrics_public=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rest_operator(
    rest_cluster: LocalCluster, rest_minio: MinioServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorRunner]:
    op = OperatorRunner(
        rest_cluster,
        rest_minio,
        tmp_path_factory.mktemp("rest-operator"),
        env={
            "MLMODEL_RECONCILE_INTERVAL": str(INTERVAL),
            "MLMODEL_SERVING_IMAGE": "registry.local/mlmodel-serving:test",
        },
        args=["--log-format=json"],
    )
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture()
def rest_models(
    rest_cluster: LocalCluster, rest_minio: MinioServer, rest_operator: OperatorRunner
) -> Iterator[Models]:
    with models_namespace(rest_cluster.kubeconfig, rest_minio, "rest") as mlm:
        yield mlm


def upload(minio: MinioServer, version: str, key: str | None = None) -> Artifact:
    """Train ``version`` and put it under its own key, or under ``key``."""
    trained = train_churn(version)
    key = key or trained.key
    mc = minio.client()
    if not mc.bucket_exists(trained.bucket):
        mc.make_bucket(trained.bucket)
    mc.put_object(trained.bucket, key, io.BytesIO(trained.data), len(trained.data))
    return Artifact(f"s3://{trained.bucket}/{key}", trained.sha256, len(trained.data))


def apiserver_requests(cluster: LocalCluster) -> dict[tuple[str, str], float]:
    """(verb, resource) -> requests the apiserver has answered, for RESOURCES, not WATCH."""
    assert cluster.pki is not None
    ctx = ssl.create_default_context(cafile=str(cluster.pki.ca_cert))
    ctx.load_cert_chain(str(cluster.pki.admin_cert), str(cluster.pki.admin_key))
    with urllib.request.urlopen(f"{cluster.server}/metrics", timeout=10, context=ctx) as resp:
        text = resp.read().decode()
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.rpartition(" ")
        labels = dict(
            part.split("=", 1)
            for part in labels_text[len("apiserver_request_total{") : -1].split(",")
        )
        verb = labels.get("verb", "").strip('"')
        resource = labels.get("resource", "").strip('"')
        sub = labels.get("subresource", "").strip('"')
        if resource in RESOURCES and verb != "WATCH":
            key = (verb, f"{resource}/{sub}" if sub else resource)
            counts[key] = counts.get(key, 0.0) + float(value)
    return counts


def reconciles(op: OperatorRunner) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("mlmodel_operator_reconciles_total{")
    )


def diff(
    after: dict[tuple[str, str], float], before: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def test_a_fleet_at_rest_costs_the_apiserver_and_the_object_store_nothing(
    rest_cluster: LocalCluster,
    rest_minio: MinioServer,
    rest_operator: OperatorRunner,
    rest_models: Models,
) -> None:
    art = upload(rest_minio, "1")
    names = [f"m{i}" for i in range(MODELS)]
    for name in names:
        spec: dict[str, Any] = {}
        if name == "m0":  # a model that rolls out by shadow, at rest between rollouts
            spec["rollout"] = {"strategy": "shadow", "steps": [{"weight": 100, "pauseSeconds": 1}]}
        rest_models.create(rest_models.body(name, "1", art, **spec))
    for name in names:
        rest_models.wait_phase(name, "Serving", timeout=120)
    # the last Events and status writes of the rollouts settle
    wait_until(
        "no request for two timer intervals",
        lambda: quiet_for(rest_cluster, 2 * INTERVAL),
        timeout=60,
        interval=0.1,
    )
    requests_before = apiserver_requests(rest_cluster)
    s3_before = rest_minio.s3_requests()
    reconciles_before = reconciles(rest_operator)
    time.sleep(3 * INTERVAL)  # a window to count in, not a wait for a condition
    requests = diff(apiserver_requests(rest_cluster), requests_before)
    s3 = {k: v - s3_before.get(k, 0.0) for k, v in rest_minio.s3_requests().items()}
    ran = reconciles(rest_operator) - reconciles_before
    assert ran >= 2 * MODELS, f"the timer reconciled {ran} times in {3 * INTERVAL}s"
    assert requests == {}, f"{ran:.0f} reconciles at rest made apiserver requests: {requests}"
    assert sum(s3.values()) == 0, f"{ran:.0f} reconciles at rest asked MinIO: {s3}"
    for name in names:
        assert rest_models.status(name)["phase"] == "Serving"


def quiet_for(cluster: LocalCluster, seconds: float) -> bool:
    before = apiserver_requests(cluster)
    time.sleep(seconds)
    return not diff(apiserver_requests(cluster), before)


def test_bytes_changed_under_the_same_key_are_refused_before_the_pods_change(
    rest_cluster: LocalCluster,
    rest_minio: MinioServer,
    rest_models: Models,
) -> None:
    key = "churn/swapped/model.joblib"
    art = upload(rest_minio, "1", key=key)
    rest_models.create(rest_models.body("swap", "1", art))
    rest_models.wait_phase("swap", "Serving", timeout=120)
    upload(rest_minio, "2", key=key)  # other bytes, same key: the digest no longer matches
    # a change that rolls the version's Pods: the artifact is checked again first
    rest_models.patch_spec("swap", {"serving": {"replicas": 2}})

    def refused() -> bool:
        cond = rest_models.condition("swap", "ArtifactVerified")
        return cond.get("status") == "False" and cond.get("reason") == "DigestMismatch"

    wait_until("the changed bytes refused", refused, timeout=60, interval=0.25)
    deps = rest_models.deployments("swap")
    assert set(deps) == {"swap-v1"}
    assert deps["swap-v1"].spec.replicas == 1, "the Deployment changed for unverified bytes"
    assert rest_models.service_version("swap") == "1"  # still serving what it verified
