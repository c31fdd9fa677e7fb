"""The operator's core lifecycle on the real control plane: deploy, switch, retire, delete."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

import pytest
from kubernetes import client
from mlm_helpers import Artifact, Models

from mlmodel_operator.kube import Kube
from mlmodel_operator.localcluster import LocalCluster, OperatorRunner, wait_until

pytestmark = pytest.mark.integration


def test_v1_is_deployed_and_served(
    mlm: Models, models: Callable[[str], Artifact], cluster: LocalCluster
) -> None:
    art = models("1")
    mlm.create(mlm.body("churn", "1", art, serving={"replicas": 2}))
    st = mlm.wait_phase("churn", "Serving", version="1")

    assert st["endpoint"] == f"http://churn.{mlm.ns}.svc:8080/v2/models/churn"
    assert st["ready"] == "2/2" and st["observedGeneration"] == 1
    assert st["digestPrefix"] == art.sha256[:12]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert conds["ArtifactVerified"]["status"] == "True"  # the operator hashed the real object
    assert conds["SpecValid"]["status"] == "True"
    assert all(c["observedGeneration"] == 1 for c in conds.values())
    assert [h["version"] for h in st["history"]] == ["1"]

    (dep,) = mlm.deployments("churn").values()
    assert dep.metadata.name == "churn-v1"
    assert dep.metadata.owner_references[0].kind == "MLModel"
    assert dep.metadata.labels["app.kubernetes.io/instance"] == "churn"
    pods = mlm.core.list_namespaced_pod(mlm.ns, label_selector="ml.lifecycle.io/version=1").items
    assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
    assert mlm.service_version("churn") == "1"

    table = cluster.kubectl("get", "mlm", "-n", mlm.ns, "-o", "wide")
    header, row = table.splitlines()[:2]
    for column in ("VERSION", "PHASE", "READY", "ENDPOINT", "AGE", "DIGEST"):
        assert column in header
    assert "Serving" in row and "2/2" in row and art.sha256[:12] in row


def test_new_version_switches_then_retires_the_old(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    v1, v2 = models("1"), models("2")
    # a drain long enough for a loaded machine's polling to see v1 still there
    mlm.create(mlm.body("churn", "1", v1, retirement={"drainSeconds": 10}))
    mlm.wait_phase("churn", "Serving", version="1")

    mlm.patch_spec("churn", {"version": "2", "artifact": {"uri": v2.uri, "sha256": v2.sha256}})
    # traffic moves only once v2 is available; v1 is still there while it drains
    st = mlm.wait_phase("churn", "Retiring", version="2", timeout=60)
    assert mlm.service_version("churn") == "2"
    deps = mlm.deployments("churn")
    assert set(deps) == {"churn-v1", "churn-v2"}
    assert deps["churn-v2"].status.available_replicas == 1

    st = mlm.wait_phase("churn", "Serving", version="2", timeout=60)
    wait_until("churn-v1 deleted", lambda: set(mlm.deployments("churn")) == {"churn-v2"}, 30)
    history = st["history"]
    assert [h["version"] for h in history] == ["1", "2"]
    assert history[0]["reason"] == "SpecChanged" and history[0]["retiredAt"]
    assert history[0]["sha256"] == v1.sha256
    assert "retiredAt" not in history[1]

    reasons = [r for r, _ in mlm.wait_events("churn", "TrafficSwitched", "Retiring", "Retired")]
    assert reasons.index("TrafficSwitched") < reasons.index("Retiring") < reasons.index("Retired")


def test_replicas_only_change_updates_in_place(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    v1 = models("1")
    mlm.create(mlm.body("churn", "1", v1))
    mlm.wait_phase("churn", "Serving", version="1")
    uid = mlm.deployments("churn")["churn-v1"].metadata.uid

    mlm.patch_spec("churn", {"serving": {"replicas": 3}})
    wait_until(
        "3 replicas ready",
        lambda: (
            mlm.status("churn").get("ready") == "3/3"
            and mlm.status("churn").get("observedGeneration") == 2
        ),
        60,
        interval=0.25,
    )
    deps = mlm.deployments("churn")
    assert set(deps) == {"churn-v1"} and deps["churn-v1"].metadata.uid == uid
    assert deps["churn-v1"].spec.replicas == 3
    assert "Retiring" not in [r for r, _ in mlm.events("churn")]
    assert len(mlm.status("churn")["history"]) == 1


def test_a_version_that_never_becomes_ready_leaves_the_old_one_serving(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    v1, v2 = models("1"), models("2")
    mlm.create(mlm.body("churn", "1", v1, rollout={"readyTimeoutSeconds": 10}))
    mlm.wait_phase("churn", "Serving", version="1")
    # no node can fit this pod: it stays Pending, so v2 never becomes Available
    mlm.patch_spec(
        "churn",
        {
            "version": "2",
            "artifact": {"uri": v2.uri, "sha256": v2.sha256},
            "serving": {"resources": {"requests": {"cpu": "500", "memory": "1Gi"}}},
        },
    )
    st = mlm.wait_phase("churn", "Degraded", version="1", timeout=60)
    assert "version 2 is not available after 10s" in st["message"]
    assert "version 1 keeps serving" in st["message"]
    degraded = mlm.condition("churn", "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "RolloutTimedOut"
    assert mlm.condition("churn", "Ready")["status"] == "True"
    assert mlm.service_version("churn") == "1"
    assert set(mlm.deployments("churn")) == {"churn-v1", "churn-v2"}
    wait_until(
        "a RolloutTimedOut event",
        lambda: "RolloutTimedOut" in [r for r, _ in mlm.events("churn")],
        15,
        interval=0.25,
    )


def test_digest_mismatch_is_never_rolled_out(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    v1 = models("1")
    wrong = Artifact(v1.uri, "0" * 64, v1.size)
    mlm.create(mlm.body("churn", "1", wrong))
    st = mlm.wait_phase("churn", "Failed", timeout=30)
    verified = mlm.condition("churn", "ArtifactVerified")
    assert verified["status"] == "False" and verified["reason"] == "DigestMismatch"
    assert v1.sha256 in verified["message"] and "spec.artifact.sha256" in verified["message"]
    assert mlm.deployments("churn") == {}
    assert "activeVersion" not in st


def test_missing_secret_is_reported_and_nothing_deployed(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    mlm.core.delete_namespaced_secret("mlmodel-s3-credentials", mlm.ns)
    mlm.create(mlm.body("churn", "1", models("1")))
    mlm.wait_phase("churn", "Failed", timeout=30)
    cond = mlm.condition("churn", "SpecValid")
    assert cond["status"] == "False" and cond["reason"] == "MissingSecret"
    assert "kubectl create secret generic mlmodel-s3-credentials" in cond["message"]
    assert mlm.deployments("churn") == {}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"artifact": {"sha256": "XYZ"}}, "spec.artifact.sha256"),
        ({"artifact": {"uri": "http://example.invalid/model.joblib"}}, "spec.artifact.uri"),
        ({"serving": {"replicas": -1}}, "spec.serving.replicas"),
        ({"version": "Not A Version"}, "spec.version"),
        ({"version": "ledger"}, "'ledger' is reserved"),
        ({"serving": {"modelCacheSize": "lots"}}, "spec.serving.modelCacheSize"),
    ],
)
def test_invalid_specs_are_rejected_by_the_apiserver(
    mlm: Models, models: Callable[[str], Artifact], patch: dict[str, object], expected: str
) -> None:
    body = mlm.body("bad", "1", models("1"))
    for key, value in patch.items():
        if isinstance(value, dict):
            body["spec"][key] = {**body["spec"].get(key, {}), **value}
        else:
            body["spec"][key] = value
    with pytest.raises(client.ApiException) as rejected:
        mlm.create(body)
    assert rejected.value.status == 422
    assert expected in str(rejected.value.body)


def test_the_digest_of_a_version_can_never_change(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    v1 = models("1")
    mlm.create(mlm.body("churn", "1", v1))
    with pytest.raises(client.ApiException) as rejected:
        mlm.patch_spec("churn", {"artifact": {"sha256": "a" * 64}})
    assert rejected.value.status == 422
    assert "the digest of version 1 can never change" in str(rejected.value.body)


def test_operator_killed_mid_rollout_converges(
    mlm: Models, models: Callable[[str], Artifact], operator: OperatorRunner
) -> None:
    v1, v2 = models("1"), models("2")
    mlm.create(mlm.body("churn", "1", v1, retirement={"drainSeconds": 10}))
    mlm.wait_phase("churn", "Serving", version="1")
    mlm.patch_spec("churn", {"version": "2", "artifact": {"uri": v2.uri, "sha256": v2.sha256}})
    mlm.wait_phase("churn", "Retiring", version="2", timeout=60)
    operator.kill()  # in the middle of the drain: v1 is marked retiring, not yet archived
    try:
        assert set(mlm.deployments("churn")) == {"churn-v1", "churn-v2"}
    finally:
        operator.start()
    st = mlm.wait_phase("churn", "Serving", version="2", timeout=60)
    wait_until("churn-v1 deleted", lambda: set(mlm.deployments("churn")) == {"churn-v2"}, 30)
    assert [(h["version"], h.get("reason")) for h in st["history"]] == [
        ("1", "SpecChanged"),
        ("2", None),
    ]
    assert mlm.service_version("churn") == "2"


def test_delete_runs_the_finalizer_and_collects_everything(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    mlm.create(mlm.body("churn", "1", models("1")))
    mlm.wait_phase("churn", "Serving", version="1")
    assert mlm.get("churn")["metadata"]["finalizers"] == ["ml.lifecycle.io/archive"]
    mlm.delete("churn")

    mlm.wait_gone("churn", 60)
    wait_until(
        "owned objects collected",
        lambda: not mlm.deployments("churn") and mlm.service_version("churn") is None,
        60,
        interval=0.25,
    )


def test_operator_metrics_and_logs_without_secrets(
    mlm: Models, models: Callable[[str], Artifact], operator: OperatorRunner
) -> None:
    mlm.create(mlm.body("churn", "1", models("1")))
    mlm.wait_phase("churn", "Serving", version="1")
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['mlmodel_operator_reconciles_total{result="ok"}'] >= 1
    assert samples['mlmodel_operator_models{phase="Serving"}'] >= 1
    assert samples["mlmodel_operator_reconcile_duration_seconds_count"] >= 1
    log = operator.log()
    assert operator.minio.secret_key not in log
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines and all(json.loads(line)["message"] for line in lines)  # --log-format=json
    # the status and events never carry credentials either
    assert operator.minio.secret_key not in str(mlm.get("churn"))
    assert operator.minio.secret_key not in str(mlm.events("churn"))


def test_the_secret_check_never_receives_the_secret_data(
    mlm: Models, api: client.ApiClient
) -> None:
    kube = Kube(api)
    assert kube.secret_exists(mlm.ns, "mlmodel-s3-credentials")
    assert not kube.secret_exists(mlm.ns, "no-such-secret")
    raw = kube._call(
        "GET",
        f"/api/v1/namespaces/{mlm.ns}/secrets/mlmodel-s3-credentials",
        accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
    )
    assert raw["kind"] == "PartialObjectMetadata" and "data" not in raw


def test_a_serving_image_from_elsewhere_is_refused_and_what_serves_stays(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    """Whoever may create an MLModel must not pick the image that gets the namespace's
    object-store credentials: only the operator's allowed images run."""
    evil = "evil.example/steal-credentials:1"
    mlm.create(mlm.body("stranger", "1", models("1"), serving={"image": evil}))
    st = mlm.wait_phase("stranger", "Failed")
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["SpecValid"]["status"] == "False"
    assert conds["SpecValid"]["reason"] == "ImageNotAllowed"
    assert f"spec.serving.image {evil!r} is not allowed" in conds["SpecValid"]["message"]
    assert mlm.deployments("stranger") == {}

    v1, v2 = models("1"), models("2")
    mlm.create(mlm.body("churn", "1", v1))
    mlm.wait_phase("churn", "Serving", version="1")
    image = mlm.deployments("churn")["churn-v1"].spec.template.spec.containers[0].image
    mlm.patch_spec(
        "churn",
        {
            "version": "2",
            "artifact": {"uri": v2.uri, "sha256": v2.sha256},
            "serving": {"image": evil},
        },
    )
    st = mlm.wait_phase("churn", "Degraded", version="1")
    assert "ImageNotAllowed" in [c["reason"] for c in st["conditions"]]
    deps = mlm.deployments("churn")
    assert set(deps) == {"churn-v1"} and mlm.service_version("churn") == "1"
    assert deps["churn-v1"].spec.template.spec.containers[0].image == image
