"""The operator's RBAC on a real apiserver, asked as its ServiceAccount: everything the
operator does is allowed, and what it must never do is denied.

The allowed table is the operator's API calls, one row each: kube.py (every call the
reconciler makes) and kopf's own (watching MLModels, finalizer and progress annotations,
events, peering, CRD observation). The lifecycle test in test_shipping_operator_identity.py
checks the table is complete by running the real operator with this identity only.
"""

from __future__ import annotations

from typing import Any

import pytest
from ship_helpers import NAMESPACE, SA_USER

from mlmodel_operator.localcluster import LocalCluster

pytestmark = pytest.mark.integration

MODEL_NS = "team-a"  # any namespace holding MLModels; it need not exist for the review
GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"]

# (verb, group, resource, subresource, namespace, name): what the operator does.
ALLOWED: list[tuple[str, str, str, str, str, str]] = [
    # kopf watches the MLModels in every namespace, patches finalizer + annotations
    ("list", "ml.lifecycle.io", "mlmodels", "", "", ""),
    ("watch", "ml.lifecycle.io", "mlmodels", "", "", ""),
    ("patch", "ml.lifecycle.io", "mlmodels", "", MODEL_NS, "churn"),
    ("get", "ml.lifecycle.io", "mlmodels", "", MODEL_NS, "churn"),  # kube.get_model
    ("patch", "ml.lifecycle.io", "mlmodels", "status", MODEL_NS, "churn"),
    # kube.apply / list_deployments / annotate_deployment / delete_deployment
    ("create", "apps", "deployments", "", MODEL_NS, ""),  # apply of a new object
    ("patch", "apps", "deployments", "", MODEL_NS, "churn-v1"),
    ("list", "apps", "deployments", "", MODEL_NS, ""),
    ("watch", "apps", "deployments", "", MODEL_NS, ""),  # kopf: Available -> switch at once
    ("delete", "apps", "deployments", "", MODEL_NS, "churn-v1"),
    # kube.apply (read by name when the watch cannot vouch for it); kopf watches the
    # operator's own Services (objcache.py)
    ("get", "", "services", "", MODEL_NS, "churn"),
    ("list", "", "services", "", "", ""),
    ("watch", "", "services", "", "", ""),
    ("create", "", "services", "", MODEL_NS, ""),
    ("patch", "", "services", "", MODEL_NS, "churn"),
    ("delete", "", "services", "", MODEL_NS, "churn-shadow"),  # a shadow's, when it ends
    # kube.secret_exists: the serving credentials Secret, by name only
    ("get", "", "secrets", "", MODEL_NS, "mlmodel-s3-credentials"),
    # kopf.event / kopf's own handler events
    ("create", "", "events", "", MODEL_NS, ""),
    # monitoring_sync: each model's ServiceMonitor and PrometheusRule, watched by kopf
    # (objcache.py), read by name when the watch cannot vouch for it, then applied
    ("list", "monitoring.coreos.com", "servicemonitors", "", "", ""),
    ("watch", "monitoring.coreos.com", "prometheusrules", "", "", ""),
    ("get", "monitoring.coreos.com", "servicemonitors", "", MODEL_NS, "churn"),
    ("get", "monitoring.coreos.com", "prometheusrules", "", MODEL_NS, "churn"),
    ("create", "monitoring.coreos.com", "servicemonitors", "", MODEL_NS, ""),
    ("patch", "monitoring.coreos.com", "servicemonitors", "", MODEL_NS, "churn"),
    ("patch", "monitoring.coreos.com", "prometheusrules", "", MODEL_NS, "churn"),
    ("delete", "monitoring.coreos.com", "servicemonitors", "", MODEL_NS, "churn"),
    ("delete", "monitoring.coreos.com", "prometheusrules", "", MODEL_NS, "churn"),
    # kube.crd_established; kopf's resource observer
    (
        "get",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        "",
        "servicemonitors.monitoring.coreos.com",
    ),
    ("list", "apiextensions.k8s.io", "customresourcedefinitions", "", "", ""),
    ("watch", "apiextensions.k8s.io", "customresourcedefinitions", "", "", ""),
    # kopf peering: keep-alives in the ClusterKopfPeering's status
    ("list", "kopf.dev", "clusterkopfpeerings", "", "", ""),
    ("watch", "kopf.dev", "clusterkopfpeerings", "", "", ""),
    ("patch", "kopf.dev", "clusterkopfpeerings", "", "", "mlmodel-operator"),
]

