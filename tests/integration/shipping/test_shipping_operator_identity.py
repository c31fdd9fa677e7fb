"""The operator, holding nothing but a token of its ServiceAccount (manifests/operator RBAC),
runs the core lifecycle: v1 Serving, v2 takes over and v1 is retired, delete collects all.

It runs on a control plane of its own: the session's cluster already has an operator
(tests/integration/controller) watching every namespace with admin rights, which would
handle these MLModels too and hide a missing permission.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from ship_helpers import install_crds, install_identity, token_kubeconfig

from mlmodel_operator import example_models
from mlmodel_operator.example_models import train_churn
from mlmodel_operator.localcluster import LocalCluster, MinioServer, OperatorRunner, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "controller"))
from mlm_helpers import SECRET_NAME, Artifact, Models

pytestmark = pytest.mark.integration

PEERING_ARGS = ["--log-format=json", "--peering=mlmodel-operator", "--priority=oldest"]


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster.up(tmp_path_factory.mktemp("sa-cluster")) as c:
        install_crds(c)
        install_identity(c)
        yield c


@pytest.fixture(scope="module")
def sa_operator(
    own_cluster: LocalCluster, minio: MinioServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorRunner]:
    workdir = tmp_path_factory.mktemp("sa-operator")
    op = OperatorRunner(
        own_cluster,
        minio,
        workdir,
        env={
            "MLMODEL_RECONCILE_INTERVAL": "5",
            "MLMODEL_SERVING_IMAGE": "registry.local/mlmodel-serving:test",
        },
        # as in manifests/operator/deployment.yaml: peering on, JSON logs
        args=PEERING_ARGS,
        kubeconfig=token_kubeconfig(own_cluster, workdir / "sa.kubeconfig"),
    )
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="module")
def models(minio: MinioServer) -> Callable[[str], Artifact]:
    """Train a real scikit-learn model per version and upload it to MinIO (once each)."""
    made: dict[str, Artifact] = {}

    def upload(version: str) -> Artifact:
        if version not in made:
            trained = train_churn(version)
            example_models.upload(minio.client(), trained)
            made[version] = Artifact(trained.uri, trained.sha256, len(trained.data))
        return made[version]

    return upload


@pytest.fixture()
def mlm(
    own_cluster: LocalCluster, minio: MinioServer, sa_operator: OperatorRunner
) -> Iterator[Models]:
    """Admin-side helpers in a fresh namespace with the serving pods' credentials Secret."""
    api = config.new_client_from_config(config_file=str(own_cluster.kubeconfig))
    ns = f"sa-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": SECRET_NAME},
            "stringData": {"accessKey": minio.access_key, "secretKey": minio.secret_key},
        },
    )
    try:
        yield Models(api, ns)
    finally:
        core.delete_namespace(ns)
        api.close()


def test_the_token_is_the_service_account_and_not_admin(
    own_cluster: LocalCluster, sa_operator: OperatorRunner
) -> None:
    assert sa_operator.kubeconfig is not None
    kubectl = ["--kubeconfig", str(sa_operator.kubeconfig)]
    who = own_cluster.kubectl(
        *kubectl, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"
    )
    assert who == "system:serviceaccount:mlmodel-system:mlmodel-operator"
    assert (
        own_cluster.kubectl(*kubectl, "auth", "can-i", "list", "secrets", "-A", check=False).strip()
        == "no"
    )


def test_core_lifecycle_with_the_service_account_only(
    mlm: Models, models: Callable[[str], Artifact], sa_operator: OperatorRunner
) -> None:
    v1, v2 = models("1"), models("2")
    mlm.create(mlm.body("churn", "1", v1, serving={"replicas": 2}))
    st = mlm.wait_phase("churn", "Serving", version="1", timeout=90)
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds["Ready"] == "True" and conds["SpecValid"] == "True"  # the Secret was seen
    assert conds["ArtifactVerified"] == "True"
    assert set(mlm.deployments("churn")) == {"churn-v1"}

    mlm.patch_spec("churn", {"version": "2", "artifact": {"uri": v2.uri, "sha256": v2.sha256}})
    st = mlm.wait_phase("churn", "Serving", version="2", timeout=90)
    wait_until("churn-v1 retired", lambda: set(mlm.deployments("churn")) == {"churn-v2"}, 60)
    assert mlm.service_version("churn") == "2"
    history = mlm.status("churn")["history"]
    assert [(h["version"], h.get("reason")) for h in history] == [("1", "SpecChanged"), ("2", None)]
    assert history[0]["archive"]  # archived before it was deleted
    mlm.wait_events("churn", "TrafficSwitched", "Retired")  # posted with the SA's rights

    mlm.delete("churn")

    mlm.wait_gone("churn", 60)
    wait_until(
        "owned objects collected",
        lambda: not mlm.deployments("churn") and mlm.service_version("churn") is None,
        60,
        interval=0.25,
    )


def test_a_second_replica_waits_then_takes_over(
    own_cluster: LocalCluster,
    minio: MinioServer,
    mlm: Models,
    models: Callable[[str], Artifact],
    sa_operator: OperatorRunner,
    tmp_path: Path,
) -> None:
    # the Deployment's two replicas: same identity, same peering, --priority=oldest
    assert sa_operator.kubeconfig is not None
    standby = OperatorRunner(
        own_cluster,
        minio,
        tmp_path,
        env=dict(sa_operator.env),
        args=PEERING_ARGS,
        kubeconfig=sa_operator.kubeconfig,
    ).start()
    try:

        def standby_said(text: str) -> bool:
            return text in standby.log()

        def peers() -> int:
            path = "/apis/kopf.dev/v1/clusterkopfpeerings/mlmodel-operator"
            return len(own_cluster.api("GET", path).get("status") or {})

        # kopf starts the standby paused and says nothing until it may resume
        wait_until("both replicas in the peering", lambda: peers() == 2, 30)
        v1, v2 = models("1"), models("2")
        mlm.create(mlm.body("churn", "1", v1))
        mlm.wait_phase("churn", "Serving", version="1", timeout=90)
        assert f'"namespace": "{mlm.ns}"' not in standby.log()  # the standby did nothing

        sa_operator.stop()  # a graceful stop (rollout, drain): it leaves the peering at once
        try:
            wait_until("the standby resumes", lambda: standby_said("Resuming operations"), 30)
            mlm.patch_spec(
                "churn", {"version": "2", "artifact": {"uri": v2.uri, "sha256": v2.sha256}}
            )
            mlm.wait_phase("churn", "Serving", version="2", timeout=90)
            wait_until(
                "churn-v1 retired", lambda: set(mlm.deployments("churn")) == {"churn-v2"}, 60
            )
        finally:
            sa_operator.start()  # back, now the younger one
        messages = [json.loads(line)["message"] for line in standby.log().splitlines() if line]
        assert not [m for m in messages if "HTTP 403" in m or "Forbidden" in m]
    finally:
        standby.stop()


def test_no_request_of_the_operator_was_forbidden(
    own_cluster: LocalCluster, sa_operator: OperatorRunner
) -> None:
    # runs after the lifecycle: every API call kopf and the reconciler made was allowed
    messages = [json.loads(line)["message"] for line in sa_operator.log().splitlines() if line]
    assert messages
    for needle in ("HTTP 403", "Forbidden", "forbidden", "Not enough permissions"):
        assert not [m for m in messages if needle in m], needle
    # and the replica took part in the peering (keep-alive in the object's status)
    peering = own_cluster.api("GET", "/apis/kopf.dev/v1/clusterkopfpeerings/mlmodel-operator")
    assert peering.get("status"), peering
