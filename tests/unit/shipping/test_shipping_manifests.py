"""The shipped manifests: schema-valid for every supported Kubernetes minor, and consistent
with the code that reads them (the CLI's flags, the settings, the RBAC the code needs)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions
from packaging.version import Version
from shipping_helpers import (
    CRD_KINDS,
    MANIFESTS,
    REPO,
    find,
    kustomization_resources,
    kustomizations,
    load_docs,
    manifest_files,
    objects,
)

from mlmodel_operator.cli import build_parser
from mlmodel_operator.settings import Settings

# Every minor version from 1.30 to the newest the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = sorted(
    {
        f"{Version(v).major}.{Version(v).minor}"
        for v in all_versions()
        if Version(v) >= Version("1.30")
    },
    key=Version,
)
DOCS = [(f, i, doc) for f in manifest_files() for i, doc in enumerate(load_docs(f))]
OPERATOR = objects(MANIFESTS / "operator")


def _id(item: tuple[Path, int, dict[str, Any]]) -> str:
    path, index, doc = item
    return f"{path.relative_to(REPO)}#{index}:{doc['kind']}"


def test_the_version_list_is_computed_from_the_package() -> None:
    assert KUBERNETES_VERSIONS[0] == "1.30"
    newest = max(Version(v) for v in all_versions())
    assert KUBERNETES_VERSIONS[-1] == f"{newest.major}.{newest.minor}"


# Kinds served by a CRD (MLModel, ServiceMonitor, ...) have no schema in
# kubernetes-validate: the server-side dry run against their real CRDs checks them
# (tests/integration/shipping).
BUILTIN_DOCS = [d for d in DOCS if d[2]["kind"] not in CRD_KINDS]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("item", BUILTIN_DOCS, ids=[_id(d) for d in BUILTIN_DOCS])
def test_every_manifest_validates(item: tuple[Path, int, dict[str, Any]], version: str) -> None:
    _, _, doc = item
    kubernetes_validate.validate(doc, version, strict=True)


def test_every_manifest_file_is_installed_by_a_kustomization_or_is_an_example() -> None:
    listed = {p for d in kustomizations() for p in kustomization_resources(d)}
    examples = MANIFESTS / "examples"
    orphans = [
        f
        for f in manifest_files()
        if f not in listed and examples not in f.parents and not f.name.startswith("example")
    ]
    assert orphans == []


def test_the_top_level_kustomization_installs_crds_and_operator() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects(MANIFESTS)}
    assert ("CustomResourceDefinition", "mlmodels.ml.lifecycle.io") in kinds
    assert ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev") in kinds
    assert ("Deployment", "mlmodel-operator") in kinds
    assert not any(k in CRD_KINDS - {"ClusterKopfPeering"} for k, _ in kinds)


def operator_container() -> dict[str, Any]:
    dep = find(OPERATOR, "Deployment", "mlmodel-operator")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_operator_arguments_parse_with_the_real_cli() -> None:
    container = operator_container()
    args = build_parser().parse_args(container["args"])
    assert args.command == "run" and args.all_namespaces
    assert args.priority == "oldest"  # equal priorities would pause both replicas
    peering = find(OPERATOR, "ClusterKopfPeering", args.peering)
    assert peering["apiVersion"] == "kopf.dev/v1"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == args.metrics_port
    assert args.liveness.endswith(f":{ports['health']}/healthz")
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    svc = find(OPERATOR, "Service", "mlmodel-operator-metrics")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    labels = find(OPERATOR, "Deployment", "mlmodel-operator")["spec"]["template"]["metadata"]
    assert svc["spec"]["selector"].items() <= labels["labels"].items()


def test_the_config_map_is_accepted_by_the_operator_settings() -> None:
    data = find(OPERATOR, "ConfigMap", "mlmodel-operator-config")["data"]
    assert all(key.startswith("MLMODEL_") for key in data)
    settings = Settings.from_env(data)
    assert settings.all_namespaces
    # the Secrets rule names exactly the Secret the settings say the pods use, and the
    # conventional name of a decision log's redaction key
    role = find(OPERATOR, "ClusterRole", "mlmodel-operator")
    (secret_rule,) = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert secret_rule == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": [settings.s3_credentials_secret, "mlmodel-redact-key"],
        "verbs": ["get"],
    }


def test_the_operator_pod_is_locked_down() -> None:
    dep = find(OPERATOR, "Deployment", "mlmodel-operator")
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2 and pod["serviceAccountName"] == "mlmodel-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container()
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    for key in ("MLMODEL_S3_ACCESS_KEY", "MLMODEL_S3_SECRET_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "mlmodel-operator-s3"
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_the_cluster_role_has_no_wildcards_and_no_dangerous_verbs() -> None:
    role = find(OPERATOR, "ClusterRole", "mlmodel-operator")
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
        assert not {"escalate", "bind", "impersonate", "deletecollection", "update"} & set(
            rule["verbs"]
        ), rule
        assert "rbac.authorization.k8s.io" not in rule["apiGroups"]
        assert not {"pods", "pods/exec", "namespaces", "nodes", "configmaps"} & set(
            rule["resources"]
        )
    binding = find(OPERATOR, "ClusterRoleBinding", "mlmodel-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mlmodel-operator", "namespace": "mlmodel-system"}
    ]


def _secret_refs(pod: dict[str, Any]) -> set[str]:
    return {
        e["valueFrom"]["secretKeyRef"]["name"]
        for c in pod["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_minio_root_stays_with_minio_and_the_setup_steps() -> None:
    text = (MANIFESTS / "minio" / "kustomization.yaml").read_text()
    assert "NOT FOR PRODUCTION" in text
    env = (MANIFESTS / "minio" / "credentials.env").read_text().split()
    assert sorted(line.split("=")[0] for line in env) == ["accessKey", "secretKey"]
    minio = objects(MANIFESTS / "minio")
    assert _secret_refs(find(minio, "Deployment", "minio")) == {"minio-root"}
    job = find(minio, "Job", "minio-buckets")
    assert _secret_refs(job) == {"minio-root"}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    from mlmodel_operator import s3keys

    assert container["command"] == ["python", "-m", s3keys.__name__]
    args = container["args"]
    assert "--operator" in args and args[args.index("--namespace") + 1] == "default"
    # the operator and the examples' serving Pods never see the root key
    assert _secret_refs(find(OPERATOR, "Deployment", "mlmodel-operator")) == {
        s3keys.OPERATOR_SECRET
    }
    (upload,) = load_docs(MANIFESTS / "examples" / "upload" / "job.yaml")
    assert _secret_refs(upload) == {"minio-root"}  # publishing the examples: laptop setup


def test_the_setup_job_may_write_only_the_two_secrets() -> None:
    minio = objects(MANIFESTS / "minio")
    job = find(minio, "Job", "minio-buckets")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "minio-setup"
    roles = {
        o["metadata"]["namespace"]: o["rules"]
        for o in minio
        if o["kind"] == "Role" and o["metadata"]["name"] == "minio-setup"
    }
    named = {"mlmodel-system": "mlmodel-operator-s3", "default": "mlmodel-s3-credentials"}
    assert set(roles) == set(named)
    for namespace, rules in roles.items():
        assert rules == [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [named[namespace]],
                "verbs": ["get", "update"],
            },
        ]
    bindings = [o for o in minio if o["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(named)
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "minio-setup", "namespace": "mlmodel-system"}
        ]


def test_the_example_upload_job_runs_the_example_upload_module() -> None:
    (job,) = load_docs(MANIFESTS / "examples" / "upload" / "job.yaml")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    from mlmodel_operator import example_upload

    assert container["command"][-1] == example_upload.__name__
    assert shlex.join(container["args"]).count("--version") == 2


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_the_network_policies_select_the_pods_they_are_for() -> None:
    from mlmodel_operator.desired import build_deployment
    from mlmodel_operator.settings import Settings as OperatorSettings
    from mlmodel_operator.spec import parse_model

    operator_policy = find(OPERATOR, "NetworkPolicy", "mlmodel-operator")
    dep = find(OPERATOR, "Deployment", "mlmodel-operator")
    assert _selects(
        operator_policy["spec"]["podSelector"], dep["spec"]["template"]["metadata"]["labels"]
    )
    ports = {p["containerPort"] for p in operator_container()["ports"]}
    assert ports == {p["port"] for p in operator_policy["spec"]["ingress"][0]["ports"]}

    minio = find(objects(MANIFESTS / "minio"), "Deployment", "minio")
    minio_labels = minio["spec"]["template"]["metadata"]["labels"]
    store_rule = operator_policy["spec"]["egress"][-1]
    assert _selects(store_rule["to"][0]["podSelector"], minio_labels)

    (serving_policy,) = load_docs(MANIFESTS / "examples" / "networkpolicy.yaml")
    model = parse_model(
        {
            "metadata": {"name": "churn", "namespace": "default", "uid": "u", "generation": 1},
            "spec": {"version": "1", "artifact": {"uri": "s3://models/k", "sha256": "a" * 64}},
        }
    )
    pod_labels = build_deployment(model, OperatorSettings())["spec"]["template"]["metadata"][
        "labels"
    ]
    assert _selects(serving_policy["spec"]["podSelector"], pod_labels)
    assert serving_policy["spec"]["policyTypes"] == ["Egress"]  # clients still reach it
    (to,) = serving_policy["spec"]["egress"][-1]["to"]
    assert _selects(to["podSelector"], minio_labels)
    assert to["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": minio["metadata"]["namespace"]
    }
