"""The CRDs in crds/: structural, documented, and in step with spec.py and the examples.

The apiserver's own checks (CEL compilation and cost, structural-schema rules) run in
the integration tests against the real kube-apiserver; here the schema is checked with
jsonschema, which implements the same OpenAPI v3 subset for everything but CEL.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from packaging.version import Version

from mlmodel_operator import conditions as c
from mlmodel_operator import spec as spec_module
from mlmodel_operator.spec import SpecError, parse_model

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"
CRD_FILE = CRDS / "mlmodels.ml.lifecycle.io.yaml"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("churn-*.yaml"))  # the MLModels
SHA = "a48526f810d44302b1f35d5a33c818e2329eff3d76358f0e4d68ace54c76ab16"
# Every minor version from 1.30 to the newest the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = sorted(
    {
        f"{Version(v).major}.{Version(v).minor}"
        for v in all_versions()
        if Version(v) >= Version("1.30")
    },
    key=Version,
)


def load_crd() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    assert isinstance(crd, dict)
    return crd


CRD = load_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
VALIDATOR = jsonschema.Draft4Validator(SCHEMA)


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `node`, with a readable path."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}[*]")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def node_at(json_path: str) -> dict[str, Any]:
    node = SCHEMA
    for part in json_path.strip(".").split("."):
        node = node["properties"][part]
    return node


def valid(obj: dict[str, Any]) -> bool:
    return bool(VALIDATOR.is_valid(obj))


def example(name: str) -> dict[str, Any]:
    body = yaml.safe_load((ROOT / "manifests" / "examples" / name).read_text())
    assert isinstance(body, dict)
    return body


# --- the resource ------------------------------------------------------------------


def test_names_scope_and_subresources() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["kind"] == "CustomResourceDefinition"
    assert CRD["metadata"]["name"] == "mlmodels.ml.lifecycle.io"
    spec = CRD["spec"]
    assert spec["group"] == "ml.lifecycle.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "MLModel",
        "listKind": "MLModelList",
        "plural": "mlmodels",
        "singular": "mlmodel",
        "shortNames": ["mlm"],
        "categories": ["ml"],
    }
    assert [v["name"] for v in spec["versions"]] == ["v1alpha1"]
    assert VERSION["served"] is True
    assert VERSION["storage"] is True
    assert VERSION["subresources"] == {"status": {}}


def test_the_schema_is_structural_and_documented() -> None:
    problems = []
    for path, node in walk(SCHEMA, "<root>"):
        if path == "<root>.metadata":
            # The apiserver allows nothing here but the type and a declared name (so a
            # CEL rule can point at it), not even a description.
            if node != {"type": "object", "properties": {"name": {"type": "string"}}}:
                problems.append(f"{path}: only 'type: object' and name are allowed")
            continue
        if path.startswith("<root>.metadata."):
            continue
        if node.get("x-kubernetes-int-or-string"):
            if node.get("anyOf") != [{"type": "integer"}, {"type": "string"}] or "type" in node:
                problems.append(f"{path}: int-or-string needs exactly anyOf integer|string")
        elif "type" not in node:
            problems.append(f"{path}: no type")
        if not node.get("description", "").strip():
            problems.append(f"{path}: no description")
        if node.get("x-kubernetes-preserve-unknown-fields") and path != "<root>.status.kopf":
            problems.append(f"{path}: unknown fields kept outside status.kopf")
        if (
            node.get("type") == "object"
            and "properties" not in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            problems.append(f"{path}: an object with no fields")
        for keyword in ("$ref", "oneOf", "allOf", "not", "additionalItems", "patternProperties"):
            if keyword in node:
                problems.append(f"{path}: {keyword} is not allowed in a structural schema")
        for required in node.get("required", []):
            if required not in node.get("properties", {}):
                problems.append(f"{path}: required field {required} is not a property")
    assert problems == []


def test_only_status_kopf_keeps_unknown_fields() -> None:
    kept = [p for p, n in walk(SCHEMA, "") if n.get("x-kubernetes-preserve-unknown-fields")]
    assert kept == [".status.kopf"]


def test_printer_columns_point_at_fields_that_exist() -> None:
    columns = VERSION["additionalPrinterColumns"]
    names = [col["name"] for col in columns if col.get("priority", 0) == 0]
    assert names == ["Version", "Phase", "Ready", "Endpoint", "Candidate", "Weight", "Age"]
    wide = [col["name"] for col in columns if col.get("priority", 0) == 1]
    assert wide == ["Desired", "Digest"]
    for column in columns:
        path = column["jsonPath"]
        if path == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        node = node_at(path)
        assert node["type"] == column["type"], column
        assert column.get("description")


def test_the_phase_enum_is_the_operators() -> None:
    assert tuple(node_at(".status.phase")["enum"]) == c.Phase.ALL


def test_patterns_are_the_parsers() -> None:
    """The CRD and spec.py check the same strings."""
    assert node_at(".spec.version")["pattern"] == spec_module.VERSION_PATTERN
    assert node_at(".spec.artifact.sha256")["pattern"] == spec_module.SHA256_PATTERN
    assert node_at(".spec.artifact.uri")["pattern"] == spec_module.S3_URI_PATTERN
    assert node_at(".spec.monitoring.drift.baselineUri")["pattern"] == spec_module.S3_URI_PATTERN
    assert node_at(".spec.archive.bucket")["pattern"] == spec_module.BUCKET_PATTERN
    for kind in ("requests", "limits"):
        quantity = node_at(f".spec.serving.resources.{kind}")["additionalProperties"]
        assert quantity["pattern"] == spec_module.QUANTITY_PATTERN
    assert node_at(".spec.artifact.format")["enum"] == list(spec_module.ARTIFACT_FORMATS)
    log = ".spec.decisionLog"
    assert node_at(f"{log}.bucket")["pattern"] == spec_module.BUCKET_PATTERN
    assert node_at(f"{log}.prefix")["pattern"] == spec_module.DECISION_PREFIX_PATTERN
    assert node_at(f"{log}.prefix")["maxLength"] == spec_module.MAX_PREFIX_LENGTH
    assert node_at(f"{log}.mode")["enum"] == list(spec_module.DECISION_LOG_MODES)
    column = node_at(f"{log}.redact")["items"]
    assert column["pattern"] == spec_module.REDACT_COLUMN_PATTERN
    assert column["maxLength"] == spec_module.MAX_COLUMN_LENGTH
    assert node_at(f"{log}.redact")["maxItems"] == spec_module.MAX_REDACT_COLUMNS
    secret = f"{log}.redactKeySecret"
    assert node_at(f"{secret}.name")["pattern"] == spec_module.SECRET_NAME_PATTERN
    assert node_at(f"{secret}.key")["pattern"] == spec_module.SECRET_KEY_PATTERN


def test_defaults_are_the_parsers() -> None:
    """A spec left empty means the same to the apiserver's defaulting and to spec.py."""
    model = parse_model(
        {
            "metadata": {"name": "m"},
            "spec": {"version": "1", "artifact": {"uri": "s3://models/k", "sha256": SHA}},
        }
    )
    assert node_at(".spec.artifact.format")["default"] == model.artifact.format
    assert node_at(".spec.serving.replicas")["default"] == model.serving.replicas
    assert node_at(".spec.serving.modelCacheSize")["default"] == model.serving.model_cache_size
    assert node_at(".spec.serving.modelCacheSize")["pattern"] == spec_module.QUANTITY_PATTERN
    assert node_at(".spec.rollout.readyTimeoutSeconds")["default"] == (
        model.rollout.ready_timeout_seconds
    )
    assert node_at(".spec.rollout.analysis.minRequests")["default"] == (
        model.rollout.analysis.min_requests
    )
    assert model.rollout.analysis.min_requests == spec_module.DEFAULT_MIN_REQUESTS
    assert node_at(".spec.retirement.drainSeconds")["default"] == model.retirement.drain_seconds
    assert node_at(".spec.monitoring.enabled")["default"] == model.monitoring.enabled
    assert node_at(".spec.monitoring.drift.psiThreshold")["default"] == (
        model.monitoring.drift.psi_threshold
    )
    log = model.decision_log
    for field, value in (
        ("enabled", log.enabled),
        ("prefix", log.prefix),
        ("mode", log.mode),
        ("flushSeconds", log.flush_seconds),
        ("maxRecords", log.max_records),
        ("queueRecords", log.queue_records),
        ("retentionDays", log.retention_days),
    ):
        assert node_at(f".spec.decisionLog.{field}")["default"] == value, field
    assert "default" not in node_at(".spec.decisionLog.bucket")  # unset: the archive bucket
    with_secret = parse_model(
        with_spec("decisionLog", {"redact": ["email"], "redactKeySecret": {"name": "k"}})
    )
    assert with_secret.decision_log.redact_key_secret is not None
    assert node_at(".spec.decisionLog.redactKeySecret.key")["default"] == (
        with_secret.decision_log.redact_key_secret.key
    )
    # Parents default to {} so that the apiserver fills their fields' defaults in.
    for parent in ("serving", "rollout", "retirement", "monitoring", "decisionLog"):
        assert node_at(f".spec.{parent}")["default"] == {}


