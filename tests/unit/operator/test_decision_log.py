"""DecisionLogCheck: the DecisionLogReady condition from the bucket and the redact key.

The object store and the apiserver are small recording stand-ins here; the real MinIO and
kube-apiserver are in tests/integration/controller/test_decision_log.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from minio.error import S3Error
from model_specs import make_model

from mlmodel_operator.conditions import FALSE, TRUE, UNKNOWN, Reason, make_condition
from mlmodel_operator.decision_log import (
    BUCKET_RECHECK_SECONDS,
    BUCKETS_KEPT,
    DecisionLogCheck,
    decision_log_event,
)
from mlmodel_operator.kube import ApiError, Kube
from mlmodel_operator.plan import Event
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import ModelSpec
from mlmodel_operator.status import DecisionLogNote

SETTINGS = Settings(archive_bucket="model-archive")
ON = make_model(decisionLog={"enabled": True})
REDACT = {"enabled": True, "redact": ["email", "phone"], "redactKeySecret": {"name": "churn-hmac"}}


class Store:
    """The two ``minio.Minio`` calls ensure_bucket makes."""

    def __init__(self, buckets: set[str], error: str | None = None) -> None:
        self.buckets = buckets
        self.error = error
        self.calls: list[tuple[str, str]] = []

    def bucket_exists(self, bucket: str) -> bool:
        self.calls.append(("exists", bucket))
        if self.error:
            raise S3Error(None, self.error, "denied", bucket, "req", "host")  # type: ignore[arg-type]
        return bucket in self.buckets

    def make_bucket(self, bucket: str) -> None:
        self.calls.append(("make", bucket))
        self.buckets.add(bucket)


class Secrets(Kube):
    """Secrets by namespace and name, with their keys; ``forbidden`` answers 403."""

    def __init__(self, secrets: dict[tuple[str, str], set[str]], forbidden: bool = False) -> None:
        self.secrets = secrets
        self.forbidden = forbidden
        self.calls: list[tuple[str, str]] = []

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        self.calls.append((namespace, name))
        if self.forbidden:
            body = b'{"message": "secrets \\"churn-hmac\\" is forbidden"}'
            raise ApiError("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}", 403, body)
        keys = self.secrets.get((namespace, name))
        return None if keys is None else frozenset(keys)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def check(
    model: ModelSpec,
    store: Store | None,
    secrets: dict[tuple[str, str], set[str]] | None = None,
    **kw: Any,
) -> DecisionLogNote:
    return DecisionLogCheck(Secrets(secrets or {}, **kw), SETTINGS, store).check(model)


def test_disabled() -> None:
    store = Store(set())
    note = check(make_model(), store)
    assert note == DecisionLogNote(
        False,
        Reason.DECISION_LOG_DISABLED,
        "spec.decisionLog.enabled is false: the server writes no decision records",
    )
    assert store.calls == []  # nothing is looked at


def test_logging_names_the_location_and_the_mode() -> None:
    store = Store({"model-archive"})
    note = check(ON, store)
    assert note.status is True and note.reason == Reason.LOGGING
    assert note.message == (
        "decision records go to s3://model-archive/decisions/team-a/churn/ (mode best-effort)"
    )
    required = make_model(
        decisionLog={**REDACT, "bucket": "dl-bucket", "prefix": "a/b", "mode": "required"}
    )
    note = check(required, Store({"dl-bucket"}), {("team-a", "churn-hmac"): {"key"}})
    assert note.status is True
    assert note.message == (
        "decision records go to s3://dl-bucket/a/b/team-a/churn/ (mode required; email, phone "
        "stored as HMAC keyed with Secret 'churn-hmac' key 'key')"
    )


def test_a_missing_bucket_is_created_and_then_not_asked_about_for_a_while() -> None:
    store, clock = Store(set()), Clock()
    checker = DecisionLogCheck(Secrets({}), SETTINGS, store, clock=clock)
    assert checker.check(ON).status is True
    assert store.calls == [("exists", "model-archive"), ("make", "model-archive")]
    checker.check(ON)
    clock.now += BUCKET_RECHECK_SECONDS - 1
    checker.check(ON)
    assert len(store.calls) == 2  # cached
    clock.now += 2
    checker.check(ON)
    assert store.calls[2:] == [("exists", "model-archive")]


def test_the_buckets_remembered_are_bounded_in_number_and_age() -> None:
    """Buckets are named by users (spec.decisionLog.bucket): an operator that meets many
    keeps at most BUCKETS_KEPT, and none past the recheck interval."""
    store, clock = Store(set()), Clock()
    checker = DecisionLogCheck(Secrets({}), SETTINGS, store, clock=clock)
    models = [
        make_model(decisionLog={"enabled": True, "bucket": f"dl-{i:05d}"})
        for i in range(BUCKETS_KEPT + 10)
    ]
    for model in models:
        clock.now += 0.001
        assert checker.check(model).status is True
    assert len(checker._found) == BUCKETS_KEPT
    asked = len(store.calls)
    checker.check(models[-1])  # the newest is remembered: not asked about again
    assert len(store.calls) == asked
    checker.check(models[0])  # the oldest was forgotten first: asked about again
    assert store.calls[asked:] == [("exists", "dl-00000")]

    clock.now += BUCKET_RECHECK_SECONDS
    checker.check(ON)  # touching the map drops every entry past the recheck interval
    assert set(checker._found) == {"model-archive"}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"enabled": True, "bucket": "dl-bucket"}, "spec.decisionLog.bucket: 'dl-bucket'"),
        ({"enabled": True}, "the operator's archive bucket (MLMODEL_ARCHIVE_BUCKET; "),
    ],
    ids=["spec", "archive-bucket"],
)
def test_an_unusable_bucket_names_the_field_and_value(spec: dict[str, Any], field: str) -> None:
    store, clock = Store(set(), error="AccessDenied"), Clock()
    checker = DecisionLogCheck(Secrets({}), SETTINGS, store, clock=clock)
    note = checker.check(make_model(decisionLog=spec))
    assert note.status is False and note.reason == Reason.BUCKET_UNAVAILABLE
    assert note.message.startswith(field)
    assert "S3 error AccessDenied" in note.message
    assert "best-effort: the model is served regardless" in note.message
    checker.check(make_model(decisionLog=spec))
    assert len(store.calls) == 2  # a failure is not cached: asked again next time
    required = make_model(decisionLog={**spec, "mode": "required"})
    assert "mode is required: nothing is rolled out" in checker.check(required).message


def test_without_an_object_store_the_bucket_is_not_checked() -> None:
    note = check(ON, None)
    assert note.status == UNKNOWN and note.reason == Reason.BUCKET_NOT_CHECKED
    assert "'model-archive'" in note.message and "no object store" in note.message
    # a missing key is a problem, and a problem is reported before a doubt
    note = check(make_model(decisionLog=REDACT), None)
    assert note.status is False and note.reason == Reason.REDACT_KEY_MISSING


def test_a_missing_redact_secret_names_it() -> None:
    note = check(make_model(decisionLog=REDACT), Store({"model-archive"}))
    assert note.status is False and note.reason == Reason.REDACT_KEY_MISSING
    assert note.message.startswith(
        "spec.decisionLog.redactKeySecret.name: Secret 'churn-hmac' not found in namespace "
        "'team-a'; it must hold the HMAC key for the columns of spec.decisionLog.redact "
        "(email, phone) under the key 'key'"
    )
    assert "kubectl create secret generic churn-hmac -n team-a --from-literal=key=" in (
        note.message
    )
    assert note.message.endswith("the pods serve without the decision log until the key exists")


def test_a_secret_without_the_key_names_the_key() -> None:
    secrets = {("team-a", "churn-hmac"): {"hmac", "other"}}
    note = check(make_model(decisionLog=REDACT), Store({"model-archive"}), secrets)
    assert note.status is False and note.reason == Reason.REDACT_KEY_MISSING
    assert note.message.startswith(
        "spec.decisionLog.redactKeySecret.key: Secret 'churn-hmac' in namespace 'team-a' has "
        "no key 'key' (its keys: hmac, other)"
    )
    keyed = make_model(
        decisionLog={**REDACT, "redactKeySecret": {"name": "churn-hmac", "key": "hmac"}}
    )
    assert check(keyed, Store({"model-archive"}), secrets).status is True


def test_a_secret_the_operator_may_not_read_is_not_checked() -> None:
    note = check(make_model(decisionLog=REDACT), Store({"model-archive"}), forbidden=True)
    assert note.status == UNKNOWN and note.reason == Reason.REDACT_KEY_NOT_CHECKED
    assert "Secret 'churn-hmac' in namespace 'team-a' not checked" in note.message
    assert "resourceNames" in note.message


def test_no_redact_columns_no_secret_lookup() -> None:
    kube = Secrets({})
    model = make_model(decisionLog={"enabled": True, "redactKeySecret": {"name": "unused"}})
    assert DecisionLogCheck(kube, SETTINGS, Store({"model-archive"})).check(model).status is True
    assert kube.calls == []


def _status(*notes: tuple[str, str]) -> dict[str, Any]:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return {"conditions": [make_condition("DecisionLogReady", s, r, "", 1, t) for s, r in notes]}


def test_events_on_transitions_only() -> None:
    logging = DecisionLogNote(True, Reason.LOGGING, "decision records go to s3://...")
    missing = DecisionLogNote(False, Reason.REDACT_KEY_MISSING, "Secret 'k' not found")
    bucket = DecisionLogNote(False, Reason.BUCKET_UNAVAILABLE, "bucket down")
    off = DecisionLogNote(False, Reason.DECISION_LOG_DISABLED, "off")
    assert decision_log_event({}, off) is None  # never turned on: no Event for every model
    assert decision_log_event({}, logging) == Event("Normal", "Logging", logging.message)
    assert decision_log_event({}, missing) == Event("Warning", "RedactKeyMissing", missing.message)
    assert decision_log_event(_status((TRUE, "Logging")), logging) is None
    assert decision_log_event(_status((FALSE, "RedactKeyMissing")), missing) is None
    assert decision_log_event(_status((FALSE, "RedactKeyMissing")), bucket) == Event(
        "Warning", "BucketUnavailable", "bucket down"
    )
    assert decision_log_event(_status((TRUE, "Logging")), off) == Event("Normal", "Disabled", "off")
