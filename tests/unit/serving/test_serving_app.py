"""The app's routes, through an in-process ASGI client."""

from __future__ import annotations

from typing import Any

import jsonschema
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from serving_helpers import FAKE_SHA, Client, ExplodingClassifier, make_settings, v2_body
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlmodel_serving.app import ROUTES, create_app
from mlmodel_serving.model import SklearnModel
from mlmodel_serving.openapi import openapi_document

ROW = [5.1, 3.5, 1.4, 0.2]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_health_and_server_metadata(client: Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status == 200 and ready.json() == {"ready": True}
    assert ready.headers[b"x-model-sha256"] == FAKE_SHA.encode()
    assert ready.headers[b"x-model-version"] == b"3"
    meta = client.get("/v2").json()
    assert meta["name"] == "mlmodel-serve" and meta["extensions"] == []


def test_not_ready_until_a_model_is_set(iris_model: SklearnModel) -> None:
    client = Client(create_app(make_settings(), None, CollectorRegistry()))
    try:
        assert client.get("/v2/health/live").status == 200
        assert client.get("/v2/health/ready").status == 503
        r = client.post("/v2/models/iris/infer", v2_body([ROW]))
        assert r.status == 503 and "still being fetched and verified" in r.json()["error"]
        client.app.set_model(iris_model)
        assert client.get("/v2/health/ready").status == 200
        assert client.post("/v2/models/iris/infer", v2_body([ROW])).status == 200
        client.app.start_draining()
        assert client.get("/v2/health/ready").status == 503
    finally:
        client.close()


def test_model_metadata(client: Client) -> None:
    import joblib
    import sklearn

    r = client.get("/v2/models/iris")
    assert r.status == 200
    meta = r.json()
    assert meta["name"] == "iris" and meta["versions"] == ["3"] and meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        {"name": "decision_function", "datatype": "FP64", "shape": [-1, 3]},
    ]
    params = meta["parameters"]
    assert params["version"] == "3" and params["sha256"] == FAKE_SHA
    assert params["sklearn"] == sklearn.__version__ and params["joblib"] == joblib.__version__
    assert params["numpy"] == np.__version__ and params["python"]
    assert client.get("/v2/models/iris/versions/3").json() == meta
    assert client.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    assert client.get("/v2/models/iris/versions/3/ready").status == 200
    assert client.get("/v1/models/iris").json() == {"name": "iris", "ready": True}


def test_infer_v2_equals_in_process_predict(
    client: Client,
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    iris_estimator: LogisticRegression,
) -> None:
    x = iris[0][::10]
    r = client.post(
        "/v2/models/iris/infer",
        {**v2_body(x.tolist(), outputs=["predict", "predict_proba"]), "id": "abc"},
    )
    assert r.status == 200
    assert r.headers[b"x-model-version"] == b"3"
    assert r.headers[b"x-model-sha256"] == FAKE_SHA.encode()
    assert r.headers[b"x-request-id"]
    body = r.json()
    assert body["model_name"] == "iris" and body["model_version"] == "3" and body["id"] == "abc"
    predict, proba = body["outputs"]
    assert predict == {
        "name": "predict",
        "shape": [len(x)],
        "datatype": "INT64",
        "data": iris_estimator.predict(x).tolist(),
    }
    assert proba["shape"] == [len(x), 3] and proba["datatype"] == "FP64"
    assert (
        np.array(proba["data"]).reshape(-1, 3).tolist() == iris_estimator.predict_proba(x).tolist()
    )


def test_infer_default_output_versioned_route_and_fp32(client: Client) -> None:
    r = client.post("/v2/models/iris/versions/3/infer", v2_body([ROW], datatype="FP32"))
    assert r.status == 200
    outputs = r.json()["outputs"]
    assert [o["name"] for o in outputs] == ["predict"] and outputs[0]["data"] == [0]
    only_proba = client.post(
        "/v2/models/iris/infer", v2_body([ROW], outputs=["predict_proba"])
    ).json()
    assert [o["name"] for o in only_proba["outputs"]] == ["predict_proba"]


