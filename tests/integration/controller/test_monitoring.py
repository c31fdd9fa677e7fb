"""The operator's ServiceMonitor and PrometheusRule on the real control plane.

The first test runs while the session's cluster has no Prometheus operator CRDs: the
Monitored condition says so and the model is served. It then installs the real CRDs
(from the prometheus-operator Go module, hack/versions.env) and sees the operator notice
them. Every later test in the session runs with the CRDs installed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client
from mlm_helpers import Artifact, Models

from mlmodel_operator.localcluster import LocalCluster, prometheus_operator_crds, wait_until
from mlmodel_operator.monitoring import (
    MONITORING_CRDS,
    build_prometheus_rule,
    build_service_monitor,
)
from mlmodel_operator.monitoring_sync import CRD_RECHECK_SECONDS
from mlmodel_operator.realstack import wait_established
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import parse_model

pytestmark = pytest.mark.integration

GROUP, VERSION = "monitoring.coreos.com", "v1"
NOTICE_TIMEOUT = CRD_RECHECK_SECONDS + 30  # the operator's CRD cache plus a few reconciles
GC_TIMEOUT = 120  # the garbage collector finds new resource types by periodic discovery


def crds_installed(cluster: LocalCluster) -> bool:
    names = cluster.kubectl("get", "crd", "-o", "name", check=False)
    return all(
        f"customresourcedefinition.apiextensions.k8s.io/{n}" in names for n in MONITORING_CRDS
    )


def install_crds(cluster: LocalCluster) -> None:
    for path in prometheus_operator_crds():
        cluster.kubectl("apply", "--server-side", "-f", str(path))
    wait_established(cluster, *MONITORING_CRDS)


def get_monitoring(mlm: Models, plural: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = mlm.custom.get_namespaced_custom_object(
            GROUP, VERSION, mlm.ns, plural, name
        )
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def wait_condition(mlm: Models, name: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    try:
        wait_until(
            f"Monitored reason {reason}",
            lambda: mlm.condition(name, "Monitored").get("reason") == reason,
            timeout,
            interval=0.5,
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; Monitored is {mlm.condition(name, 'Monitored')}") from None
    return mlm.condition(name, "Monitored")


def expected(mlm: Models, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    model = parse_model(mlm.get(name))
    return build_service_monitor(model, Settings()), build_prometheus_rule(model, Settings())


def test_without_the_crds_the_condition_says_so_and_a_later_install_is_noticed(
    cluster: LocalCluster, mlm: Models, models: Callable[[str], Artifact]
) -> None:
    assert not crds_installed(cluster), "this test must run before the CRDs are installed"
    mlm.create(mlm.body("absent", "1", models("1")))
    st = mlm.wait_phase("absent", "Serving", version="1")
    cond = wait_condition(mlm, "absent", "PrometheusOperatorMissing")
    assert cond["status"] == "False"
    for crd in MONITORING_CRDS:
        assert crd in cond["message"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"

    install_crds(cluster)
    cond = wait_condition(mlm, "absent", "MonitoringConfigured", timeout=NOTICE_TIMEOUT)
    assert cond["status"] == "True"
    assert get_monitoring(mlm, "servicemonitors", "absent") is not None
    assert get_monitoring(mlm, "prometheusrules", "absent") is not None
    assert mlm.status("absent")["phase"] == "Serving"


def test_monitoring_objects_are_valid_owned_updated_and_removed(
    cluster: LocalCluster, mlm: Models, models: Callable[[str], Artifact]
) -> None:
    if not crds_installed(cluster):
        install_crds(cluster)
    spec = {"monitoring": {"slo": {"p99LatencyMs": 200, "errorRatio": 0.05}}}
    created = mlm.create(mlm.body("mon", "1", models("1"), **spec))
    uid = created["metadata"]["uid"]
    mlm.wait_phase("mon", "Serving", version="1")
    assert wait_condition(mlm, "mon", "MonitoringConfigured")["status"] == "True"

    sm_want, rule_want = expected(mlm, "mon")
    sm = get_monitoring(mlm, "servicemonitors", "mon")
    rule = get_monitoring(mlm, "prometheusrules", "mon")
    assert sm is not None and rule is not None
    # Stored as built: nothing pruned by the CRD's structural schema.
    assert sm["spec"] == sm_want["spec"]
    assert rule["spec"] == rule_want["spec"]
    for obj in (sm, rule):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("MLModel", "mon", uid)
        assert owner["controller"] is True
        assert obj["metadata"]["labels"]["ml.lifecycle.io/version"] == "1"
    names = [r["alert"] for r in rule["spec"]["groups"][0]["rules"]]
    assert names == ["MLModelDown", "MLModelErrorRatioHigh", "MLModelLatencyHigh"]
    # The apiserver accepts them under strict field validation (no unknown field at all).
    cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict",
        "--field-manager=mlmodel-operator", "-f", "-",
        stdin="\n---\n".join(yaml.safe_dump(o) for o in (sm_want, rule_want)),
    )  # fmt: skip

    # A new version: both objects follow it.
    art2 = models("2")
    mlm.patch_spec("mon", {"version": "2", "artifact": {"uri": art2.uri, "sha256": art2.sha256}})
    mlm.wait_phase("mon", "Serving", version="2", timeout=90)

    def on_version_2() -> bool:
        rule = get_monitoring(mlm, "prometheusrules", "mon") or {}
        sm = get_monitoring(mlm, "servicemonitors", "mon") or {}
        text = json.dumps(rule.get("spec"))
        return (
            "version 2" in text
            and "version 1" not in text
            and sm.get("metadata", {}).get("labels", {}).get("ml.lifecycle.io/version") == "2"
        )

    wait_until("monitoring objects of version 2", on_version_2, 60, interval=0.5)
    rule = get_monitoring(mlm, "prometheusrules", "mon")
    assert rule is not None and rule["spec"] == expected(mlm, "mon")[1]["spec"]

    # Monitoring turned off: the objects go, the condition says why.
    mlm.patch_spec("mon", {"monitoring": {"enabled": False}})
    assert wait_condition(mlm, "mon", "MonitoringDisabled")["status"] == "False"
    assert get_monitoring(mlm, "servicemonitors", "mon") is None
    assert get_monitoring(mlm, "prometheusrules", "mon") is None

    # On again, then the MLModel is deleted: garbage collection removes what it owned.
    mlm.patch_spec("mon", {"monitoring": {"enabled": True}})
    wait_condition(mlm, "mon", "MonitoringConfigured")
    assert get_monitoring(mlm, "servicemonitors", "mon") is not None
    mlm.delete("mon")
    wait_until(
        "the ServiceMonitor and PrometheusRule garbage-collected",
        lambda: (
            get_monitoring(mlm, "servicemonitors", "mon") is None
            and get_monitoring(mlm, "prometheusrules", "mon") is None
        ),
        GC_TIMEOUT,
        interval=1,
    )
