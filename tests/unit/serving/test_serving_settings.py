"""Settings from the environment contract, overridden by flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlmodel_serving.artifacts import S3Config
from mlmodel_serving.settings import load_settings

SHA = "a" * 64
BASE = {
    "MLMODEL_MODEL_NAME": "churn",
    "MLMODEL_MODEL_VERSION": "3",
    "MLMODEL_ARTIFACT_URI": "s3://models/churn/3/model.joblib",
    "MLMODEL_ARTIFACT_SHA256": SHA,
    "MLMODEL_S3_ENDPOINT": "minio.team-a.svc:9000",
    "MLMODEL_S3_ACCESS_KEY": "ak",
    "MLMODEL_S3_SECRET_KEY": "sk-secret",
}


def test_environment_contract() -> None:
    s = load_settings(
        [],
        {
            **BASE,
            "MLMODEL_S3_SECURE": "true",
            "MLMODEL_S3_REGION": "eu-west-1",
            "MLMODEL_CACHE_DIR": "/cache",
            "MLMODEL_HTTP_HOST": "127.0.0.1",
            "MLMODEL_HTTP_PORT": "9000",
            "MLMODEL_MAX_BODY_BYTES": "2048",
            "MLMODEL_LOG_FORMAT": "text",
            "MLMODEL_MAX_BATCH_SIZE": "32",
            "MLMODEL_MAX_BATCH_LATENCY_MS": "5",
        },
    )
    assert (s.model_name, s.model_version, s.artifact_uri, s.artifact_sha256) == (
        "churn",
        "3",
        "s3://models/churn/3/model.joblib",
        SHA,
    )
    assert s.s3 == S3Config(
        "minio.team-a.svc:9000", "ak", "sk-secret", secure=True, region="eu-west-1"
    )
    assert s.cache_dir == Path("/cache") and (s.http_host, s.http_port) == ("127.0.0.1", 9000)
    assert (s.max_body_bytes, s.log_format) == (2048, "text")
    assert (s.max_batch_size, s.max_batch_latency_ms, s.batching) == (32, 5.0, True)
    assert "sk-secret" not in repr(s)


def test_defaults() -> None:
    s = load_settings(
        [], {k: v for k, v in BASE.items() if "S3" not in k} | {"MLMODEL_ARTIFACT_URI": "/m.joblib"}
    )
    assert s.s3 is None
    assert s.cache_dir == Path("/var/cache/mlmodel")
    assert (s.http_host, s.http_port, s.log_format) == ("0.0.0.0", 8080, "json")
    assert (s.max_batch_size, s.max_batch_latency_ms, s.batching) == (1024, 2.0, True)
    assert (s.inline_predict_ms, s.inline_alone_predict_ms, s.gil_switch_interval_ms) == (
        1.0,
        50.0,
        0.2,
    )
    assert s.leaf_tables is True


def test_leaf_tables_can_be_turned_off() -> None:
    assert load_settings([], {**BASE, "MLMODEL_LEAF_TABLES": "false"}).leaf_tables is False
    assert load_settings(["--leaf-tables", "off"], BASE).leaf_tables is False
    with pytest.raises(ValueError, match=r"MLMODEL_LEAF_TABLES \(--leaf-tables\)='maybe'"):
        load_settings(["--leaf-tables", "maybe"], BASE)


def test_tuning_from_the_environment_and_flags() -> None:
    env = {**BASE, "MLMODEL_INLINE_PREDICT_MS": "0", "MLMODEL_GIL_SWITCH_INTERVAL_MS": "0"}
    assert (
        load_settings([], env).inline_predict_ms,
        load_settings([], env).gil_switch_interval_ms,
    ) == (0, 0)
    s = load_settings(["--inline-predict-ms", "2.5", "--gil-switch-interval-ms", "1"], env)
    assert (s.inline_predict_ms, s.gil_switch_interval_ms) == (2.5, 1.0)


def test_flags_override_the_environment() -> None:
    s = load_settings(["--model-name", "other", "--port", "1234", "--max-batch-size", "0"], BASE)
    assert (s.model_name, s.http_port, s.batching) == ("other", 1234, False)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLMODEL_ARTIFACT_SHA256": "ABC"}, "64 lowercase hex"),
        ({"MLMODEL_ARTIFACT_SHA256": ""}, "64 lowercase hex"),
        ({"MLMODEL_MODEL_NAME": ""}, "MLMODEL_MODEL_NAME"),
        ({"MLMODEL_MODEL_NAME": "a/b"}, "may not contain"),
        ({"MLMODEL_ARTIFACT_URI": ""}, "MLMODEL_ARTIFACT_URI"),
        ({"MLMODEL_S3_ENDPOINT": ""}, "MLMODEL_S3_ENDPOINT"),
        ({"MLMODEL_S3_SECURE": "perhaps"}, "true or false"),
        ({"MLMODEL_HTTP_PORT": "http"}, "invalid numeric setting"),
        ({"MLMODEL_ARTIFACT_FORMAT": "onnx"}, "expected joblib"),
        ({"MLMODEL_HTTP_PORT": "70000"}, "1-65535"),
        ({"MLMODEL_MAX_BATCH_SIZE": "-1"}, "MLMODEL_MAX_BATCH_SIZE .*-1: expected >= 0"),
        ({"MLMODEL_MAX_BATCH_LATENCY_MS": "-1"}, "MLMODEL_MAX_BATCH_LATENCY_MS .*0 disables"),
        ({"MLMODEL_INLINE_PREDICT_MS": "-0.5"}, "MLMODEL_INLINE_PREDICT_MS .*-0.5: expected >= 0"),
        ({"MLMODEL_GIL_SWITCH_INTERVAL_MS": "-1"}, "MLMODEL_GIL_SWITCH_INTERVAL_MS .*5 ms"),
        ({"MLMODEL_INLINE_ALONE_PREDICT_MS": "-2"}, "MLMODEL_INLINE_ALONE_PREDICT_MS .*-2.0"),
    ],
)
def test_bad_settings_name_the_variable_and_the_accepted_values(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_settings([], {**BASE, **env})
