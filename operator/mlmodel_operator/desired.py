"""Pure builders: a parsed MLModel -> the Kubernetes objects that should exist.

No I/O and no environment reads: everything comes from the `ModelSpec` and the
`Settings`. The objects are plain dicts, ready for server-side apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import API_GROUP, API_VERSION, KIND, TMP_SIZE_LIMIT, ModelSpec

SHA256_ANNOTATION: Final = f"{API_GROUP}/sha256"
URI_ANNOTATION: Final = f"{API_GROUP}/artifact-uri"
# When the Service took its selector, and the version it selected before: the ledger's
# TrafficSwitched record is rebuilt from them after a crash between switch and record.
SWITCHED_AT_ANNOTATION: Final = f"{API_GROUP}/switched-at"
SWITCHED_FROM_ANNOTATION: Final = f"{API_GROUP}/switched-from"
# On a Service that splits traffic (a canary): which version is stable, which the canary.
STABLE_VERSION_ANNOTATION: Final = f"{API_GROUP}/stable-version"
CANARY_VERSION_ANNOTATION: Final = f"{API_GROUP}/canary-version"
MODEL_LABEL: Final = f"{API_GROUP}/model"
VERSION_LABEL: Final = f"{API_GROUP}/version"

CONTAINER_NAME: Final = "server"
PORT_NAME: Final = "http"
# The Open Inference Protocol over gRPC, served next to HTTP (mlmodel-serve's default port).
GRPC_PORT_NAME: Final = "grpc"
GRPC_PORT: Final = 8081
CACHE_DIR: Final = "/var/cache/mlmodel"
RUN_AS_USER: Final = 10001
READY_PATH: Final = "/v2/health/ready"
LIVE_PATH: Final = "/v2/health/live"
METRICS_PATH: Final = "/metrics"
STARTUP_PERIOD_SECONDS: Final = 1
# A deleted Pod keeps serving this long before it gets SIGTERM: until kube-proxy (or any
# other endpoint consumer) has dropped it, new connections still reach it. Measured on a
# real node: without it, 2 of 337 requests failed across 3 Pod deletions at 30 req/s.
PRESTOP_SLEEP_SECONDS: Final = 5
SERVER_GRACEFUL_SECONDS: Final = 25  # mlmodel-serve's default --graceful-timeout
DIGEST_PREFIX_LENGTH: Final = 12


def deployment_name(model_name: str, version: str) -> str:
    return f"{model_name}-v{version}"


def model_labels(model: ModelSpec, version: str | None) -> dict[str, str]:
    """Recommended app.kubernetes.io labels plus the model and (if given) version."""
    labels = {
        "app.kubernetes.io/name": "mlmodel-serving",
        "app.kubernetes.io/instance": model.ref.name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "mlmodel-lifecycle",
        "app.kubernetes.io/managed-by": "mlmodel-operator",
        MODEL_LABEL: model.ref.name,
    }
    if version is not None:
        labels["app.kubernetes.io/version"] = version
        labels[VERSION_LABEL] = version
    return labels


def selector_labels(model_name: str, version: str) -> dict[str, str]:
    """The labels that pick one version's pods; never change for a live Deployment."""
    return {MODEL_LABEL: model_name, VERSION_LABEL: version}


