"""Every shipped manifest is accepted by the real apiserver (server-side dry run), with the
kubectl built from the same Kubernetes release as the control plane."""

from __future__ import annotations

import subprocess

import pytest
from ship_helpers import MANIFESTS, wait_established

from mlmodel_operator.localcluster import REPO_ROOT, LocalCluster, binary, prometheus_operator_crds

pytestmark = pytest.mark.integration


def dry_run(cluster: LocalCluster, *args: str) -> str:
    return cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=shipping-test", *args
    )


@pytest.mark.parametrize(
    "kustomization",
    [
        "manifests",
        "manifests/operator",
        "manifests/minio",
        "manifests/monitoring",
        "manifests/examples/upload",
        "crds",
    ],
)
def test_kustomization_is_accepted(shipping_cluster: LocalCluster, kustomization: str) -> None:
    if kustomization == "manifests/monitoring":
        # the dashboard goes where a Grafana sidecar looks; that namespace must exist
        shipping_cluster.kubectl("create", "namespace", "monitoring", check=False)
    out = dry_run(shipping_cluster, "-k", str(REPO_ROOT / kustomization))
    assert "(server dry run)" in out
    # kubectl lists each object it would apply; none is left out
    rendered = shipping_cluster.kubectl("kustomize", str(REPO_ROOT / kustomization))
    assert out.count("(server dry run)") == rendered.count("\nkind: ") + rendered.startswith(
        "kind: "
    )


@pytest.mark.parametrize("example", ["churn-v1.yaml", "churn-v2.yaml", "networkpolicy.yaml"])
def test_examples_are_accepted(shipping_cluster: LocalCluster, example: str) -> None:
    out = dry_run(shipping_cluster, "-f", str(MANIFESTS / "examples" / example))
    assert "(server dry run)" in out


def test_operator_service_monitor_is_accepted(shipping_cluster: LocalCluster) -> None:
    # the Prometheus operator's own CRDs, pinned in hack/versions.env and cached
    crd_files = prometheus_operator_crds()
    # Install them only for this check and remove what this test added, so the shared
    # cluster looks to later tests (and their operator) as it did before.
    names = [f"{n}.monitoring.coreos.com" for n in ("servicemonitors", "prometheusrules")]
    existing = shipping_cluster.kubectl("get", "crd", "-o", "name")
    added = [
        n for n in names if f"customresourcedefinition.apiextensions.k8s.io/{n}" not in existing
    ]
    try:
        for path in crd_files:
            if any(path.name == f"monitoring.coreos.com_{n.split('.')[0]}.yaml" for n in added):
                shipping_cluster.kubectl("apply", "--server-side", "-f", str(path))
        wait_established(shipping_cluster, *names)
        out = dry_run(shipping_cluster, "-k", str(MANIFESTS / "operator" / "prometheus"))
        assert "servicemonitor.monitoring.coreos.com/mlmodel-operator serverside-applied" in out
        example = MANIFESTS / "monitoring" / "example-prometheusrule.yaml"
        if example.exists():  # the monitoring builders' output for the example model
            shipping_cluster.kubectl("create", "namespace", "default", check=False)
            out = dry_run(shipping_cluster, "-f", str(example))
            assert "prometheusrule.monitoring.coreos.com/" in out
    finally:
        for name in added:
            shipping_cluster.kubectl("delete", "crd", name, "--wait=true", "--timeout=30s")


def test_a_broken_manifest_is_refused(shipping_cluster: LocalCluster) -> None:
    # the dry run really validates: an unknown field in a Deployment is an error
    bad = (
        (MANIFESTS / "operator" / "deployment.yaml")
        .read_text()
        .replace("revisionHistoryLimit: 3", "revisionHistoryLimit: 3\n  replicaz: 2")
    )
    out = shipping_cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", stdin=bad, check=False
    )
    assert "(server dry run)" not in out


def dry_run_warnings(cluster: LocalCluster, *args: str, stdin: str | None = None) -> str:
    """stderr of a server-side dry run: the apiserver's warnings (the harness keeps stdout)."""
    kubectl = [str(binary("kubernetes", "kubectl")), f"--kubeconfig={cluster.kubeconfig}"]
    apply = ["apply", "--server-side", "--dry-run=server", "--field-manager=shipping-test"]
    result = subprocess.run(
        [*kubectl, *apply, *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        check=False,
    )
    assert "(server dry run)" in result.stdout, result.stderr
    return result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("-k", "manifests/operator"),
        ("-k", "manifests/minio"),
        ("-k", "manifests/examples/upload"),
    ],
)
def test_pod_templates_meet_the_restricted_pod_security_standard(
    shipping_cluster: LocalCluster, args: tuple[str, str]
) -> None:
    # mlmodel-system enforces "restricted" for Pods and warns for their templates
    stderr = dry_run_warnings(shipping_cluster, args[0], str(REPO_ROOT / args[1]))
    assert "PodSecurity" not in stderr, stderr


def test_a_template_breaking_the_standard_is_warned_about(shipping_cluster: LocalCluster) -> None:
    bad = (MANIFESTS / "operator" / "deployment.yaml").read_text()
    bad = bad.replace("capabilities: {drop: [ALL]}", "capabilities: {drop: [NET_RAW]}")
    stderr = dry_run_warnings(shipping_cluster, "-f", "-", stdin=bad)
    assert 'would violate PodSecurity "restricted:latest"' in stderr
