"""The decision record format and the decision log's settings: pure code, no server."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlmodel_serving.decisionlog import DecisionLogConfig
from mlmodel_serving.decisions import (
    REDACTED_ERROR,
    Decision,
    ModelIdentity,
    decode_table,
    encode_batch,
    input_columns,
    model_prefix,
    output_values,
    partition_key,
    read_table,
    redact_value,
)
from mlmodel_serving.settings import load_settings
from mlmodel_serving.tabular import Column, Columns

SHA = "ab" * 32
T0 = 1_764_633_600_123_456_789  # 2025-12-02T00:00:00.123456789Z


def table_ident(redact: frozenset[str] = frozenset()) -> ModelIdentity:
    columns = (Column("tenure", "FP64"), Column("plan", "BYTES"))
    return ModelIdentity("ns", "churn", "7", SHA, columns, redact, "sklearn")


def test_numeric_records_round_trip_bit_for_bit() -> None:
    ident = ModelIdentity(
        "ns", "iris", "2", SHA, input_columns(None, 3), predict_path="leaf-tables"
    )
    x = np.array([[0.1, 1e-300, -2.5], [math.nan, 3.0, 1 / 3]])
    proba = np.array([[0.25, 0.75], [1 / 3, 2 / 3]])
    decisions = [
        Decision(
            "a", T0, "v2", 200, 0.0015, x, {"predict": np.array([1, 0]), "predict_proba": proba}
        ),
        Decision("b", T0 + 1000, "grpc", 500, 0.002, x[:1], None, "internal error"),
    ]
    records = decode_table(read_table(encode_batch(decisions, ident)), "k")
    a, b = records
    assert a.request_id == "a" and a.protocol == "v2" and a.status == 200 and a.error is None
    assert a.time == dt.datetime(2025, 12, 2, 0, 0, 0, 123456, tzinfo=dt.UTC)
    assert (a.namespace, a.model, a.version, a.sha256) == ("ns", "iris", "2", SHA)
    assert a.rows == 2 and a.latency_ms == pytest.approx(1.5)
    assert a.predict_path == "leaf-tables" and a.key == "k"
    rebuilt = a.model_input()
    assert isinstance(rebuilt, np.ndarray)
    assert rebuilt.tobytes() == x.tobytes()  # NaN and the last bit included
    assert a.outputs == {"predict": [1, 0], "predict_proba": proba.tolist()}
    assert a.outputs["predict_proba"] == output_values(proba)
    assert b.status == 500 and b.error == "internal error" and b.outputs == {}


def test_table_records_keep_column_names_types_and_missing_values() -> None:
    cols = Columns(
        ("tenure", "plan"),
        (np.array([12.0, math.nan]), np.array(["basic", math.nan], dtype=object)),
    )
    decision = Decision("r", T0, "v1", 200, 0.001, cols, {"predict": np.array(["stay", "churn"])})
    data = encode_batch([decision], table_ident())
    schema = pq.read_schema(io.BytesIO(data))
    assert str(schema.field("input.tenure").type) == "list<element: double>"
    assert str(schema.field("input.plan").type) == "list<element: string>"
    (record,) = decode_table(read_table(data))
    rebuilt = record.model_input()
    assert isinstance(rebuilt, Columns)
    frame = rebuilt.frame()
    assert frame["plan"].iloc[0] == "basic" and pd.isna(frame["plan"].iloc[1])
    assert frame["tenure"].iloc[0] == 12.0 and math.isnan(frame["tenure"].iloc[1])
    assert record.outputs == {"predict": ["stay", "churn"]}
    # Pandas reads the file as it is: one row per request, one column per input.
    read = pd.read_parquet(io.BytesIO(data))
    assert list(read.columns[:3]) == ["request_id", "time", "namespace"]
    assert list(read["input.plan"].iloc[0]) == ["basic", None]


def test_redacted_columns_hold_only_keyed_hashes_and_errors_are_withheld() -> None:
    cols = Columns(("tenure", "plan"), (np.array([1.0]), np.array(["gold"], dtype=object)))
    ok = Decision("r1", T0, "v2", 200, 0.001, cols, {"predict": np.array([1])})
    failed = Decision("r2", T0, "v2", 400, 0.001, None, None, "column 'plan' got 'gold'")
    data = encode_batch([ok, failed], table_ident(frozenset({"plan"})), b"key")
    assert b"gold" not in data
    first, second = decode_table(read_table(data))
    expected = "hmac-sha256:" + hmac.new(b"key", b"gold", hashlib.sha256).hexdigest()
    assert first.inputs is not None and first.inputs["plan"] == [expected]
    assert first.inputs["tenure"] == [1.0]
    assert second.error == REDACTED_ERROR
    with pytest.raises(ValueError, match="plan"):
        first.model_input()
    with pytest.raises(ValueError, match="key"):
        encode_batch([ok], table_ident(frozenset({"plan"})), None)


def test_redaction_of_numbers_uses_the_float_repr_and_keeps_missing_values() -> None:
    assert redact_value(b"k", 42) == redact_value(b"k", 42.0)
    assert redact_value(b"k", 42.0) == (
        "hmac-sha256:" + hmac.new(b"k", b"42.0", hashlib.sha256).hexdigest()
    )
    assert redact_value(b"k", math.nan) is None and redact_value(b"k", None) is None
    assert redact_value(b"k", "x") != redact_value(b"other", "x")


def test_keys_read_by_model_version_and_day() -> None:
    ident = table_ident()
    at = dt.datetime(2026, 3, 2, 23, 59, tzinfo=dt.UTC)
    assert partition_key("decisions", ident, at, "f.parquet") == (
        "decisions/ns/churn/7/dt=2026-03-02/f.parquet"
    )
    assert model_prefix("decisions", "ns", "churn") == "decisions/ns/churn/"
    assert model_prefix("audit/decisions", "ns", "churn", "7") == "audit/decisions/ns/churn/7/"


def test_output_values_match_what_a_record_stores() -> None:
    assert output_values(np.array([1, 2], dtype=np.int32)) == [1, 2]
    assert output_values(np.array(["a", "b"], dtype=object)) == ["a", "b"]
    assert output_values(np.array([[0.5, 0.5]], dtype=np.float32)) == [[0.5, 0.5]]


# -- settings ---------------------------------------------------------------------------


BASE = {
    "MLMODEL_MODEL_NAME": "m",
    "MLMODEL_ARTIFACT_URI": "/tmp/m.joblib",
    "MLMODEL_ARTIFACT_SHA256": SHA,
    "MLMODEL_S3_ENDPOINT": "127.0.0.1:9000",
}


def test_the_decision_log_is_off_unless_asked_for() -> None:
    assert load_settings([], BASE).decision_log is None


def test_the_decision_log_settings_come_from_the_environment_and_flags() -> None:
    env = {
        **BASE,
        "MLMODEL_DECISION_LOG": "true",
        "MLMODEL_DECISION_LOG_BUCKET": "records",
        "MLMODEL_DECISION_LOG_MODE": "required",
        "MLMODEL_DECISION_LOG_REDACT": "ssn, name",
        "MLMODEL_DECISION_LOG_REDACT_KEY": "s3cret",
        "MLMODEL_NAMESPACE": "team-a",
        "MLMODEL_POD_NAME": "m-7-abc",
    }
    config = load_settings(["--decision-log-max-records", "50"], env).decision_log
    assert config is not None
    assert (config.bucket, config.mode, config.namespace, config.writer) == (
        "records",
        "required",
        "team-a",
        "m-7-abc",
    )
    assert config.redact == frozenset({"ssn", "name"}) and config.max_records == 50
    assert config.flush_seconds == 10.0 and config.retention_days == 183
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"MLMODEL_DECISION_LOG_BUCKET": ""}, "MLMODEL_DECISION_LOG_BUCKET"),
        ({"MLMODEL_DECISION_LOG_MODE": "sometimes"}, "best-effort or required"),
        ({"MLMODEL_DECISION_LOG_FLUSH_SECONDS": "0"}, "FLUSH_SECONDS 0.0"),
        ({"MLMODEL_DECISION_LOG_FLUSH_SECONDS": "soon"}, "FLUSH_SECONDS 'soon'"),
        ({"MLMODEL_DECISION_LOG_QUEUE_RECORDS": "5"}, "QUEUE_RECORDS 5"),
        ({"MLMODEL_DECISION_LOG_REDACT": "ssn"}, "REDACT_KEY"),
        ({"MLMODEL_DECISION_LOG_PREFIX": "/x/"}, "PREFIX '/x/'"),
    ],
)
def test_bad_decision_log_settings_name_the_variable(extra: dict[str, str], message: str) -> None:
    env = {**BASE, "MLMODEL_DECISION_LOG": "true", "MLMODEL_DECISION_LOG_BUCKET": "b", **extra}
    with pytest.raises(ValueError, match=message):
        load_settings([], env)


def test_the_decision_log_needs_the_object_store() -> None:
    env = {k: v for k, v in BASE.items() if k != "MLMODEL_S3_ENDPOINT"}
    env |= {"MLMODEL_DECISION_LOG": "true", "MLMODEL_DECISION_LOG_BUCKET": "b"}
    with pytest.raises(ValueError, match="MLMODEL_S3_ENDPOINT"):
        load_settings([], env)


def test_config_validates_directly() -> None:
    with pytest.raises(ValueError, match="MAX_RECORDS 0"):
        DecisionLogConfig(bucket="b", max_records=0)