def test_infer_v1(client: Client, iris_estimator: LogisticRegression) -> None:
    rows = [ROW, [6.7, 3.0, 5.2, 2.3]]
    r = client.post("/v1/models/iris:predict", {"instances": rows})
    assert r.status == 200 and r.headers[b"x-model-sha256"] == FAKE_SHA.encode()
    assert r.json() == {"predictions": iris_estimator.predict(np.array(rows)).tolist()}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/v2/models/iris/infer", b"{oops", 400, "not valid JSON"),
        ("POST", "/v2/models/iris/infer", v2_body([[1.0, 2.0, 3.0]]), 400, "expects 4"),
        (
            "POST",
            "/v2/models/iris/infer",
            v2_body([ROW], datatype="BYTES"),
            400,
            "must be a string",
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "shape": [4], "datatype": "FP64", "data": ROW}]},
            400,
            "expected a 2-D shape [N, 4]",
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            v2_body([ROW], outputs=["decision"]),
            400,
            "unknown output 'decision'",
        ),
        ("POST", "/v2/models/nope/infer", v2_body([ROW]), 404, "this server serves 'iris'"),
        ("POST", "/v2/models/iris/versions/9/infer", v2_body([ROW]), 404, "serves version '3'"),
        ("GET", "/v2/models/nope", b"", 404, "model 'nope' not found"),
        ("GET", "/v3/anything", b"", 404, "see /openapi.json"),
        ("GET", "/v2/models/iris/infer", b"", 405, "use POST"),
        ("DELETE", "/v2/health/live", b"", 405, "use GET"),
        ("POST", "/v1/models/iris:predict", {"instances": [[1, 2]]}, 400, "expects 4"),
        ("POST", "/v1/models/iris:predict", {"rows": []}, 400, "'instances'"),
    ],
)
def test_bad_requests_are_answered_with_a_message(
    client: Client, method: str, path: str, body: Any, status: int, message: str
) -> None:
    raw = body if isinstance(body, bytes) else __import__("orjson").dumps(body)
    r = client.call(method, path, raw)
    assert r.status == status, r.body
    assert message in r.json()["error"]
    assert r.json()["request_id"] == r.headers[b"x-request-id"].decode()
    # ...and the server keeps serving.
    assert client.post("/v2/models/iris/infer", v2_body([ROW])).status == 200


def test_oversized_body_is_413(client: Client) -> None:
    big = b"[" + b"1," * 40_000 + b"1]"
    r = client.call("POST", "/v2/models/iris/infer", big)
    assert r.status == 413 and "65536 bytes" in r.json()["error"]
    assert r.headers[b"x-model-sha256"] == FAKE_SHA.encode()


