"""desired: the built objects, by equality and against the Kubernetes OpenAPI schemas."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions
from model_specs import OWNER, SHA, make_model
from packaging.version import Version

from mlmodel_operator.desired import (
    build_deployment,
    build_service,
    decision_log_bucket,
    decision_log_location,
    deployment_name,
    digest_prefix,
    endpoint_url,
    model_labels,
    owner_reference,
    ready_summary,
    selector_labels,
    service_fqdn,
)
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


MODEL = make_model()
SETTINGS = Settings()
FULL = make_model(
    version="2024.06.1",
    serving={
        "replicas": 0,
        "image": "registry.local/serving:dev",
        "resources": {
            "requests": {"cpu": "1", "nvidia.com/gpu": 1},
            "limits": {"cpu": "2", "nvidia.com/gpu": 1},
        },
        "batching": {"maxBatchSize": 32, "maxBatchLatencyMs": 10},
        "leafTables": False,
    },
    rollout={"readyTimeoutSeconds": 61},
    monitoring={"drift": {"baselineUri": "s3://models/churn/baseline.json"}},
)
LABELS_V3 = {
    "app.kubernetes.io/name": "mlmodel-serving",
    "app.kubernetes.io/instance": "churn",
    "app.kubernetes.io/version": "3",
    "app.kubernetes.io/component": "model-server",
    "app.kubernetes.io/part-of": "mlmodel-lifecycle",
    "app.kubernetes.io/managed-by": "mlmodel-operator",
    "ml.lifecycle.io/model": "churn",
    "ml.lifecycle.io/version": "3",
}

EXPECTED_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "churn-v3",
        "namespace": "team-a",
        "labels": LABELS_V3,
        "annotations": {
            "ml.lifecycle.io/sha256": SHA,
            "ml.lifecycle.io/artifact-uri": MODEL.artifact.uri,
        },
        "ownerReferences": [OWNER],
    },
    "spec": {
        "replicas": 1,
        "revisionHistoryLimit": 2,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "progressDeadlineSeconds": 600,
        "selector": {
            "matchLabels": {"ml.lifecycle.io/model": "churn", "ml.lifecycle.io/version": "3"}
        },
        "template": {
            "metadata": {
                "labels": LABELS_V3,
                "annotations": {
                    "ml.lifecycle.io/sha256": SHA,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": "8080",
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 10001,
                    "runAsGroup": 10001,
                    "fsGroup": 10001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "terminationGracePeriodSeconds": 35,
                "containers": [
                    {
                        "name": "server",
                        "image": "ghcr.io/mlmodel-lifecycle/mlmodel-serving:0.1.0",
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [
                            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                            {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
                        ],
                        "env": [
                            {"name": "MLMODEL_MODEL_NAME", "value": "churn"},
                            {"name": "MLMODEL_MODEL_VERSION", "value": "3"},
                            {
                                "name": "MLMODEL_ARTIFACT_URI",
                                "value": "s3://models/churn/3/model.joblib",
                            },
                            {"name": "MLMODEL_ARTIFACT_SHA256", "value": SHA},
                            {"name": "MLMODEL_ARTIFACT_FORMAT", "value": "joblib"},
                            {
                                "name": "MLMODEL_S3_ENDPOINT",
                                "value": "minio.mlmodel-system.svc:9000",
                            },
                            {"name": "MLMODEL_S3_SECURE", "value": "false"},
                            {"name": "MLMODEL_CACHE_DIR", "value": "/var/cache/mlmodel"},
                            {"name": "MLMODEL_GRPC_PORT", "value": "8081"},
                            {
                                "name": "MLMODEL_SHADOW_DISCOVERY",
                                "value": "http://churn-shadow.team-a.svc.cluster.local:8080",
                            },
                            {
                                "name": "MLMODEL_S3_ACCESS_KEY",
                                "valueFrom": {
                                    "secretKeyRef": {
                                        "name": "mlmodel-s3-credentials",
                                        "key": "accessKey",
                                    }
                                },
                            },
                            {
                                "name": "MLMODEL_S3_SECRET_KEY",
                                "valueFrom": {
                                    "secretKeyRef": {
                                        "name": "mlmodel-s3-credentials",
                                        "key": "secretKey",
                                    }
                                },
                            },
                        ],
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "256Mi"},
                            "limits": {"memory": "1Gi"},
                        },
                        "startupProbe": {
                            "httpGet": {"path": "/v2/health/ready", "port": "http"},
                            "periodSeconds": 1,
                            "timeoutSeconds": 2,
                            "failureThreshold": 600,
                        },
                        "readinessProbe": {
                            "httpGet": {"path": "/v2/health/ready", "port": "http"},
                            "periodSeconds": 5,
                            "timeoutSeconds": 2,
                            "failureThreshold": 3,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/v2/health/live", "port": "http"},
                            "periodSeconds": 10,
                            "timeoutSeconds": 2,
                            "failureThreshold": 3,
                        },
                        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 10001,
                            "runAsGroup": 10001,
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                            "privileged": False,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "volumeMounts": [
                            {"name": "model-cache", "mountPath": "/var/cache/mlmodel"},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "model-cache", "emptyDir": {"sizeLimit": "4Gi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                ],
            },
        },
    },
}

EXPECTED_SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "churn",
        "namespace": "team-a",
        "labels": LABELS_V3,
        "ownerReferences": [OWNER],
    },
    "spec": {
        "type": "ClusterIP",
        "selector": {"ml.lifecycle.io/model": "churn", "ml.lifecycle.io/version": "3"},
        "ports": [
            {
                "name": "http",
                "port": 8080,
                "targetPort": "http",
                "protocol": "TCP",
                "appProtocol": "http",
            },
            {
                "name": "grpc",
                "port": 8081,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "grpc",
            },
        ],
    },
}


def test_the_version_list_is_computed_from_the_package() -> None:
    assert KUBERNETES_VERSIONS[0] == "1.30"
    assert len(KUBERNETES_VERSIONS) >= 2
    newest = max(Version(v) for v in all_versions())
    assert KUBERNETES_VERSIONS[-1] == f"{newest.major}.{newest.minor}"


def test_names_and_labels() -> None:
    assert deployment_name("churn", "3") == "churn-v3"
    assert deployment_name("churn", "2024.06.1") == "churn-v2024.06.1"
    assert model_labels(MODEL, "3") == LABELS_V3
    unversioned = model_labels(MODEL, None)
    assert "app.kubernetes.io/version" not in unversioned
    assert "ml.lifecycle.io/version" not in unversioned
    assert unversioned.items() <= LABELS_V3.items()
    assert selector_labels("churn", "3") == {
        "ml.lifecycle.io/model": "churn",
        "ml.lifecycle.io/version": "3",
    }
    assert selector_labels("churn", "3").items() <= model_labels(MODEL, "3").items()
    assert owner_reference(MODEL) == OWNER


def test_endpoint_and_status_helpers() -> None:
    assert endpoint_url(MODEL, SETTINGS) == "http://churn.team-a.svc:8080/v2/models/churn"
    assert service_fqdn(MODEL, SETTINGS) == "churn.team-a.svc.cluster.local"
    assert digest_prefix(SHA) == "3b2c6f0e8d4a"
    assert ready_summary(2, 3) == "2/3"
    assert ready_summary(None, 1) == "0/1"


def test_build_deployment_with_defaults() -> None:
    assert build_deployment(MODEL, SETTINGS) == EXPECTED_DEPLOYMENT


def test_build_deployment_with_every_option() -> None:
    settings = Settings(
        serving_image="registry.local/default:1",
        image_pull_policy="Never",
        s3_endpoint="127.0.0.1:9000",
        s3_secure=True,
        s3_credentials_secret="creds",
    )
    deployment = build_deployment(FULL, settings)
    assert deployment["metadata"]["name"] == "churn-v2024.06.1"
    assert deployment["spec"]["replicas"] == 0
    assert deployment["spec"]["progressDeadlineSeconds"] == 61
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/serving:dev"  # the spec's override wins
    assert container["imagePullPolicy"] == "Never"
    assert container["startupProbe"]["failureThreshold"] == 61  # 61 s at one probe a second
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "256Mi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "1"},
    }
    env = {e["name"]: e for e in container["env"]}
    assert env["MLMODEL_MODEL_VERSION"]["value"] == "2024.06.1"
    assert env["MLMODEL_S3_ENDPOINT"]["value"] == "127.0.0.1:9000"
    assert env["MLMODEL_S3_SECURE"]["value"] == "true"
    assert env["MLMODEL_MAX_BATCH_SIZE"]["value"] == "32"
    assert env["MLMODEL_MAX_BATCH_LATENCY_MS"]["value"] == "10"
    assert env["MLMODEL_LEAF_TABLES"]["value"] == "false"
    assert env["MLMODEL_DRIFT_BASELINE_URI"]["value"] == "s3://models/churn/baseline.json"
    assert env["MLMODEL_S3_ACCESS_KEY"] == {
        "name": "MLMODEL_S3_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "accessKey"}},
    }
    assert env["MLMODEL_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "creds",
        "key": "secretKey",
    }


def test_credentials_only_ever_by_secret_reference() -> None:
    for model in (MODEL, FULL):
        container = build_deployment(model, SETTINGS)["spec"]["template"]["spec"]["containers"][0]
        for entry in container["env"]:
            if "KEY" in entry["name"] and "S3" in entry["name"]:
                assert "value" not in entry
                assert set(entry["valueFrom"]) == {"secretKeyRef"}


def test_drift_baseline_only_when_monitoring_is_on() -> None:
    model = make_model(
        monitoring={"enabled": False, "drift": {"baselineUri": "s3://models/b.json"}}
    )
    container = build_deployment(model, SETTINGS)["spec"]["template"]["spec"]["containers"][0]
    assert "MLMODEL_DRIFT_BASELINE_URI" not in {e["name"] for e in container["env"]}


DECISIONS = make_model(
    decisionLog={
        "enabled": True,
        "bucket": "team-a-decisions",
        "prefix": "audit/decisions",
        "mode": "required",
        "flushSeconds": 2.5,
        "maxRecords": 500,
        "queueRecords": 20000,
        "redact": ["email", "phone number"],
        "redactKeySecret": {"name": "churn-hmac", "key": "hmac"},
        "retentionDays": 3650,
    }
)


def _env_of(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def test_decision_log_env() -> None:
    env = _env_of(build_deployment(DECISIONS, SETTINGS))
    base = _env_of(EXPECTED_DEPLOYMENT)
    # the log's variables come after the others, before the S3 credentials
    assert env[: len(base) - 2] == base[:-2] and env[-2:] == base[-2:]
    assert env[len(base) - 2 : -2] == [
        {"name": "MLMODEL_DECISION_LOG", "value": "true"},
        {"name": "MLMODEL_DECISION_LOG_BUCKET", "value": "team-a-decisions"},
        {"name": "MLMODEL_DECISION_LOG_PREFIX", "value": "audit/decisions"},
        {"name": "MLMODEL_DECISION_LOG_MODE", "value": "required"},
        {"name": "MLMODEL_DECISION_LOG_FLUSH_SECONDS", "value": "2.5"},
        {"name": "MLMODEL_DECISION_LOG_MAX_RECORDS", "value": "500"},
        {"name": "MLMODEL_DECISION_LOG_QUEUE_RECORDS", "value": "20000"},
        {"name": "MLMODEL_DECISION_LOG_RETENTION_DAYS", "value": "3650"},
        {"name": "MLMODEL_DECISION_LOG_REDACT", "value": "email,phone number"},
        {
            "name": "MLMODEL_DECISION_LOG_REDACT_KEY",
            "valueFrom": {"secretKeyRef": {"name": "churn-hmac", "key": "hmac"}},
        },
        {
            "name": "MLMODEL_NAMESPACE",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
        },
        {
            "name": "MLMODEL_POD_NAME",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        },
    ]


def test_decision_log_defaults_and_the_archive_bucket() -> None:
    model = make_model(decisionLog={"enabled": True})
    settings = Settings(archive_bucket="ops-archive")
    env = {e["name"]: e.get("value") for e in _env_of(build_deployment(model, settings))}
    assert {k: v for k, v in env.items() if k.startswith("MLMODEL_DECISION_LOG")} == {
        "MLMODEL_DECISION_LOG": "true",
        "MLMODEL_DECISION_LOG_BUCKET": "ops-archive",  # unset in the spec: the archive bucket
        "MLMODEL_DECISION_LOG_PREFIX": "decisions",
        "MLMODEL_DECISION_LOG_MODE": "best-effort",
        "MLMODEL_DECISION_LOG_FLUSH_SECONDS": "10",
        "MLMODEL_DECISION_LOG_MAX_RECORDS": "1000",
        "MLMODEL_DECISION_LOG_QUEUE_RECORDS": "100000",
        "MLMODEL_DECISION_LOG_RETENTION_DAYS": "183",
    }  # no REDACT, no key: nothing to redact
    assert {"MLMODEL_NAMESPACE", "MLMODEL_POD_NAME"} <= set(env)
    assert decision_log_bucket(model, settings) == "ops-archive"
    assert decision_log_location(model, settings) == "s3://ops-archive/decisions/team-a/churn/"
    assert decision_log_location(DECISIONS, settings) == (
        "s3://team-a-decisions/audit/decisions/team-a/churn/"
    )


def test_no_decision_log_leaves_the_pod_template_as_it_was() -> None:
    """Off (the default), or configured but disabled: not one variable more, so an
    operator upgrade restarts no model's pods."""
    configured = make_model(decisionLog={"enabled": False, "prefix": "x", "mode": "required"})
    for model in (MODEL, configured):
        assert build_deployment(model, SETTINGS) == EXPECTED_DEPLOYMENT
    # withheld by the planner (best-effort while the redact key is missing)
    withheld = build_deployment(DECISIONS, SETTINGS, decision_log=False)
    assert not any(e["name"].startswith("MLMODEL_DECISION") for e in _env_of(withheld))
    assert "MLMODEL_POD_NAME" not in {e["name"] for e in _env_of(withheld)}