# What the operator must never be able to do.
DENIED: list[tuple[str, str, str, str, str, str]] = [
    # cluster-admin
    ("*", "*", "*", "", "", ""),
    ("create", "", "pods", "", MODEL_NS, ""),
    ("list", "", "pods", "", MODEL_NS, ""),
    ("create", "", "pods", "exec", MODEL_NS, "churn-v1-abc"),
    ("create", "", "pods", "portforward", MODEL_NS, "churn-v1-abc"),
    ("list", "", "nodes", "", "", ""),
    ("create", "", "serviceaccounts", "token", NAMESPACE, "mlmodel-operator"),
    ("impersonate", "", "users", "", "", "admin"),
    # Secrets: nothing but `get` of the one name
    ("list", "", "secrets", "", MODEL_NS, ""),
    ("watch", "", "secrets", "", MODEL_NS, ""),
    ("list", "", "secrets", "", "", ""),
    ("get", "", "secrets", "", MODEL_NS, "some-other-secret"),
    ("get", "", "secrets", "", "kube-system", "bootstrap-token-abcdef"),
    ("list", "", "secrets", "", "kube-system", ""),
    ("get", "", "secrets", "", NAMESPACE, "mlmodel-operator-s3"),  # its own: from env only
    ("create", "", "secrets", "", MODEL_NS, ""),
    ("update", "", "secrets", "", MODEL_NS, "mlmodel-s3-credentials"),
    ("patch", "", "secrets", "", MODEL_NS, "mlmodel-s3-credentials"),
    ("delete", "", "secrets", "", MODEL_NS, "mlmodel-s3-credentials"),
    # namespaces
    ("create", "", "namespaces", "", "", ""),
    ("delete", "", "namespaces", "", "", MODEL_NS),
    # RBAC: no edits, no escalation
    ("create", "rbac.authorization.k8s.io", "clusterroles", "", "", ""),
    ("patch", "rbac.authorization.k8s.io", "clusterroles", "", "", "mlmodel-operator"),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", "mlmodel-operator"),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", "", "", "cluster-admin"),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", ""),
    ("create", "rbac.authorization.k8s.io", "rolebindings", "", MODEL_NS, ""),
    # CRDs and webhooks: read only, none registered
    ("create", "apiextensions.k8s.io", "customresourcedefinitions", "", "", ""),
    (
        "delete",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        "",
        "mlmodels.ml.lifecycle.io",
    ),
    ("create", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", ""),
    # the MLModels belong to their users: the operator never makes or removes one
    ("create", "ml.lifecycle.io", "mlmodels", "", MODEL_NS, ""),
    ("delete", "ml.lifecycle.io", "mlmodels", "", MODEL_NS, "churn"),
    ("update", "ml.lifecycle.io", "mlmodels", "", MODEL_NS, "churn"),
    ("deletecollection", "apps", "deployments", "", MODEL_NS, ""),
    ("update", "apps", "deployments", "", MODEL_NS, "churn-v1"),
    ("patch", "apps", "daemonsets", "", MODEL_NS, "x"),
    ("list", "", "configmaps", "", "kube-system", ""),
    ("patch", "", "configmaps", "", "kube-system", "coredns"),
    ("get", "", "configmaps", "", "kube-system", "kubeadm-config"),
    ("patch", "", "events", "", MODEL_NS, "x"),
    ("create", "", "persistentvolumeclaims", "", MODEL_NS, ""),
    ("patch", "kopf.dev", "kopfpeerings", "", MODEL_NS, "x"),  # cluster-wide peering only
]


def review(cluster: LocalCluster, row: tuple[str, str, str, str, str, str]) -> dict[str, Any]:
    verb, group, resource, sub, ns, name = row
    attributes = {"verb": verb, "group": group, "resource": resource}
    attributes.update(
        {k: v for k, v in {"subresource": sub, "namespace": ns, "name": name}.items() if v}
    )
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": SA_USER, "groups": GROUPS, "resourceAttributes": attributes},
    }
    result = cluster.api("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
    status: dict[str, Any] = result["status"]
    return status


def describe(row: tuple[str, str, str, str, str, str]) -> str:
    verb, group, resource, sub, ns, name = row
    what = f"{resource}/{sub}" if sub else resource
    what = f"{what}.{group}" if group else what
    return f"{verb} {what}" + (f" {name}" if name else "") + (f" -n {ns}" if ns else "")


@pytest.mark.parametrize("row", ALLOWED, ids=[describe(r) for r in ALLOWED])
def test_the_operator_may(shipping_cluster: LocalCluster, row: tuple[str, ...]) -> None:
    status = review(shipping_cluster, row)  # type: ignore[arg-type]
    assert status.get("allowed") is True, status


@pytest.mark.parametrize("row", DENIED, ids=[describe(r) for r in DENIED])
def test_the_operator_may_not(shipping_cluster: LocalCluster, row: tuple[str, ...]) -> None:
    status = review(shipping_cluster, row)  # type: ignore[arg-type]
    assert status.get("allowed") is not True, status


def test_kubectl_auth_can_i_as_the_service_account_agrees(shipping_cluster: LocalCluster) -> None:
    # the same answers through impersonation, as a person would check them
    def can_i(*args: str) -> bool:
        out = shipping_cluster.kubectl("auth", "can-i", f"--as={SA_USER}", *args, check=False)
        return out.strip() == "yes"

    assert can_i("watch", "mlmodels.ml.lifecycle.io", "--all-namespaces")
    assert can_i("get", "secret/mlmodel-s3-credentials", "-n", MODEL_NS)
    assert not can_i("get", "secret/admin-token", "-n", "kube-system")
    assert not can_i("list", "secrets", "--all-namespaces")
    assert not can_i("create", "pods", "--subresource=exec", "-n", MODEL_NS)
    assert not can_i("*", "*", "--all-namespaces")
