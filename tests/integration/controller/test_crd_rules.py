"""The CRD's validation on the real apiserver: every CEL rule has a case it rejects, and
generated specs are either rejected with the field named or accepted and reconciled,
without the operator stopping or another model noticing."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kubernetes import client
from mlm_helpers import Artifact, Models

from mlmodel_operator.localcluster import OperatorRunner, wait_until

pytestmark = pytest.mark.integration

CRD = Path(__file__).resolve().parents[3] / "crds" / "mlmodels.ml.lifecycle.io.yaml"


def crd_rules() -> list[tuple[str, str]]:
    """(path, message) of every x-kubernetes-validations rule in the CRD."""
    doc = yaml.safe_load(CRD.read_text())
    found: list[tuple[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        for rule in node.get("x-kubernetes-validations", []):
            found.append((path or ".", " ".join(rule["message"].split())))
        for key, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{key}")
        walk(node.get("items"), f"{path}[]")
        walk(node.get("additionalProperties"), f"{path}.*")

    walk(doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "")
    return found


def set_path(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = body
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return body


# One case per CEL rule: the object's fields, and the start of the rule's
# message (the last case, the version reused after it left, is a test of its own below).
CASES: list[tuple[dict[str, Any], str]] = [
    ({"metadata.name": "9lives"}, "metadata.name must be a DNS-1035 label"),
    (
        {"metadata.name": "r" * 30, "spec.version": "1" * 32},
        "the Deployment name",
    ),
    ({"spec.version": "ledger"}, "'ledger' is reserved"),
    ({"spec.artifact.uri": "s3://models/a//b.joblib"}, "the object key must not have empty"),
    ({"spec.artifact.uri": "s3://models/a/../b.joblib"}, "the object key must not have empty"),
    ({"spec.artifact.uri": "s3://10.0.0.1/m.joblib"}, "the bucket name must not contain '..'"),
    ({"spec.archive.bucket": "a..b"}, "the bucket name must not contain '..'"),
    ({"spec.decisionLog.bucket": "10.1.2.3"}, "the bucket name must not contain '..'"),
    ({"spec.decisionLog.queueRecords": 10}, "queueRecords must be at least maxRecords"),
    ({"spec.decisionLog.redact": ["email"]}, "redactKeySecret is required when redact names"),
    ({"spec.decisionLog.prefix": "a/./b"}, "the prefix must not have '.' or '..' segments"),
    ({"spec.rollout": {"strategy": "canary"}}, "strategy canary or shadow needs at least one"),
    (
        {"spec.rollout": {"strategy": "canary", "steps": [{"weight": 100}]}},
        "a canary step's weight is at most 99",
    ),
    (
        {"spec.rollout": {"strategy": "canary", "steps": [{"weight": 50}, {"weight": 10}]}},
        "a canary's weights never decrease",
    ),
    (
        {
            "spec.rollout": {
                "strategy": "canary",
                "steps": [{"weight": 10}],
                "analysis": {"minAgreement": 0.9},
            }
        },
        "analysis.minAgreement is for strategy shadow only",
    ),
    (
        {"spec.rollout": {"analysis": {"maxDriftPsi": 0.2}}},
        "rollout.analysis.maxDriftPsi needs monitoring.drift.baselineUri",
    ),
]
TRANSITIONS = [
    "the digest of a version can never change",
    "this version was served before with another digest",
]


def test_every_rule_of_the_crd_has_a_case() -> None:
    messages = [message for _, message in crd_rules()]
    covered = [expected for _, expected in CASES] + TRANSITIONS
    for message in messages:
        assert any(message.startswith(start) for start in covered), message


@pytest.mark.parametrize(("fields", "expected"), CASES, ids=[c[1][:24] for c in CASES])
def test_each_rule_rejects_what_it_is_for(
    mlm: Models, models: Callable[[str], Artifact], fields: dict[str, Any], expected: str
) -> None:
    body = mlm.body("rules", "1", models("1"))
    for path, value in fields.items():
        set_path(body, path, value)
    with pytest.raises(client.ApiException) as rejected:
        mlm.create(body)
    assert rejected.value.status == 422
    assert expected in " ".join(json.loads(rejected.value.body)["message"].split())


def test_a_version_that_served_never_comes_back_with_another_digest(
    mlm: Models, models: Callable[[str], Artifact]
) -> None:
    v1, v2 = models("1"), models("2")
    mlm.create(mlm.body("again", "1", v1))
    mlm.wait_phase("again", "Serving", version="1")
    mlm.patch_spec("again", {"version": "2", "artifact": {"uri": v2.uri, "sha256": v2.sha256}})
    mlm.wait_phase("again", "Serving", version="2", timeout=90)
    with pytest.raises(client.ApiException) as rejected:
        mlm.patch_spec("again", {"version": "1", "artifact": {"uri": v2.uri, "sha256": v2.sha256}})
    assert rejected.value.status == 422
    message = json.loads(rejected.value.body)["message"]
    assert "served before with another digest" in message


# --------------------------------------------------------------------------- generated

FIELDS = [
    "spec.version", "spec.artifact.uri", "spec.artifact.sha256", "spec.artifact.format",
    "spec.serving.replicas", "spec.serving.image", "spec.serving.resources.limits.memory",
    "spec.serving.resources.requests.cpu", "spec.serving.batching.maxBatchSize",
    "spec.serving.batching.maxBatchLatencyMs", "spec.serving.leafTables",
    "spec.serving.modelCacheSize", "spec.rollout.readyTimeoutSeconds",
    "spec.retirement.drainSeconds", "spec.monitoring.enabled",
    "spec.monitoring.slo.p99LatencyMs", "spec.monitoring.slo.errorRatio",
    "spec.monitoring.drift.baselineUri", "spec.monitoring.drift.psiThreshold",
    "spec.archive.bucket", "spec.archive.retainDays", "spec.decisionLog.enabled",
    "spec.decisionLog.mode", "spec.decisionLog.flushSeconds", "spec.decisionLog.maxRecords",
    "spec.decisionLog.prefix", "spec.decisionLog.redact", "spec.decisionLog.retentionDays",
]  # fmt: skip
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "",
            "1",
            "2",
            "0",
            "-1",
            "1e9",
            "512Mi",
            "1Gi",
            "500m",
            "ledger",
            "s3://models/churn/1/model.joblib",
            "s3://models/x",
            "joblib",
            "best-effort",
            "required",
            "a" * 64,
            "x" * 600,
            "\u00e9\u00e8",
            "../..",
            "registry.example/ml/serving:1",
            "{{ $labels.pod }}",
        ]
    ),
    st.text(max_size=40),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)
_names = itertools.count()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3))
def test_generated_specs_are_rejected_with_the_field_or_reconciled(
    mlm: Models,
    models: Callable[[str], Artifact],
    operator: OperatorRunner,
    sentinel: str,
    changes: list[tuple[str, Any]],
) -> None:
    name = f"gen-{next(_names)}"
    body = mlm.body(name, "1", models("1"))
    for path, value in changes:
        set_path(body, path, value)
    try:
        created = mlm.create(body)
    except client.ApiException as exc:
        assert exc.status == 422, exc.body
        text = str(exc.body)
        assert any(path.split(".", 1)[1] in text or path in text for path, _ in changes), text
        event("rejected by the apiserver")
        return
    event("accepted")
    generation = created["metadata"]["generation"]

    def reconciled() -> bool:
        return mlm.status(name).get("observedGeneration") == generation

    wait_until(f"{name} reconciled", reconciled, 60, interval=0.25)
    assert operator.process is not None and operator.process.running(), operator.log()[-2000:]
    assert mlm.status(sentinel)["phase"] == "Serving"


@pytest.fixture()
def sentinel(mlm: Models, models: Callable[[str], Artifact]) -> str:
    """A model that must keep serving whatever the generated ones do."""
    if not mlm.exists("sentinel"):
        mlm.create(mlm.body("sentinel", "1", models("1")))
        mlm.wait_phase("sentinel", "Serving", version="1")
    return "sentinel"