def test_model_error_is_500_with_request_id_and_the_server_keeps_serving(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    model = SklearnModel(ExplodingClassifier(), "iris", "3", FAKE_SHA)
    client = Client(create_app(make_settings(), model, registry))
    try:
        r = client.call(
            "POST",
            "/v2/models/iris/infer",
            __import__("orjson").dumps(v2_body([[666, 1, 1, 1]])),
            headers=[(b"x-request-id", b"trace-42")],
        )
        assert r.status == 500
        assert r.json() == {
            "error": "internal error while serving the request; request id trace-42",
            "request_id": "trace-42",
        }
        assert r.headers[b"x-request-id"] == b"trace-42"
        assert any(getattr(rec, "request_id", None) == "trace-42" for rec in caplog.records)
        assert client.post("/v2/models/iris/infer", v2_body([[1, 1, 1, 1]])).status == 200
    finally:
        client.close()


def test_metrics_count_what_happened(client: Client, registry: CollectorRegistry) -> None:
    for _ in range(3):
        client.post("/v2/models/iris/infer", v2_body([ROW, ROW]))
    client.post("/v2/models/iris/infer", v2_body([[1.0]]))
    client.post("/v1/models/iris:predict", {"instances": [ROW]})
    base = {"model": "iris", "protocol": "v2", "route": "/v2/models/{model_name}/infer"}
    assert sample(registry, "mlmodel_requests_total", **base, code="200") == 3
    assert sample(registry, "mlmodel_requests_total", **base, code="400") == 1
    assert sample(registry, "mlmodel_request_duration_seconds_count", **base) == 4
    v1 = {
        "model": "iris",
        "protocol": "v1",
        "route": "/v1/models/{model_name}:predict",
        "code": "200",
    }
    assert sample(registry, "mlmodel_requests_total", **v1) == 1
    assert sample(registry, "mlmodel_batch_size_sum", model="iris") == 7
    assert sample(registry, "mlmodel_predictions_total", model="iris", **{"class": "0"}) == 7
    assert sample(registry, "mlmodel_input_rows_total", model="iris") == 7
    assert sample(
        registry, "mlmodel_input_feature_mean", model="iris", feature="0"
    ) == pytest.approx(5.1)
    assert sample(registry, "mlmodel_model_ready", model="iris") == 1
    assert sample(registry, "mlmodel_model_load_seconds", model="iris") == 0.25
    text = client.get("/metrics")
    assert text.status == 200 and text.headers[b"content-type"].startswith(b"text/plain")
    assert b'mlmodel_model_info{joblib="' in text.body and FAKE_SHA.encode() in text.body


def test_regressor_metrics_and_outputs(
    regressor: LinearRegression, registry: CollectorRegistry
) -> None:
    model = SklearnModel(regressor, "iris", "1", FAKE_SHA)
    client = Client(create_app(make_settings(), model, registry))
    try:
        r = client.post("/v2/models/iris/infer", v2_body([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
        assert r.status == 200
        out = r.json()["outputs"][0]
        assert out["datatype"] == "FP64"
        assert (
            out["data"] == regressor.predict(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])).tolist()
        )
        assert sample(registry, "mlmodel_prediction_value_count", model="iris") == 2
        bad = client.post(
            "/v2/models/iris/infer", v2_body([[0.0, 0.0, 0.0]], outputs=["predict_proba"])
        )
        assert bad.status == 400 and "has outputs ['predict']" in bad.json()["error"]
    finally:
        client.close()


# -- OpenAPI kept true ------------------------------------------------------------------


def test_openapi_lists_exactly_the_routes(client: Client) -> None:
    doc = client.get("/openapi.json").json()
    assert client.app.model is not None
    assert doc == openapi_document(client.app.model.metadata())
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == {(r.method, r.template) for r in ROUTES}
    jsonschema.Draft202012Validator.check_schema({"$defs": doc["components"]["schemas"]})


def _validate(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> None:
    root = {**schema, "components": doc["components"]}
    jsonschema.Draft202012Validator(root).validate(value)


def test_live_responses_match_the_openapi_schemas(client: Client) -> None:
    doc = client.get("/openapi.json").json()
    calls: list[tuple[str, str, str, Any]] = [
        ("GET", "/v2", "/v2", None),
        ("GET", "/v2/health/live", "/v2/health/live", None),
        ("GET", "/v2/health/ready", "/v2/health/ready", None),
        ("GET", "/v2/models/iris", "/v2/models/{model_name}", None),
        ("GET", "/v2/models/iris/ready", "/v2/models/{model_name}/ready", None),
        (
            "GET",
            "/v2/models/iris/versions/3",
            "/v2/models/{model_name}/versions/{model_version}",
            None,
        ),
        (
            "GET",
            "/v2/models/iris/versions/3/ready",
            "/v2/models/{model_name}/versions/{model_version}/ready",
            None,
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            "/v2/models/{model_name}/infer",
            v2_body([ROW], outputs=["predict", "predict_proba"]),
        ),
        (
            "POST",
            "/v2/models/iris/versions/3/infer",
            "/v2/models/{model_name}/versions/{model_version}/infer",
            v2_body([ROW]),
        ),
        ("GET", "/v1/models/iris", "/v1/models/{model_name}", None),
        (
            "POST",
            "/v1/models/iris:predict",
            "/v1/models/{model_name}:predict",
            {"instances": [ROW]},
        ),
        ("POST", "/v2/models/nope/infer", "/v2/models/{model_name}/infer", v2_body([ROW])),
        ("POST", "/v2/models/iris/infer", "/v2/models/{model_name}/infer", {"inputs": []}),
    ]
    for method, path, template, payload in calls:
        op = doc["paths"][template][method.lower()]
        if payload is not None and "inputs" in payload and payload["inputs"]:
            _validate(doc, op["requestBody"]["content"]["application/json"]["schema"], payload)
        r = client.post(path, payload) if method == "POST" else client.get(path)
        documented = op["responses"][str(r.status)]
        _validate(doc, documented["content"]["application/json"]["schema"], r.json())
        for header in documented.get("headers", {}):
            assert header.encode() in r.headers
