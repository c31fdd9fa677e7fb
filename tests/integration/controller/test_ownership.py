"""Objects the operator does not control are never changed or deleted (issue 16, item 5).

Each test puts an object with a name (or a label) the operator would use into the
namespace before, or beside, an MLModel, written by someone else ("team-b", with no owner
or with another owner), and checks on the real apiserver that the operator leaves it as
it was, says so in a condition naming the object and who holds it, and that what already
serves keeps serving. The last one drives kube.apply itself with a read that comes a
moment too early: the object is taken between the operator's read and its write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mlm_helpers import Artifact, Models
from test_monitoring import crds_installed, get_monitoring, install_crds

from mlmodel_operator.desired import build_service
from mlmodel_operator.kube import Kube, NotControlled, load_api_client
from mlmodel_operator.localcluster import LocalCluster, wait_until
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import parse_model

pytestmark = pytest.mark.integration

OTHER = "team-b"  # the field manager of every object the tests make for "someone else"


def wait_reason(
    mlm: Models, name: str, type_: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    try:
        wait_until(
            f"{name}: {type_} reason {reason}",
            lambda: mlm.condition(name, type_).get("reason") == reason,
            timeout,
            interval=0.25,
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status is {mlm.status(name)}") from None
    return mlm.condition(name, type_)


def foreign_service(mlm: Models, name: str) -> dict[str, Any]:
    svc = mlm.core.create_namespaced_service(
        mlm.ns,
        {
            "metadata": {"name": name, "labels": {"team": OTHER}},
            "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        field_manager=OTHER,
    )
    return dict(mlm.core.api_client.sanitize_for_serialization(svc))


def read_service(mlm: Models, name: str) -> dict[str, Any]:
    return dict(
        mlm.core.api_client.sanitize_for_serialization(
            mlm.core.read_namespaced_service(name, mlm.ns)
        )
    )


def untouched(before: dict[str, Any], now: dict[str, Any]) -> None:
    """``now`` is ``before``: same object, same spec and labels, nothing added by the operator."""
    assert now["metadata"]["uid"] == before["metadata"]["uid"]
    assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert now["spec"] == before["spec"]
    assert now["metadata"].get("labels") == before["metadata"].get("labels")
    assert not now["metadata"].get("ownerReferences")  # nothing for the GC to collect it by
    managers = {m["manager"] for m in now["metadata"].get("managedFields") or []}
    assert "mlmodel-operator" not in managers


def event_types(mlm: Models, name: str) -> list[tuple[str, str]]:
    items = mlm.core.list_namespaced_event(
        mlm.ns, field_selector=f"involvedObject.name={name},involvedObject.kind=MLModel"
    ).items
    return [(e.type, e.reason) for e in items]


def foreign_deployment(mlm: Models, name: str, labels: dict[str, str]) -> Any:
    pod_labels = {"app": name}
    return mlm.apps.create_namespaced_deployment(
        mlm.ns,
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": pod_labels},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {"containers": [{"name": "c", "image": "registry.local/theirs:1"}]},
                },
            },
        },
        field_manager=OTHER,
    )


def test_a_service_with_the_models_name_is_neither_taken_over_nor_collected(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    before = foreign_service(mlm, "shared")
    mlm.create(mlm.body("shared", "1", models("1")))

    cond = wait_reason(mlm, "shared", "SpecValid", "ObjectConflict")
    assert cond["status"] == "False"
    assert f"Service {mlm.ns}/shared" in cond["message"]
    assert OTHER in cond["message"]  # who wrote it, since nothing controls it
    degraded = mlm.condition("shared", "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ObjectConflict")
    assert mlm.status("shared")["phase"] == "Failed"
    assert mlm.deployments("shared") == {}  # nothing rolled out behind a Service it cannot have
    untouched(before, read_service(mlm, "shared"))
    wait_until(
        "a Warning Event ObjectConflict",
        lambda: ("Warning", "ObjectConflict") in event_types(mlm, "shared"),
        30,
        interval=0.25,
    )

    # Deleting the MLModel leaves the Service: it never pointed at the MLModel.
    mlm.delete("shared")
    mlm.wait_gone("shared", timeout=60)
    untouched(before, read_service(mlm, "shared"))


def test_once_the_other_service_is_gone_the_model_is_served(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    foreign_service(mlm, "later")
    created = mlm.create(mlm.body("later", "1", models("1")))
    wait_reason(mlm, "later", "SpecValid", "ObjectConflict")

    mlm.core.delete_namespaced_service("later", mlm.ns)
    mlm.wait_phase("later", "Serving", version="1", timeout=90)
    svc = read_service(mlm, "later")
    (owner,) = svc["metadata"]["ownerReferences"]
    assert (owner["uid"], owner["controller"]) == (created["metadata"]["uid"], True)
    assert mlm.condition("later", "SpecValid")["status"] == "True"


def test_deployments_that_only_carry_the_models_label_are_left_alone(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    mlm.create(mlm.body("churn", "1", models("1")))
    mlm.wait_phase("churn", "Serving", version="1")
    # A person's copies: one of another version, one claiming the serving version.
    labels = {"ml.lifecycle.io/model": "churn", "app.kubernetes.io/managed-by": "mlmodel-operator"}
    debug = foreign_deployment(mlm, "churn-debug", {**labels, "ml.lifecycle.io/version": "debug"})
    shadow = foreign_deployment(mlm, "churn-shadow", {**labels, "ml.lifecycle.io/version": "1"})

    # A reconcile that certainly saw them: the one that scales to 2 and reports it.
    mlm.patch_spec("churn", {"serving": {"replicas": 2}})

    def scaled() -> bool:
        st = mlm.status("churn")
        return st.get("observedGeneration") == 2 and st.get("ready") == "2/2"

    wait_until("churn scaled to 2/2", scaled, 60, interval=0.25)
    deps = mlm.deployments("churn")
    assert set(deps) == {"churn-v1", "churn-debug", "churn-shadow"}
    for mine in (debug, shadow):
        now = deps[mine.metadata.name]
        assert now.metadata.uid == mine.metadata.uid
        assert not now.metadata.owner_references
        assert now.spec.replicas == 1  # not scaled with the model
        assert "ml.lifecycle.io/retiring-since" not in (now.metadata.annotations or {})
    st = mlm.status("churn")
    assert (st["phase"], st["activeVersion"]) == ("Serving", "1")
    assert mlm.service_version("churn") == "1"


def test_a_deployment_name_two_models_would_share_is_reported_not_fought_over(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    # "foo-v1" at version "2" and "foo" at version "1-v2" both make Deployment foo-v1-v2.
    first = mlm.create(mlm.body("foo-v1", "2", models("1")))
    mlm.wait_phase("foo-v1", "Serving", version="2")
    before = mlm.apps.read_namespaced_deployment("foo-v1-v2", mlm.ns)

    mlm.create(mlm.body("foo", "1-v2", models("1")))
    cond = wait_reason(mlm, "foo", "SpecValid", "ObjectConflict")
    assert f"Deployment {mlm.ns}/foo-v1-v2" in cond["message"]
    assert "MLModel foo-v1" in cond["message"] and first["metadata"]["uid"] in cond["message"]
    assert mlm.status("foo")["phase"] == "Failed"

    now = mlm.apps.read_namespaced_deployment("foo-v1-v2", mlm.ns)
    assert now.metadata.resource_version == before.metadata.resource_version
    (owner,) = now.metadata.owner_references
    assert owner.uid == first["metadata"]["uid"]
    st = mlm.status("foo-v1")
    assert (st["phase"], st["activeVersion"]) == ("Serving", "2")
    assert mlm.condition("foo-v1", "SpecValid")["status"] == "True"


MON_GROUP, MON_VERSION = "monitoring.coreos.com", "v1"


def foreign_monitoring(mlm: Models, plural: str, kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = (
        {"selector": {"matchLabels": {"app": "theirs"}}, "endpoints": [{"port": "web"}]}
        if kind == "ServiceMonitor"
        else {"groups": [{"name": "theirs", "rules": [{"alert": "Theirs", "expr": "vector(1)"}]}]}
    )
    body = {
        "apiVersion": f"{MON_GROUP}/{MON_VERSION}",
        "kind": kind,
        "metadata": {"name": name, "labels": {"team": OTHER}},
        "spec": spec,
    }
    created: dict[str, Any] = mlm.custom.create_namespaced_custom_object(
        MON_GROUP, MON_VERSION, mlm.ns, plural, body, field_manager=OTHER
    )
    return created


def test_monitoring_objects_of_someone_else_are_neither_applied_nor_deleted(
    cluster: LocalCluster, mlm: Models, models: Callable[[str], Artifact]
) -> None:
    if not crds_installed(cluster):
        install_crds(cluster)
    theirs = {
        plural: foreign_monitoring(mlm, plural, kind, "watched")
        for plural, kind in (
            ("servicemonitors", "ServiceMonitor"),
            ("prometheusrules", "PrometheusRule"),
        )
    }

    def unchanged() -> None:
        for plural, before in theirs.items():
            now = get_monitoring(mlm, plural, "watched")
            assert now is not None, f"{plural}/watched was deleted"
            untouched(before, now)

    mlm.create(mlm.body("watched", "1", models("1")))
    mlm.wait_phase("watched", "Serving", version="1")  # monitoring never blocks serving
    cond = wait_reason(mlm, "watched", "Monitored", "ObjectConflict")
    assert cond["status"] == "False"
    assert f"ServiceMonitor {mlm.ns}/watched" in cond["message"]
    assert OTHER in cond["message"]
    unchanged()

    mlm.patch_spec("watched", {"monitoring": {"enabled": False}})
    wait_reason(mlm, "watched", "Monitored", "MonitoringDisabled")
    unchanged()

    mlm.delete("watched")
    mlm.wait_gone("watched", timeout=60)
    unchanged()


class LateKube(Kube):
    """kube.py as it is, except that its first read before a write sees the world as it
    was a moment earlier (``earlier``): the object absent, or still the model's."""

    def __init__(self, kubeconfig: str, earlier: dict[str, Any] | None) -> None:
        super().__init__(load_api_client(kubeconfig))
        self.earlier: list[dict[str, Any] | None] = [earlier]

    def _read(self, kind: str, path: str) -> dict[str, Any] | None:
        if self.earlier:
            return self.earlier.pop()
        return super()._read(kind, path)


@pytest.mark.parametrize("earlier", ["absent", "still ours"])
def test_an_object_taken_between_the_read_and_the_write_is_not_written(
    cluster: LocalCluster, mlm: Models, earlier: str
) -> None:
    model = parse_model(
        {
            "metadata": {
                "name": "raced",
                "namespace": mlm.ns,
                "uid": "3c1e0000-0000-0000-0000-00000000000a",
            },
            "spec": {
                "version": "1",
                "artifact": {"uri": "s3://models/raced/1/m.joblib", "sha256": "a" * 64},
            },
        }
    )
    before = foreign_service(mlm, "raced")  # someone's, made after the operator looked
    seen = None
    if earlier == "still ours":
        seen = {**before, "metadata": {**before["metadata"], "resourceVersion": "1"}}
        seen["metadata"]["ownerReferences"] = build_service(model, "1", Settings())["metadata"][
            "ownerReferences"
        ]
    kube = LateKube(str(cluster.kubeconfig), seen)
    with pytest.raises(NotControlled, match=f"Service {mlm.ns}/raced exists .* written by {OTHER}"):
        kube.apply(build_service(model, "1", Settings()))
    untouched(before, read_service(mlm, "raced"))