def owner_reference(model: ModelSpec) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": model.ref.name,
        "uid": model.ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_reference(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The owner reference with ``controller: true`` (the apiserver allows one), or None."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") is True:
            return dict(ref)
    return None


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether the object's controller is the owner with this uid: the one test of
    "ours" (a label, a name or a non-controller reference can be copied by anyone)."""
    ref = controller_reference(obj)
    return ref is not None and bool(uid) and ref.get("uid") == uid


def holder(obj: Mapping[str, Any]) -> str:
    """Who holds an object, for a message: its controller, else the field managers that
    wrote it."""
    ref = controller_reference(obj)
    if ref is not None:
        return f"it is controlled by {ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})"
    fields = (obj.get("metadata") or {}).get("managedFields") or []
    managers = sorted({str(m["manager"]) for m in fields if m.get("manager")})
    return "it has no controller" + (f"; written by {', '.join(managers)}" if managers else "")


def endpoint_url(model: ModelSpec, settings: Settings) -> str:
    """The in-cluster Open Inference Protocol URL of the model."""
    return (
        f"http://{model.ref.name}.{model.ref.namespace}.svc:{settings.serving_port}"
        f"/v2/models/{model.ref.name}"
    )


def service_fqdn(model: ModelSpec, settings: Settings) -> str:
    return f"{model.ref.name}.{model.ref.namespace}.svc.{settings.cluster_domain}"


def decision_log_bucket(model: ModelSpec, settings: Settings) -> str:
    """The bucket of the model's decision records: the spec's, else the archive bucket."""
    return model.decision_log.bucket or settings.archive_bucket


def decision_log_location(model: ModelSpec, settings: Settings) -> str:
    """Where the model's decision records go: s3://<bucket>/<prefix>/<namespace>/<model>/."""
    return (
        f"s3://{decision_log_bucket(model, settings)}/{model.decision_log.prefix}/"
        f"{model.ref.namespace}/{model.ref.name}/"
    )


def digest_prefix(sha256: str) -> str:
    """What `status.digestPrefix` (the wide Digest column) shows for a digest."""
    return sha256[:DIGEST_PREFIX_LENGTH]


def ready_summary(ready_replicas: int | None, replicas: int) -> str:
    """What `status.ready` (the Ready column) shows: "ready/desired", e.g. "2/2"."""
    return f"{ready_replicas or 0}/{replicas}"


def build_deployment(
    model: ModelSpec,
    settings: Settings,
    *,
    decision_log: bool = True,
    replicas: int | None = None,
    shadow_sample: float | None = None,
) -> dict[str, Any]:
    """The Deployment serving `model.version`, named `<model>-v<version>`.

    ``decision_log`` False leaves out the decision log the spec turns on (the planner's
    `withhold_decision_log`); ``replicas`` overrides spec.serving.replicas (a canary's or
    shadow's candidate at its step); ``shadow_sample`` makes it a shadow's candidate that
    offers to take copies of that share of the stable version's requests.
    """
    name = deployment_name(model.ref.name, model.version)
    labels = model_labels(model, model.version)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": model.ref.namespace,
            "labels": labels,
            "annotations": {
                SHA256_ANNOTATION: model.artifact.sha256,
                URI_ANNOTATION: model.artifact.uri,
            },
            "ownerReferences": [owner_reference(model)],
        },
        "spec": {
            "replicas": model.serving.replicas if replicas is None else replicas,
            "revisionHistoryLimit": 2,
            # A version's Deployment only ever changes in place (replicas, resources);
            # keep the full capacity while it does.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            # The Deployment's own Progressing condition then agrees with the operator's
            # rollout timeout.
            "progressDeadlineSeconds": model.rollout.ready_timeout_seconds,
            "selector": {"matchLabels": selector_labels(model.ref.name, model.version)},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        SHA256_ANNOTATION: model.artifact.sha256,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(settings.serving_port),
                        "prometheus.io/path": METRICS_PATH,
                    },
                },
                "spec": _pod_spec(model, settings, decision_log, shadow_sample),
            },
        },
    }


def build_service(
    model: ModelSpec,
    active_version: str,
    settings: Settings,
    *,
    switched_at: str | None = None,
    switched_from: str | None = None,
    canary: str | None = None,
) -> dict[str, Any]:
    """The model's one Service, selecting the pods of `active_version`; ``switched_at``
    (and ``switched_from``, the version selected before) annotate when it took that
    selector. With ``canary``, it selects every Pod of the model (the stable version's
    and the canary's, in proportion to their replicas) and says which is which."""
    annotations = {SWITCHED_AT_ANNOTATION: switched_at} if switched_at else {}
    if switched_at and switched_from:
        annotations[SWITCHED_FROM_ANNOTATION] = switched_from
    selector = selector_labels(model.ref.name, active_version)
    if canary is not None:
        annotations[STABLE_VERSION_ANNOTATION] = active_version
        annotations[CANARY_VERSION_ANNOTATION] = canary
        selector = {MODEL_LABEL: model.ref.name}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": model.ref.name,
            "namespace": model.ref.namespace,
            "labels": model_labels(model, active_version),
            **({"annotations": annotations} if annotations else {}),
            "ownerReferences": [owner_reference(model)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                _http_port(settings),
                {
                    "name": GRPC_PORT_NAME,
                    "port": GRPC_PORT,
                    "targetPort": GRPC_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
            ],
        },
    }


