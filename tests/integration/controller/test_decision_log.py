"""spec.decisionLog on the real control plane, with the real operator and a real MinIO:
the apiserver's defaults and CEL rules, the DecisionLogReady condition, the serving
Deployment's environment, and what a missing redact key does in each mode."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from mlm_helpers import Artifact, Models

from mlmodel_operator.localcluster import MinioServer, wait_until

pytestmark = pytest.mark.integration

KEY_SECRET = "churn-hmac"


def new_bucket() -> str:
    return f"dl-{uuid.uuid4().hex[:10]}"


def wait_condition(mlm: Models, name: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    try:
        wait_until(
            f"DecisionLogReady reason {reason}",
            lambda: mlm.condition(name, "DecisionLogReady").get("reason") == reason,
            timeout,
            interval=0.25,
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status is {mlm.status(name)}") from None
    return mlm.condition(name, "DecisionLogReady")


def env_of(mlm: Models, name: str, version: str) -> dict[str, Any]:
    deployment = mlm.deployments(name)[f"{name}-v{version}"]
    return {e.name: e for e in deployment.spec.template.spec.containers[0].env}


def test_logging_to_a_bucket_the_operator_creates(
    mlm: Models, models: Callable[[str], Artifact], minio: MinioServer
) -> None:
    bucket = new_bucket()
    assert not minio.client().bucket_exists(bucket)
    mlm.create(mlm.body("churn", "1", models("1"), decisionLog={"enabled": True, "bucket": bucket}))
    cond = wait_condition(mlm, "churn", "Logging")
    assert cond["status"] == "True"
    assert cond["message"] == (
        f"decision records go to s3://{bucket}/decisions/{mlm.ns}/churn/ (mode best-effort)"
    )
    assert cond["observedGeneration"] == mlm.get("churn")["metadata"]["generation"]
    assert minio.client().bucket_exists(bucket)
    mlm.wait_phase("churn", "Serving", version="1")

    # the apiserver filled the defaults in; the operator passes them on
    assert mlm.get("churn")["spec"]["decisionLog"] == {
        "enabled": True,
        "bucket": bucket,
        "prefix": "decisions",
        "mode": "best-effort",
        "flushSeconds": 10,
        "maxRecords": 1000,
        "queueRecords": 100000,
        "retentionDays": 183,
    }
    env = env_of(mlm, "churn", "1")
    assert {k: v.value for k, v in env.items() if k.startswith("MLMODEL_DECISION_LOG")} == {
        "MLMODEL_DECISION_LOG": "true",
        "MLMODEL_DECISION_LOG_BUCKET": bucket,
        "MLMODEL_DECISION_LOG_PREFIX": "decisions",
        "MLMODEL_DECISION_LOG_MODE": "best-effort",
        "MLMODEL_DECISION_LOG_FLUSH_SECONDS": "10",
        "MLMODEL_DECISION_LOG_MAX_RECORDS": "1000",
        "MLMODEL_DECISION_LOG_QUEUE_RECORDS": "100000",
        "MLMODEL_DECISION_LOG_RETENTION_DAYS": "183",
    }
    assert env["MLMODEL_POD_NAME"].value_from.field_ref.field_path == "metadata.name"
    assert ("Logging", cond["message"]) in mlm.wait_events("churn", "Logging")


def test_a_missing_redact_key_is_named_and_best_effort_serves_until_it_exists(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    spec = {
        "enabled": True,
        "bucket": new_bucket(),
        "redact": ["email"],
        "redactKeySecret": {"name": KEY_SECRET},
    }
    mlm.create(mlm.body("redacted", "1", models("1"), decisionLog=spec))
    cond = wait_condition(mlm, "redacted", "RedactKeyMissing")
    assert cond["status"] == "False"
    assert cond["message"].startswith(
        f"spec.decisionLog.redactKeySecret.name: Secret '{KEY_SECRET}' not found in namespace "
        f"'{mlm.ns}'"
    )
    # best-effort: served, by pods without the decision log (they could not read the key)
    st = mlm.wait_phase("redacted", "Serving", version="1")
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert not any(k.startswith("MLMODEL_DECISION") for k in env_of(mlm, "redacted", "1"))
    mlm.wait_events("redacted", "RedactKeyMissing")

    # The Secret appears: the condition turns True, the pods get the log and the key by
    # reference (the next periodic reconcile, every 5 s here).
    mlm.core.create_namespaced_secret(
        mlm.ns, {"metadata": {"name": KEY_SECRET}, "stringData": {"key": "k" * 32}}
    )
    cond = wait_condition(mlm, "redacted", "Logging", timeout=30)
    assert cond["status"] == "True" and f"Secret '{KEY_SECRET}' key 'key'" in cond["message"]

    def key_wired() -> bool:
        key = env_of(mlm, "redacted", "1").get("MLMODEL_DECISION_LOG_REDACT_KEY")
        return key is not None and key.value_from.secret_key_ref.name == KEY_SECRET

    wait_until("the redact key in the Deployment", key_wired, 30, interval=0.25)
    env = env_of(mlm, "redacted", "1")
    assert env["MLMODEL_DECISION_LOG_REDACT"].value == "email"
    assert env["MLMODEL_DECISION_LOG_REDACT_KEY"].value is None  # never the value itself
    assert env["MLMODEL_DECISION_LOG_REDACT_KEY"].value_from.secret_key_ref.key == "key"
    mlm.wait_phase("redacted", "Serving", version="1")


def test_required_mode_rolls_nothing_out_without_the_key(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    spec = {
        "enabled": True,
        "bucket": new_bucket(),
        "mode": "required",
        "redact": ["email"],
        "redactKeySecret": {"name": KEY_SECRET, "key": "hmac"},
    }
    mlm.create(mlm.body("strict", "1", models("1"), decisionLog=spec))
    cond = wait_condition(mlm, "strict", "RedactKeyMissing")
    assert f"'{KEY_SECRET}'" in cond["message"]
    st = mlm.wait_phase("strict", "Failed")
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RedactKeyMissing")
    assert "spec.decisionLog.mode is required" in st["message"]
    assert mlm.deployments("strict") == {}

    # a Secret with another key: the key is named
    mlm.core.create_namespaced_secret(
        mlm.ns, {"metadata": {"name": KEY_SECRET}, "stringData": {"key": "k" * 32}}
    )
    wait_until(
        "the missing key named",
        lambda: "redactKeySecret.key" in mlm.condition("strict", "DecisionLogReady")["message"],
        30,
        interval=0.25,
    )
    assert (
        "has no key 'hmac' (its keys: key)"
        in mlm.condition("strict", "DecisionLogReady")["message"]
    )
    assert mlm.deployments("strict") == {}


@pytest.mark.parametrize(
    ("decision_log", "expected"),
    [
        ({"queueRecords": 10}, "queueRecords must be at least maxRecords"),
        ({"redact": ["email"]}, "redactKeySecret is required when redact names columns"),
        (
            {"redact": ["email", "email"], "redactKeySecret": {"name": "k"}},
            "Duplicate value",
        ),
        ({"prefix": "a/../b"}, "must not have '.' or '..' segments"),
        ({"prefix": "/decisions"}, "spec.decisionLog.prefix"),
        ({"mode": "always"}, "spec.decisionLog.mode"),
        ({"flushSeconds": 0.5}, "spec.decisionLog.flushSeconds"),
        ({"redactKeySecret": {"key": "k"}}, "spec.decisionLog.redactKeySecret.name"),
    ],
    ids=["queue", "no-key", "duplicate", "dot-dot", "slash", "mode", "flush", "no-name"],
)
def test_invalid_decision_logs_are_rejected_by_the_apiserver(
    mlm: Models, models: Callable[[str], Artifact], decision_log: dict[str, Any], expected: str
) -> None:
    with pytest.raises(client.ApiException) as rejected:
        mlm.create(mlm.body("bad", "1", models("1"), decisionLog=decision_log))
    assert rejected.value.status == 422
    assert expected in str(rejected.value.body)
