"""spec.parse_model: defaults, every field, and rejections that name field and fix."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlmodel_operator.spec import (
    ArchiveSpec,
    ArtifactSpec,
    BatchingSpec,
    DecisionLogSpec,
    DriftSpec,
    FrozenMap,
    ModelRef,
    ModelSpec,
    MonitoringSpec,
    RetirementSpec,
    RolloutSpec,
    SecretKeyRef,
    ServingSpec,
    SloSpec,
    SpecError,
    check_version_reuse,
    parse_model,
    parse_quantity,
)

SHA_A = "3b2c6f0e8d4a1957c0f5e2b7a9d8c6e4f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c9"
SHA_B = "c0ffee5a1e0d9b8c7a6f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a00"


def minimal(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "ml.lifecycle.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {"name": "churn", "namespace": "team-a", "uid": "uid-1", "generation": 3},
        "spec": {
            "version": "1",
            "artifact": {"uri": "s3://models/churn/1/model.joblib", "sha256": SHA_A},
        },
    }
    body["spec"].update(spec)
    return body


def with_field(path: str, value: Any) -> dict[str, Any]:
    """A minimal body with `spec.<path>` (dotted) set to `value`."""
    body = minimal()
    node = body["spec"]
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return body


def test_minimal_spec_takes_every_default() -> None:
    model = parse_model(minimal())
    assert model == ModelSpec(
        ref=ModelRef(name="churn", namespace="team-a", uid="uid-1"),
        generation=3,
        version="1",
        artifact=ArtifactSpec(uri="s3://models/churn/1/model.joblib", sha256=SHA_A),
        serving=ServingSpec(
            replicas=1,
            image=None,
            resources={
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"memory": "1Gi"},
            },
            batching=BatchingSpec(),
        ),
        rollout=RolloutSpec(ready_timeout_seconds=600),
        retirement=RetirementSpec(drain_seconds=30),
        monitoring=MonitoringSpec(
            enabled=True, slo=SloSpec(), drift=DriftSpec(baseline_uri=None, psi_threshold=0.2)
        ),
        archive=ArchiveSpec(bucket=None, retain_days=None),
        decision_log=DecisionLogSpec(
            enabled=False,
            bucket=None,
            prefix="decisions",
            mode="best-effort",
            flush_seconds=10.0,
            max_records=1000,
            queue_records=100000,
            redact=(),
            redact_key_secret=None,
            retention_days=183,
        ),
    )
    assert model.name == "churn"
    assert model.namespace == "team-a"
    assert model.artifact.format == "joblib"


def test_full_spec_is_read_field_by_field() -> None:
    body = minimal(
        version="2024.06.1-rc1",
        artifact={
            "uri": "s3://models/churn/2024.06.1/model.joblib",
            "sha256": SHA_B,
            "format": "joblib",
        },
        serving={
            "replicas": 3,
            "image": "registry.local/mlmodel-serving:dev",
            "resources": {
                "requests": {"cpu": "500m", "memory": "512Mi"},
                "limits": {"cpu": 2, "memory": "2Gi"},
            },
            "batching": {"maxBatchSize": 64, "maxBatchLatencyMs": 5},
            "leafTables": False,
        },
        rollout={"readyTimeoutSeconds": 120},
        retirement={"drainSeconds": 0},
        monitoring={
            "enabled": False,
            "slo": {"p99LatencyMs": 100, "errorRatio": 0.01},
            "drift": {"baselineUri": "s3://models/churn/2/baseline.json", "psiThreshold": 0.25},
        },
        archive={"bucket": "team-a-archive", "retainDays": 3650},
    )
    model = parse_model(body)
    assert model.version == "2024.06.1-rc1"
    assert model.artifact == ArtifactSpec(
        uri="s3://models/churn/2024.06.1/model.joblib", sha256=SHA_B, format="joblib"
    )
    assert model.artifact.bucket == "models"
    assert model.artifact.key == "churn/2024.06.1/model.joblib"
    assert model.serving == ServingSpec(
        replicas=3,
        image="registry.local/mlmodel-serving:dev",
        resources={
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
        batching=BatchingSpec(max_batch_size=64, max_batch_latency_ms=5),
        leaf_tables=False,
    )
    assert model.rollout.ready_timeout_seconds == 120
    assert model.retirement.drain_seconds == 0
    assert model.monitoring == MonitoringSpec(
        enabled=False,
        slo=SloSpec(p99_latency_ms=100.0, error_ratio=0.01),
        drift=DriftSpec(baseline_uri="s3://models/churn/2/baseline.json", psi_threshold=0.25),
    )
    assert model.monitoring.drift.enabled
    assert model.archive == ArchiveSpec(bucket="team-a-archive", retain_days=3650)


def test_decision_log_is_read_field_by_field() -> None:
    body = minimal(
        decisionLog={
            "enabled": True,
            "bucket": "team-a-decisions",
            "prefix": "audit/decisions",
            "mode": "required",
            "flushSeconds": 2.5,
            "maxRecords": 500,
            "queueRecords": 500,
            "redact": ["email", "phone number"],
            "redactKeySecret": {"name": "churn-hmac", "key": "hmac"},
            "retentionDays": 3650,
        }
    )
    assert parse_model(body).decision_log == DecisionLogSpec(
        enabled=True,
        bucket="team-a-decisions",
        prefix="audit/decisions",
        mode="required",
        flush_seconds=2.5,
        max_records=500,
        queue_records=500,
        redact=("email", "phone number"),
        redact_key_secret=SecretKeyRef(name="churn-hmac", key="hmac"),
        retention_days=3650,
    )
    assert parse_model(body).decision_log.required


def test_decision_log_defaults_inside_a_partial_object() -> None:
    log = parse_model(
        minimal(
            decisionLog={"enabled": True, "redact": ["email"], "redactKeySecret": {"name": "k"}}
        )
    ).decision_log
    assert log.redact_key_secret == SecretKeyRef(name="k", key="key")
    assert (log.bucket, log.prefix, log.mode, log.flush_seconds) == (
        None, "decisions", "best-effort", 10.0,
    )  # fmt: skip
    assert not log.required
    assert isinstance(log.flush_seconds, float)
    # a key Secret without redact columns is allowed, and unused
    log = parse_model(minimal(decisionLog={"redactKeySecret": {"name": "k"}})).decision_log
    assert log.redact == ()


def test_parsing_never_mutates_the_body() -> None:
    body = minimal(serving={"resources": {"limits": {"memory": "128Mi"}}})
    before = copy.deepcopy(body)
    parse_model(body)
    assert body == before


def test_the_model_is_frozen_and_hashable() -> None:
    model = parse_model(minimal())
    with pytest.raises(AttributeError):
        model.version = "2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        model.serving.resources["requests"]["cpu"] = "1"  # type: ignore[index]
    assert hash(model) == hash(parse_model(minimal()))
    assert {model, parse_model(minimal())} == {model}


def test_missing_namespace_and_uid_still_parse_for_local_files() -> None:
    body = minimal()
    body["metadata"] = {"name": "churn"}
    model = parse_model(body)
    assert model.ref == ModelRef(name="churn", namespace="default", uid="")
    assert model.generation == 0


@pytest.mark.parametrize(
    ("resources", "requests", "limits"),
    [
        # A user limit below the default request: the request drops to the limit.
        ({"limits": {"memory": "128Mi"}}, {"cpu": "100m", "memory": "128Mi"}, {"memory": "128Mi"}),
        # A user request above the default limit: the limit rises to the request.
        ({"requests": {"memory": "4Gi"}}, {"cpu": "100m", "memory": "4Gi"}, {"memory": "4Gi"}),
        # Extended resources pass through, integers become strings.
        (
            {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}},
            {"cpu": "100m", "memory": "256Mi", "nvidia.com/gpu": "1"},
            {"memory": "1Gi", "nvidia.com/gpu": "1"},
        ),
        # A CPU limit the user sets, with the default CPU request under it.
        (
            {"limits": {"cpu": "1"}},
            {"cpu": "100m", "memory": "256Mi"},
            {"cpu": "1", "memory": "1Gi"},
        ),
    ],
)
def test_resource_defaults_fill_gaps_without_breaking_the_spec(
    resources: dict[str, Any], requests: dict[str, str], limits: dict[str, str]
) -> None:
    model = parse_model(minimal(serving={"resources": resources}))
    assert model.serving.resources == {"requests": requests, "limits": limits}
    assert isinstance(model.serving.resources, FrozenMap)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100m", Fraction(1, 10)),
        ("1", Fraction(1)),
        ("1.5", Fraction(3, 2)),
        (".5", Fraction(1, 2)),
        ("256Mi", Fraction(256 * 2**20)),
        ("1Gi", Fraction(2**30)),
        ("1G", Fraction(10**9)),
        ("2e3", Fraction(2000)),
        ("1E-3", Fraction(1, 1000)),
        ("10k", Fraction(10000)),
    ],
)
def test_parse_quantity(value: str, expected: Fraction) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize("value", ["", "1 Gi", "-1", "1gi", "Gi", "1.2.3", "0x10"])
def test_parse_quantity_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(value)


# Each case: (body, field named in the error, a fragment of what is accepted).
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("no spec", {"metadata": {"name": "churn"}}, "spec", "version and artifact"),
    ("spec not an object", {"metadata": {"name": "churn"}, "spec": "x"}, "spec", "an object"),
    ("no version", minimal(version=None), "spec.version", "a string"),
    ("numeric version", minimal(version=3), "spec.version", 'quote numbers in YAML, e.g. "3"'),
    ("uppercase version", minimal(version="V1"), "spec.version", "lowercase letters"),
    ("version with slash", minimal(version="1/2"), "spec.version", "lowercase letters"),
    ("version too long", minimal(version="1" * 33), "spec.version", "1-32"),
    ("version ends in dot", minimal(version="1."), "spec.version", "ending with a letter"),
    (
        "deployment name too long",
        {**minimal(version="1" * 32), "metadata": {"name": "m" * 30}},
        "spec.version",
        "at most 63 are allowed",
    ),
    (
        "model name with dots",
        {**minimal(), "metadata": {"name": "a.b"}},
        "metadata.name",
        "DNS-1035",
    ),
    (
        "model name starts with digit",
        {**minimal(), "metadata": {"name": "1a"}},
        "metadata.name",
        "DNS-1035",
    ),
    ("no artifact", minimal(artifact=None), "spec.artifact", "an object"),
    ("artifact not an object", minimal(artifact="s3://a/b"), "spec.artifact", "an object"),
    ("no uri", with_field("artifact.uri", None), "spec.artifact.uri", "a string"),
    (
        "http uri",
        with_field("artifact.uri", "http://x"),
        "spec.artifact.uri",
        "s3://<bucket>/<key>",
    ),
    (
        "uri without key",
        with_field("artifact.uri", "s3://models"),
        "spec.artifact.uri",
        "s3://<bucket>/<key>",
    ),
    (
        "uri with trailing slash",
        with_field("artifact.uri", "s3://models/churn/"),
        "spec.artifact.uri",
        "s3://<bucket>/<key>",
    ),
    (
        "uri with empty segment",
        with_field("artifact.uri", "s3://models/a//b"),
        "spec.artifact.uri",
        "empty, '.' or '..'",
    ),
    (
        "uri with dot-dot",
        with_field("artifact.uri", "s3://models/a/../b"),
        "spec.artifact.uri",
        "'..'",
    ),
    (
        "uri with space",
        with_field("artifact.uri", "s3://models/a b"),
        "spec.artifact.uri",
        "no spaces",
    ),
    (
        "uppercase bucket",
        with_field("artifact.uri", "s3://Models/a"),
        "spec.artifact.uri",
        "s3://<bucket>/<key>",
    ),
    (
        "bucket dot-dot",
        with_field("artifact.uri", "s3://my..bucket/a"),
        "spec.artifact.uri",
        "no '..'",
    ),
    (
        "ip bucket",
        with_field("artifact.uri", "s3://192.168.1.1/a"),
        "spec.artifact.uri",
        "not an IP",
    ),
    ("no digest", with_field("artifact.sha256", None), "spec.artifact.sha256", "a string"),
    (
        "short digest",
        with_field("artifact.sha256", "abc"),
        "spec.artifact.sha256",
        "64 lowercase hexadecimal",
    ),
    (
        "upper digest",
        with_field("artifact.sha256", SHA_A.upper()),
        "spec.artifact.sha256",
        "64 lowercase",
    ),
    (
        "prefixed digest",
        with_field("artifact.sha256", "sha256:" + SHA_A[7:]),
        "spec.artifact.sha256",
        "64 lowercase",
    ),
    ("onnx format", with_field("artifact.format", "onnx"), "spec.artifact.format", "one of joblib"),
    (
        "negative replicas",
        with_field("serving.replicas", -1),
        "spec.serving.replicas",
        "from 0 to 100",
    ),
    (
        "too many replicas",
        with_field("serving.replicas", 101),
        "spec.serving.replicas",
        "from 0 to 100",
    ),
    ("string replicas", with_field("serving.replicas", "2"), "spec.serving.replicas", "an integer"),
    ("bool replicas", with_field("serving.replicas", True), "spec.serving.replicas", "an integer"),
    ("image with space", with_field("serving.image", "a b"), "spec.serving.image", "no spaces"),
    ("empty image", with_field("serving.image", ""), "spec.serving.image", "or unset"),
    (
        "batch too big",
        with_field("serving.batching.maxBatchSize", 4097),
        "spec.serving.batching.maxBatchSize",
        "0 to 4096",
    ),
    (
        "latency too long",
        with_field("serving.batching.maxBatchLatencyMs", 1001),
        "spec.serving.batching.maxBatchLatencyMs",
        "0 to 1000",
    ),
    (
        "leaf tables not a boolean",
        with_field("serving.leafTables", "off"),
        "spec.serving.leafTables",
        "true, false or unset",
    ),
    (
        "a version named like the ledger",
        with_field("version", "ledger"),
        "spec.version",
        "any version but 'ledger'",
    ),
    (
        "model cache not a quantity",
        with_field("serving.modelCacheSize", "lots"),
        "spec.serving.modelCacheSize",
        "a Kubernetes quantity of at least 16Mi",
    ),
    (
        "model cache too small",
        with_field("serving.modelCacheSize", "1Mi"),
        "spec.serving.modelCacheSize",
        "a Kubernetes quantity of at least 16Mi",
    ),
    (
        "unknown resources key",
        with_field("serving.resources.claims", []),
        "spec.serving.resources.claims",
        "only requests and limits",
    ),
    (
        "bad quantity",
        with_field("serving.resources.requests", {"cpu": "lots"}),
        "spec.serving.resources.requests.cpu",
        "quantity",
    ),
    (
        "negative quantity",
        with_field("serving.resources.limits", {"cpu": -1}),
        "spec.serving.resources.limits.cpu",
        "non-negative",
    ),
    (
        "float quantity",
        with_field("serving.resources.limits", {"cpu": 0.5}),
        "spec.serving.resources.limits.cpu",
        "500m",
    ),
    (
        "bad resource name",
        with_field("serving.resources.limits", {"bad name": "1"}),
        "spec.serving.resources.limits.bad name",
        "resource name",
    ),
    (
        "request above limit",
        with_field("serving.resources", {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        "spec.serving.resources.requests.cpu",
        "at most the limit spec.serving.resources.limits.cpu (1)",
    ),
    (
        "timeout too short",
        with_field("rollout.readyTimeoutSeconds", 9),
        "spec.rollout.readyTimeoutSeconds",
        "10 to 86400",
    ),
    (
        "timeout too long",
        with_field("rollout.readyTimeoutSeconds", 86401),
        "spec.rollout.readyTimeoutSeconds",
        "10 to 86400",
    ),
    (
        "negative drain",
        with_field("retirement.drainSeconds", -1),
        "spec.retirement.drainSeconds",
        "0 to 3600",
    ),
    (
        "drain too long",
        with_field("retirement.drainSeconds", 3601),
        "spec.retirement.drainSeconds",
        "0 to 3600",
    ),
    (
        "string enabled",
        with_field("monitoring.enabled", "yes"),
        "spec.monitoring.enabled",
        "true or false",
    ),
    (
        "zero latency slo",
        with_field("monitoring.slo.p99LatencyMs", 0),
        "spec.monitoring.slo.p99LatencyMs",
        "above 0",
    ),
    (
        "error ratio above 1",
        with_field("monitoring.slo.errorRatio", 1.5),
        "spec.monitoring.slo.errorRatio",
        "0 to 1",
    ),
    (
        "nan error ratio",
        with_field("monitoring.slo.errorRatio", float("nan")),
        "spec.monitoring.slo.errorRatio",
        "0 to 1",
    ),
    (
        "http baseline",
        with_field("monitoring.drift.baselineUri", "http://x/y"),
        "spec.monitoring.drift.baselineUri",
        "s3://",
    ),
    (
        "zero psi",
        with_field("monitoring.drift.psiThreshold", 0),
        "spec.monitoring.drift.psiThreshold",
        "above 0",
    ),
    (
        "bad archive bucket",
        with_field("archive.bucket", "Archive_Bucket"),
        "spec.archive.bucket",
        "S3 bucket name",
    ),
    ("short archive bucket", with_field("archive.bucket", "ab"), "spec.archive.bucket", "3-63"),
    (
        "negative retention",
        with_field("archive.retainDays", -1),
        "spec.archive.retainDays",
        "0 to 36500",
    ),
    ("serving not an object", minimal(serving=[1]), "spec.serving", "an object"),
    # spec.decisionLog
    ("decision log not an object", minimal(decisionLog=True), "spec.decisionLog", "an object"),
    (
        "decision log enabled as text",
        with_field("decisionLog.enabled", "true"),
        "spec.decisionLog.enabled",
        "true or false",
    ),
    (
        "decision bucket",
        with_field("decisionLog.bucket", "Decisions"),
        "spec.decisionLog.bucket",
        "S3 bucket name",
    ),
    (
        "decision bucket is an IP",
        with_field("decisionLog.bucket", "10.0.0.1"),
        "spec.decisionLog.bucket",
        "not an IP address",
    ),
    (
        "prefix with a leading slash",
        with_field("decisionLog.prefix", "/decisions"),
        "spec.decisionLog.prefix",
        "neither starting nor ending with '/'",
    ),
    (
        "prefix with a trailing slash",
        with_field("decisionLog.prefix", "decisions/"),
        "spec.decisionLog.prefix",
        "neither starting nor ending with '/'",
    ),
    (
        "prefix with a dot-dot segment",
        with_field("decisionLog.prefix", "a/../b"),
        "spec.decisionLog.prefix",
        "'..' segments",
    ),
    (
        "prefix with a newline",
        with_field("decisionLog.prefix", "decisions\n"),
        "spec.decisionLog.prefix",
        "letters, digits",
    ),
    (
        "unknown mode",
        with_field("decisionLog.mode", "always"),
        "spec.decisionLog.mode",
        "best-effort, required",
    ),
    (
        "flush too often",
        with_field("decisionLog.flushSeconds", 0.5),
        "spec.decisionLog.flushSeconds",
        "from 1 to 3600",
    ),
    (
        "flush as text",
        with_field("decisionLog.flushSeconds", "10"),
        "spec.decisionLog.flushSeconds",
        "from 1 to 3600",
    ),
    (
        "no records per object",
        with_field("decisionLog.maxRecords", 0),
        "spec.decisionLog.maxRecords",
        "from 1 to 100000",
    ),
    (
        "queue too large",
        with_field("decisionLog.queueRecords", 10_000_001),
        "spec.decisionLog.queueRecords",
        "from 1 to 10000000",
    ),
    (
        "queue smaller than one object",
        minimal(decisionLog={"maxRecords": 5000, "queueRecords": 4999}),
        "spec.decisionLog.queueRecords",
        "at least spec.decisionLog.maxRecords (5000)",
    ),
    (
        "queue smaller than the default object",
        with_field("decisionLog.queueRecords", 999),
        "spec.decisionLog.queueRecords",
        "at least spec.decisionLog.maxRecords (1000)",
    ),
    (
        "redact not a list",
        with_field("decisionLog.redact", "email"),
        "spec.decisionLog.redact",
        "a list of input column names",
    ),
    (
        "redact column with a comma",
        minimal(decisionLog={"redact": ["email", "a,b"], "redactKeySecret": {"name": "k"}}),
        "spec.decisionLog.redact[1]",
        "without ','",
    ),
    (
        "redact column twice",
        minimal(decisionLog={"redact": ["email", "email"], "redactKeySecret": {"name": "k"}}),
        "spec.decisionLog.redact[1]",
        "each column named once",
    ),
    (
        "too many redact columns",
        minimal(
            decisionLog={"redact": [f"c{i}" for i in range(101)], "redactKeySecret": {"name": "k"}}
        ),
        "spec.decisionLog.redact",
        "at most 100 column names",
    ),
    (
        "redact without a key",
        with_field("decisionLog.redact", ["email"]),
        "spec.decisionLog.redactKeySecret",
        "the Secret holding the HMAC key",
    ),
    (
        "key Secret without a name",
        minimal(decisionLog={"redact": ["email"], "redactKeySecret": {"key": "k"}}),
        "spec.decisionLog.redactKeySecret.name",
        "a string",
    ),
    (
        "key Secret with a bad name",
        with_field("decisionLog.redactKeySecret", {"name": "Hmac_Key"}),
        "spec.decisionLog.redactKeySecret.name",
        "a Secret name",
    ),
    (
        "key Secret with a bad key",
        with_field("decisionLog.redactKeySecret", {"name": "k", "key": "a/b"}),
        "spec.decisionLog.redactKeySecret.key",
        "a Secret data key",
    ),
    (
        "retention of zero days",
        with_field("decisionLog.retentionDays", 0),
        "spec.decisionLog.retentionDays",
        "from 1 to 36500",
    ),
]


@pytest.mark.parametrize(
    ("body", "field", "accepted"),
    [pytest.param(body, field, accepted, id=name) for name, body, field, accepted in INVALID],
)
def test_invalid_specs_name_the_field_value_and_fix(
    body: dict[str, Any], field: str, accepted: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_model(body)
    error = caught.value
    assert error.field == field
    assert accepted in error.accepted
    assert str(error).startswith(field)
    assert accepted in str(error)


def test_spec_error_message_format() -> None:
    error = SpecError("spec.artifact.uri", "http://x", "s3://<bucket>/<key>")
    assert (
        str(error) == "spec.artifact.uri: 'http://x' is not accepted; expected s3://<bucket>/<key>"
    )
    assert isinstance(error, ValueError)
    assert (error.field, error.value, error.accepted) == (
        "spec.artifact.uri",
        "http://x",
        "s3://<bucket>/<key>",
    )
    missing = SpecError("spec.version", None, "a string")
    assert str(missing) == "spec.version is required; expected a string"


@pytest.mark.parametrize(
    "version", ["1", "v1", "2024.06.1", "1-rc.2", "a" * 32, "0", "3.0.0-beta.1"]
)
def test_accepted_versions(version: str) -> None:
    assert parse_model(minimal(version=version)).version == version


@pytest.mark.parametrize(
    "uri",
    [
        "s3://models/churn/1/model.joblib",
        "s3://m-1.example/k",
        "s3://abc/a/b/c/d.e_f-g+h=i",
    ],
)
def test_accepted_uris(uri: str) -> None:
    assert parse_model(with_field("artifact.uri", uri)).artifact.uri == uri


def test_check_version_reuse() -> None:
    model = parse_model(minimal(version="2", artifact={"uri": "s3://models/k", "sha256": SHA_A}))
    # Same version, same digest: a rollback to it is fine.
    check_version_reuse(
        model, [{"version": "2", "sha256": SHA_A}, {"version": "1", "sha256": SHA_B}]
    )
    # Entries without a digest say nothing.
    check_version_reuse(model, [{"version": "2"}])
    check_version_reuse(model, [])
    with pytest.raises(SpecError) as caught:
        check_version_reuse(
            model, [{"version": "1", "sha256": SHA_A}, {"version": "2", "sha256": SHA_B}]
        )
    assert caught.value.field == "spec.artifact.sha256"
    assert caught.value.value == SHA_A
    assert SHA_B in str(caught.value)
    assert "publish a new version" in str(caught.value)


# Any JSON value, as an apiserver or a YAML file could hand it over.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "version",
        "artifact",
        "artifact.uri",
        "artifact.sha256",
        "artifact.format",
        "serving",
        "serving.replicas",
        "serving.image",
        "serving.resources",
        "serving.resources.requests",
        "serving.resources.limits",
        "serving.batching",
        "serving.batching.maxBatchSize",
        "rollout",
        "rollout.readyTimeoutSeconds",
        "retirement.drainSeconds",
        "monitoring",
        "monitoring.enabled",
        "monitoring.slo",
        "monitoring.slo.errorRatio",
        "monitoring.drift",
        "monitoring.drift.baselineUri",
        "archive",
        "archive.bucket",
        "archive.retainDays",
        "decisionLog",
        "decisionLog.enabled",
        "decisionLog.prefix",
        "decisionLog.flushSeconds",
        "decisionLog.queueRecords",
        "decisionLog.redact",
        "decisionLog.redactKeySecret",
        "decisionLog.redactKeySecret.name",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(FIELDS, JSON), max_size=4))
def test_any_malformed_spec_gives_a_spec_error_never_a_crash(
    changes: list[tuple[str, Any]],
) -> None:
    body = minimal()
    for path, value in changes:
        node = body["spec"]
        *parents, last = path.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    try:
        model = parse_model(body)
    except SpecError as error:
        assert str(error).startswith(("spec", "metadata"))
    else:
        assert isinstance(model, ModelSpec)