def test_the_redact_key_only_ever_by_secret_reference() -> None:
    env = {e["name"]: e for e in _env_of(build_deployment(DECISIONS, SETTINGS))}
    key = env["MLMODEL_DECISION_LOG_REDACT_KEY"]
    assert "value" not in key and set(key["valueFrom"]) == {"secretKeyRef"}
    default_key = make_model(
        decisionLog={"enabled": True, "redact": ["email"], "redactKeySecret": {"name": "k"}}
    )
    env = {e["name"]: e for e in _env_of(build_deployment(default_key, SETTINGS))}
    assert env["MLMODEL_DECISION_LOG_REDACT_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "k",
        "key": "key",
    }


def test_the_selector_never_depends_on_mutable_fields() -> None:
    """A Deployment's selector is immutable: replicas, resources or image must not move it."""
    changed = make_model(
        serving={"replicas": 5, "image": "other:1", "resources": {"limits": {"cpu": "3"}}}
    )
    assert (
        build_deployment(changed, SETTINGS)["spec"]["selector"]
        == build_deployment(MODEL, SETTINGS)["spec"]["selector"]
    )
    assert build_deployment(changed, SETTINGS)["metadata"]["name"] == "churn-v3"


def test_building_is_pure() -> None:
    first = build_deployment(MODEL, SETTINGS)
    mutated = copy.deepcopy(first)
    mutated["metadata"]["labels"]["x"] = "y"
    mutated["spec"]["template"]["spec"]["containers"][0]["env"].clear()
    assert build_deployment(MODEL, SETTINGS) == first == EXPECTED_DEPLOYMENT
    # Results do not share mutable parts with each other or with the spec.
    first["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "9"
    assert MODEL.serving.resources["requests"]["cpu"] == "100m"
    assert build_deployment(MODEL, SETTINGS) == EXPECTED_DEPLOYMENT


def test_build_service() -> None:
    assert build_service(MODEL, "3", SETTINGS) == EXPECTED_SERVICE


def test_the_open_inference_protocol_over_grpc_has_its_own_port() -> None:
    """The server's gRPC port: on the container, in its environment, and on the Service."""
    container = build_deployment(MODEL, SETTINGS)["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert {"name": "MLMODEL_GRPC_PORT", "value": "8081"} in container["env"]
    ports = {p["name"]: p for p in build_service(MODEL, "3", SETTINGS)["spec"]["ports"]}
    assert ports["grpc"] == {
        "name": "grpc",
        "port": 8081,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }
    assert ports["http"]["appProtocol"] == "http"
    # the probes stay on HTTP
    assert container["readinessProbe"]["httpGet"]["port"] == "http"


def test_the_service_selects_the_active_version_not_the_spec() -> None:
    """While v3 rolls out, the Service keeps pointing at v2."""
    service = build_service(MODEL, "2", SETTINGS)
    assert service["spec"]["selector"] == selector_labels("churn", "2")
    assert service["metadata"]["labels"]["ml.lifecycle.io/version"] == "2"
    assert service["metadata"]["name"] == "churn"


def _all_built() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("deployment-defaults", build_deployment(MODEL, SETTINGS)),
        ("deployment-full", build_deployment(FULL, Settings(s3_secure=True))),
        ("deployment-decision-log", build_deployment(DECISIONS, SETTINGS)),
        ("service", build_service(MODEL, "3", SETTINGS)),
        ("service-full", build_service(FULL, "2024.06.1", SETTINGS)),
    ]


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("name", "obj"), _all_built(), ids=[n for n, _ in _all_built()])
def test_built_objects_validate_against_kubernetes_schema(
    kubernetes_version: str, name: str, obj: dict[str, Any]
) -> None:
    # strict: unknown fields are errors too, so a typo in a field name cannot hide.
    kubernetes_validate.validate(obj, kubernetes_version, strict=True)


def test_the_schema_check_catches_a_bad_object() -> None:
    broken = build_deployment(MODEL, SETTINGS)
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