def _http_port(settings: Settings) -> dict[str, Any]:
    return {
        "name": PORT_NAME,
        "port": settings.serving_port,
        "targetPort": PORT_NAME,
        "protocol": "TCP",
        "appProtocol": "http",
    }


def shadow_service_name(model_name: str) -> str:
    return f"{model_name}-shadow"


def shadow_url(model: ModelSpec, settings: Settings) -> str:
    """Where every serving Pod of the model looks for a shadow candidate (the server's
    MLMODEL_SHADOW_DISCOVERY): the ``<model>-shadow`` Service, which exists only while a
    shadow runs, so a shadow starts and stops without touching the stable Pods."""
    host = f"{shadow_service_name(model.ref.name)}.{model.ref.namespace}.svc"
    return f"http://{host}.{settings.cluster_domain}:{settings.serving_port}"


def build_shadow_service(model: ModelSpec, candidate: str, settings: Settings) -> dict[str, Any]:
    """``<model>-shadow``: the candidate's Pods, where the stable ones send copies.

    It carries the model's labels, so the model's ServiceMonitor scrapes the candidate's
    own metrics (its latency and errors on the copies) for the analysis."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": shadow_service_name(model.ref.name),
            "namespace": model.ref.namespace,
            "labels": model_labels(model, candidate),
            "ownerReferences": [owner_reference(model)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(model.ref.name, candidate),
            "ports": [_http_port(settings)],
        },
    }


def _pod_spec(
    model: ModelSpec, settings: Settings, decision_log: bool, shadow_sample: float | None = None
) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        # Service links put a dozen variables per Service into the environment; the
        # server needs none of them.
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": PRESTOP_SLEEP_SECONDS + SERVER_GRACEFUL_SECONDS + 5,
        "containers": [_container(model, settings, decision_log, shadow_sample)],
        "volumes": [
            {"name": "model-cache", "emptyDir": {"sizeLimit": model.serving.model_cache_size}},
            {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
        ],
    }


def _container(
    model: ModelSpec, settings: Settings, decision_log: bool, shadow_sample: float | None = None
) -> dict[str, Any]:
    resources = model.serving.resources
    return {
        "name": CONTAINER_NAME,
        "image": model.serving.image or settings.serving_image,
        "imagePullPolicy": settings.image_pull_policy,
        "ports": [
            {"name": PORT_NAME, "containerPort": settings.serving_port, "protocol": "TCP"},
            {"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "env": _env(model, settings, decision_log, shadow_sample),
        "resources": {kind: dict(values) for kind, values in resources.items() if values},
        # The startup probe covers download, digest check and load: it asks the readiness
        # path, which answers 200 only once the verified model is loaded (the liveness
        # path answers as soon as the process listens). Probed every second, so a loaded
        # model is Ready within a second or so; the rollout timeout bounds the whole of it.
        "startupProbe": {
            "httpGet": {"path": READY_PATH, "port": PORT_NAME},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 2,
            "failureThreshold": max(
                1, math.ceil(model.rollout.ready_timeout_seconds / STARTUP_PERIOD_SECONDS)
            ),
        },
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": PORT_NAME},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVE_PATH, "port": PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # the kubelet sleeps (no shell needed in the image), then sends SIGTERM
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "model-cache", "mountPath": CACHE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _env(
    model: ModelSpec, settings: Settings, decision_log: bool, shadow_sample: float | None = None
) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "MLMODEL_MODEL_NAME", "value": model.ref.name},
        {"name": "MLMODEL_MODEL_VERSION", "value": model.version},
        {"name": "MLMODEL_ARTIFACT_URI", "value": model.artifact.uri},
        {"name": "MLMODEL_ARTIFACT_SHA256", "value": model.artifact.sha256},
        {"name": "MLMODEL_ARTIFACT_FORMAT", "value": model.artifact.format},
        {"name": "MLMODEL_S3_ENDPOINT", "value": settings.s3_endpoint},
        {"name": "MLMODEL_S3_SECURE", "value": "true" if settings.s3_secure else "false"},
        {"name": "MLMODEL_CACHE_DIR", "value": CACHE_DIR},
        {"name": "MLMODEL_GRPC_PORT", "value": str(GRPC_PORT)},
        # a shadow candidate of this model, while one runs (mlmodel_serving's shadow)
        {"name": "MLMODEL_SHADOW_DISCOVERY", "value": shadow_url(model, settings)},
    ]
    if shadow_sample is not None:
        env.append({"name": "MLMODEL_SHADOW_SAMPLE", "value": f"{shadow_sample:g}"})
    batching = model.serving.batching
    if batching.max_batch_size is not None:
        env.append({"name": "MLMODEL_MAX_BATCH_SIZE", "value": str(batching.max_batch_size)})
    if batching.max_batch_latency_ms is not None:
        env.append(
            {"name": "MLMODEL_MAX_BATCH_LATENCY_MS", "value": str(batching.max_batch_latency_ms)}
        )
    if model.serving.leaf_tables is not None:
        env.append(
            {
                "name": "MLMODEL_LEAF_TABLES",
                "value": "true" if model.serving.leaf_tables else "false",
            }
        )
    drift = model.monitoring.drift
    if model.monitoring.enabled and drift.baseline_uri is not None:
        env.append({"name": "MLMODEL_DRIFT_BASELINE_URI", "value": drift.baseline_uri})
    if decision_log:
        env.extend(_decision_log_env(model, settings))
    # Credentials only ever by reference: the operator never reads or copies them.
    for variable, key in (
        ("MLMODEL_S3_ACCESS_KEY", settings.s3_access_key_key),
        ("MLMODEL_S3_SECRET_KEY", settings.s3_secret_key_key),
    ):
        env.append(
            {
                "name": variable,
                "valueFrom": {"secretKeyRef": {"name": settings.s3_credentials_secret, "key": key}},
            }
        )
    return env


def _decision_log_env(model: ModelSpec, settings: Settings) -> list[dict[str, Any]]:
    """The server's MLMODEL_DECISION_LOG_* variables; none while the log is off, so that
    a model that never turns it on keeps the pod template it had."""
    log = model.decision_log
    if not log.enabled:
        return []
    env: list[dict[str, Any]] = [
        {"name": "MLMODEL_DECISION_LOG", "value": "true"},
        {"name": "MLMODEL_DECISION_LOG_BUCKET", "value": decision_log_bucket(model, settings)},
        {"name": "MLMODEL_DECISION_LOG_PREFIX", "value": log.prefix},
        {"name": "MLMODEL_DECISION_LOG_MODE", "value": log.mode},
        {"name": "MLMODEL_DECISION_LOG_FLUSH_SECONDS", "value": _decimal(log.flush_seconds)},
        {"name": "MLMODEL_DECISION_LOG_MAX_RECORDS", "value": str(log.max_records)},
        {"name": "MLMODEL_DECISION_LOG_QUEUE_RECORDS", "value": str(log.queue_records)},
        {"name": "MLMODEL_DECISION_LOG_RETENTION_DAYS", "value": str(log.retention_days)},
    ]
    if log.redact and log.redact_key_secret is not None:
        secret = log.redact_key_secret
        env.append({"name": "MLMODEL_DECISION_LOG_REDACT", "value": ",".join(log.redact)})
        env.append(
            {
                "name": "MLMODEL_DECISION_LOG_REDACT_KEY",
                "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
            }
        )
    # Each record names the pod that wrote it (downward API).
    for variable, path in (
        ("MLMODEL_NAMESPACE", "metadata.namespace"),
        ("MLMODEL_POD_NAME", "metadata.name"),
    ):
        env.append(
            {"name": variable, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
        )
    return env


def _decimal(value: float) -> str:
    """A number as the server parses it, without float noise: 10, 2.5, 0.1."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