def test_every_default_is_valid_under_its_own_schema() -> None:
    for path, node in walk(SCHEMA, ""):
        if "default" in node:
            errors = list(jsonschema.Draft4Validator(node).iter_errors(node["default"]))
            assert errors == [], path


def test_cel_rules_have_messages_and_the_digest_rule_is_a_transition_rule() -> None:
    rules = [(p, r) for p, n in walk(SCHEMA, "") for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 5
    for path, rule in rules:
        assert rule.get("message"), path
        assert "\n" not in rule["rule"] and "\n" not in rule["message"], path
        assert "\n" not in rule.get("messageExpression", ""), path
    spec_rules = node_at(".spec")["x-kubernetes-validations"]
    digest = [r for r in spec_rules if "oldSelf" in r["rule"]]
    assert len(digest) == 1
    assert "self.artifact.sha256 == oldSelf.artifact.sha256" in digest[0]["rule"]
    assert "can never change; publish a new version" in digest[0]["messageExpression"]
    history = [r for r in SCHEMA["x-kubernetes-validations"] if "history" in r["rule"]]
    assert len(history) == 1
    assert "oldSelf" in history[0]["rule"]  # a status write (spec unchanged) always passes
    name = [r for r in SCHEMA["x-kubernetes-validations"] if r.get("fieldPath") == ".metadata.name"]
    assert len(name) == 1
    for path, rule in rules:
        if "fieldPath" in rule:  # must name a declared field, relative to the rule
            assert node_at(path + rule["fieldPath"])["type"] in (
                "string", "integer", "number", "object", "array",
            )  # fmt: skip


def test_decision_log_rules_cover_what_the_parser_checks_across_fields() -> None:
    rules = {r["fieldPath"]: r for r in node_at(".spec.decisionLog")["x-kubernetes-validations"]}
    assert set(rules) == {".queueRecords", ".redactKeySecret"}
    assert "self.queueRecords >= self.maxRecords" in rules[".queueRecords"]["rule"]
    assert "has(self.redactKeySecret)" in rules[".redactKeySecret"]["rule"]
    assert rules[".redactKeySecret"]["reason"] == "FieldValueRequired"
    # the apiserver enforces unique entries for a list of type set (uniqueItems is not
    # allowed in a structural schema); the integration test checks it is rejected
    assert node_at(".spec.decisionLog.redact")["x-kubernetes-list-type"] == "set"
    assert "uniqueItems" not in node_at(".spec.decisionLog.redact")


# --- the examples ------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_against_the_schema_and_parse(path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    VALIDATOR.validate(body)
    model = parse_model(body)
    assert model.ref.name == "churn"
    assert model.ref.namespace == "default"


def test_the_examples_are_two_versions_of_one_model() -> None:
    v1, v2 = example("churn-v1.yaml"), example("churn-v2.yaml")
    assert [p.name for p in EXAMPLES] == ["churn-v1.yaml", "churn-v2.yaml"]
    assert v1["metadata"] == v2["metadata"]
    assert (v1["spec"]["version"], v2["spec"]["version"]) == ("1", "2")
    assert v1["spec"]["artifact"]["sha256"] != v2["spec"]["artifact"]["sha256"]
    for body in (v1, v2):
        digest = body["spec"]["artifact"]["sha256"]
        assert len(set(digest)) > 8, "a placeholder-looking digest"


def with_spec(path: str, value: Any) -> dict[str, Any]:
    body = example("churn-v1.yaml")
    node = body["spec"]
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return body


# The schema and the parser agree on each of these: both accept or both reject.
AGREEMENT: list[tuple[str, Any, bool]] = [
    ("version", "3", True),
    ("version", "2024.06.1-rc1", True),
    ("version", 3, False),
    ("version", "V3", False),
    ("version", "-3", False),
    ("version", "3.", False),
    ("version", "a" * 33, False),
    ("version", None, False),
    ("artifact.uri", "s3://models/a/b.joblib", True),
    ("artifact.uri", "http://models/a", False),
    ("artifact.uri", "s3://models/", False),
    ("artifact.uri", "s3://models/a/", False),
    ("artifact.uri", "s3://ab/a", False),
    ("artifact.uri", "s3://Models/a", False),
    ("artifact.uri", "s3://models/a b", False),
    ("artifact.sha256", SHA, True),
    ("artifact.sha256", SHA.upper(), False),
    ("artifact.sha256", SHA[:-1], False),
    ("artifact.sha256", None, False),
    ("artifact.format", "joblib", True),
    ("artifact.format", "pickle", False),
    ("serving.replicas", 0, True),
    ("serving.replicas", 100, True),
    ("serving.replicas", 101, False),
    ("serving.replicas", -1, False),
    ("serving.replicas", "2", False),
    ("serving.image", "registry.local/x:1", True),
    ("serving.image", "has space", False),
    ("serving.image", "", False),
    ("serving.resources.requests", {"cpu": "250m", "memory": 1048576}, True),
    ("serving.resources.requests", {"cpu": "lots"}, False),
    ("serving.resources.requests", {"cpu": "-1"}, False),
    ("serving.resources.limits", {"memory": "1.5Gi", "cpu": "1e3"}, True),
    ("serving.batching.maxBatchSize", 4096, True),
    ("serving.batching.maxBatchSize", 4097, False),
    ("serving.batching.maxBatchLatencyMs", 1000, True),
    ("serving.batching.maxBatchLatencyMs", 1001, False),
    ("serving.leafTables", False, True),
    ("serving.leafTables", "off", False),
    ("rollout.readyTimeoutSeconds", 10, True),
    ("rollout.readyTimeoutSeconds", 86400, True),
    ("rollout.readyTimeoutSeconds", 9, False),
    ("rollout.readyTimeoutSeconds", 86401, False),
    ("retirement.drainSeconds", 0, True),
    ("retirement.drainSeconds", 3600, True),
    ("retirement.drainSeconds", 3601, False),
    ("monitoring.enabled", False, True),
    ("monitoring.enabled", "no", False),
    ("monitoring.slo.p99LatencyMs", 0.5, True),
    ("monitoring.slo.p99LatencyMs", 0, False),
    ("monitoring.slo.errorRatio", 0, True),
    ("monitoring.slo.errorRatio", 1, True),
    ("monitoring.slo.errorRatio", 1.01, False),
    ("monitoring.drift.baselineUri", "ftp://x/y", False),
    ("monitoring.drift.psiThreshold", 10, True),
    ("monitoring.drift.psiThreshold", 0, False),
    ("archive.bucket", "model-archive", True),
    ("archive.bucket", "Model_Archive", False),
    ("archive.bucket", "ab", False),
    ("archive.retainDays", 36500, True),
    ("archive.retainDays", 36501, False),
    ("decisionLog.enabled", True, True),
    ("decisionLog.enabled", "yes", False),
    ("decisionLog.bucket", "decisions", True),
    ("decisionLog.bucket", "Decisions", False),
    ("decisionLog.bucket", "", False),
    ("decisionLog.prefix", "audit/decisions", True),
    ("decisionLog.prefix", "a.b_c-d", True),
    ("decisionLog.prefix", "/decisions", False),
    ("decisionLog.prefix", "decisions/", False),
    ("decisionLog.prefix", "a//b", False),
    ("decisionLog.prefix", "a b", False),
    ("decisionLog.prefix", "", False),
    ("decisionLog.prefix", "a" * 257, False),
    ("decisionLog.mode", "required", True),
    ("decisionLog.mode", "best-effort", True),
    ("decisionLog.mode", "always", False),
    ("decisionLog.mode", "", False),
    ("decisionLog.flushSeconds", 1, True),
    ("decisionLog.flushSeconds", 2.5, True),
    ("decisionLog.flushSeconds", 3600, True),
    ("decisionLog.flushSeconds", 0.5, False),
    ("decisionLog.flushSeconds", 3601, False),
    ("decisionLog.flushSeconds", "10", False),
    ("decisionLog.maxRecords", 1, True),
    ("decisionLog.maxRecords", 100000, True),
    ("decisionLog.maxRecords", 0, False),
    ("decisionLog.maxRecords", 100001, False),
    ("decisionLog.maxRecords", 1.5, False),
    ("decisionLog.queueRecords", 10000000, True),
    ("decisionLog.queueRecords", 10000001, False),
    ("decisionLog.queueRecords", 0, False),
    ("decisionLog.retentionDays", 1, True),
    ("decisionLog.retentionDays", 36500, True),
    ("decisionLog.retentionDays", 0, False),
    ("decisionLog.retentionDays", 36501, False),
    ("decisionLog.redact", [], True),
    ("decisionLog.redact", "email", False),
    ("decisionLog.redact", ["a,b"], False),
    ("decisionLog.redact", [" email"], False),
    ("decisionLog.redact", [""], False),
    ("decisionLog.redact", [f"c{i}" for i in range(101)], False),
    ("decisionLog.redactKeySecret", {"name": "hmac-key"}, True),
    ("decisionLog.redactKeySecret", {"name": "hmac-key", "key": "hmac.key_1"}, True),
    ("decisionLog.redactKeySecret", {"key": "k"}, False),
    ("decisionLog.redactKeySecret", {"name": "Hmac_Key"}, False),
    ("decisionLog.redactKeySecret", {"name": "k", "key": "a/b"}, False),
    ("decisionLog.redactKeySecret", "hmac-key", False),
]


@pytest.mark.parametrize(
    ("path", "value", "accepted"),
    AGREEMENT,
    ids=[f"{p}={v!r}" for p, v, _ in AGREEMENT],
)
def test_schema_and_parser_agree(path: str, value: Any, accepted: bool) -> None:
    body = with_spec(path, value)
    assert valid(body) is accepted
    if accepted:
        parse_model(body)
    else:
        with pytest.raises(SpecError):
            parse_model(body)


def test_unknown_and_missing_top_level_fields() -> None:
    body = example("churn-v1.yaml")
    del body["spec"]
    assert not valid(body)
    body = example("churn-v1.yaml")
    del body["spec"]["artifact"]
    assert not valid(body)


# --- status ------------------------------------------------------------------------


def test_a_status_as_the_operator_writes_it_validates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    conditions = [
        c.make_condition(c.READY, True, c.Reason.SERVING, "version 2 serving", 4, now),
        c.make_condition(c.DEGRADED, False, c.Reason.AS_EXPECTED, "", 4, now),
        c.make_condition(c.ARTIFACT_VERIFIED, "Unknown", c.Reason.VERIFICATION_PENDING, "", 4, now),
    ]
    body = example("churn-v2.yaml")
    body["status"] = {
        "observedGeneration": 4,
        "phase": "Serving",
        "activeVersion": "2",
        "digestPrefix": SHA[:12],
        "endpoint": "http://churn.default.svc:8080/v2/models/churn",
        "ready": "2/2",
        "readyReplicas": 2,
        "replicas": 2,
        "message": "version 2 serving",
        "conditions": conditions,
        "history": [
            {
                "version": "1",
                "sha256": "dc686ed969d076a4bf8983259c4beb09ea3fef373c7c0fbd7efd543815527486",
                "uri": "s3://models/default/churn/1/model.joblib",
                "deployedAt": "2026-01-01T00:00:00Z",
                "retiredAt": "2026-01-02T00:00:00Z",
                "reason": "SpecChanged",
                "archive": "s3://model-archive/default/churn/1/",
            },
            {
                "version": "2",
                "sha256": SHA,
                "uri": "s3://models/default/churn/2/model.joblib",
                "deployedAt": "2026-01-02T00:00:00Z",
            },
        ],
        "kopf": {"progress": {"anything": {"kopf": "writes"}}},
    }
    VALIDATOR.validate(body)
    for condition in conditions:
        assert set(condition) <= set(node_at(".status.conditions")["items"]["properties"])

    too_long = copy.deepcopy(body)
    too_long["status"]["history"] = body["status"]["history"][:1] * 51
    assert not valid(too_long)
    bad_phase = copy.deepcopy(body)
    bad_phase["status"]["phase"] = "Running"
    assert not valid(bad_phase)


def test_every_reason_fits_the_condition_schema() -> None:
    reason = jsonschema.Draft4Validator(
        node_at(".status.conditions")["items"]["properties"]["reason"]
    )
    kind = jsonschema.Draft4Validator(node_at(".status.conditions")["items"]["properties"]["type"])
    for name, value in vars(c.Reason).items():
        if name.isupper():
            reason.validate(value)
    for value in c.CONDITION_TYPES:
        kind.validate(value)


# --- kopf peering and kustomization -----------------------------------------------


def test_kopf_peering_crds() -> None:
    docs = list(yaml.safe_load_all((CRDS / "kopf-peering.yaml").read_text()))
    by_kind = {d["spec"]["names"]["kind"]: d for d in docs}
    assert set(by_kind) == {"ClusterKopfPeering", "KopfPeering"}
    assert by_kind["ClusterKopfPeering"]["metadata"]["name"] == "clusterkopfpeerings.kopf.dev"
    assert by_kind["ClusterKopfPeering"]["spec"]["scope"] == "Cluster"
    assert by_kind["KopfPeering"]["metadata"]["name"] == "kopfpeerings.kopf.dev"
    assert by_kind["KopfPeering"]["spec"]["scope"] == "Namespaced"
    for doc in docs:
        assert doc["spec"]["group"] == "kopf.dev"
        (version,) = doc["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["type"] == "object"
        assert status["x-kubernetes-preserve-unknown-fields"] is True


def test_kustomization_lists_every_crd_file() -> None:
    kustomization = yaml.safe_load((CRDS / "kustomization.yaml").read_text())
    files = {p.name for p in CRDS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


# --- the CRD objects themselves, against the apiextensions.k8s.io/v1 schema ---------

CRD_DOCS = [
    (f"{path.name}:{doc['metadata']['name']}", doc)
    for path in (CRD_FILE, CRDS / "kopf-peering.yaml")
    for doc in yaml.safe_load_all(path.read_text())
]


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("name", "doc"), CRD_DOCS, ids=[n for n, _ in CRD_DOCS])
def test_crds_validate_against_kubernetes_schema(
    kubernetes_version: str, name: str, doc: dict[str, Any]
) -> None:
    kubernetes_validate.validate(doc, kubernetes_version, strict=True)


def test_the_crd_schema_check_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(CRD)
    rule = broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"][0]
    rule["mesage"] = rule.pop("message")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_admission_policy_puts_on_the_operators_own_finalizer() -> None:
    """crds/admission names the finalizer in CEL text: the one kopf removes after the
    archive (a different name would hold every deletion for ever)."""
    from mlmodel_operator.settings import FINALIZER

    policy, binding = yaml.safe_load_all(
        (CRDS / "admission" / "archive-finalizer.yaml").read_text()
    )
    spec = policy["spec"]
    (mutation,) = spec["mutations"]
    assert f'finalizers: ["{FINALIZER}"]' in mutation["applyConfiguration"]["expression"]
    assert (
        f"'{FINALIZER}' in object.metadata.finalizers" in spec["matchConditions"][0]["expression"]
    )
    assert spec["failurePolicy"] == "Ignore"  # it never stands between a user and the API
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
