"""The Open Inference Protocol over gRPC: a real grpc.aio server on 127.0.0.1, called by
tritonclient.grpc with its defaults and by a bare gRPC channel for what tritonclient does
not send (typed contents, malformed raw data, metadata)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import joblib
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton
import uvloop
from prometheus_client import CollectorRegistry
from serving_helpers import FAKE_SHA, ExplodingClassifier, make_settings
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from tritonclient.utils import InferenceServerException

from mlmodel_serving import __version__
from mlmodel_serving.app import ServingApp, create_app
from mlmodel_serving.cli import serve
from mlmodel_serving.grpcserver import GrpcServer
from mlmodel_serving.model import SklearnModel
from mlmodel_serving.oip import grpc_predict_v2_pb2 as pb
from mlmodel_serving.settings import load_settings

REPO = Path(__file__).resolve().parents[3]
OIP = REPO / "serving" / "mlmodel_serving" / "oip"
SERVICE = "/inference.GRPCInferenceService/"
T = TypeVar("T")


class Running:
    """A GrpcServer for ``app`` on 127.0.0.1, its own event loop in a background thread."""

    def __init__(self, app: ServingApp) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = GrpcServer(app)
        self.port = self.run(self.server.start("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.port}"
        self.client = triton.InferenceServerClient(self.address)
        self.channel = grpc.insecure_channel(self.address)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def call(self, rpc: str, request: Any, response_type: Any, **kw: Any) -> tuple[Any, Any]:
        """A bare unary call: (response, the call, for its metadata)."""
        method = self.channel.unary_unary(
            SERVICE + rpc,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return method.with_call(request, timeout=10, **kw)

    def infer(self, request: pb.ModelInferRequest, **kw: Any) -> pb.ModelInferResponse:
        return self.call("ModelInfer", request, pb.ModelInferResponse, **kw)[0]

    def close(self) -> None:
        self.client.close()
        self.channel.close()
        self.run(self.server.shutdown(1.0))
        self.run(self.app.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def rpc_error(fn: Any, *args: Any, **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kw)
    return info.value


def triton_error(fn: Any, *args: Any, **kw: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        fn(*args, **kw)
    return info.value


def triton_input(name: str, arr: np.ndarray[Any, Any], datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(arr.shape), datatype)
    tensor.set_data_from_numpy(arr)
    return tensor


def outputs(*names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(n) for n in names]


# -- models ------------------------------------------------------------------------------


@pytest.fixture
def iris_server(iris_model: SklearnModel) -> Iterator[Running]:
    running = Running(create_app(make_settings(), iris_model, CollectorRegistry()))
    yield running
    running.close()


def churn_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n).astype(np.float64),
            "charges": np.round(rng.uniform(20.0, 120.0, n), 2),
            "contract": rng.choice(["month", "year", "two-year"], n).astype(object),
            "payment": rng.choice(["card", "bank", "check"], n).astype(object),
        }
    )


@pytest.fixture(scope="module")
def churn_pipeline() -> Pipeline:
    df = churn_frame(300, seed=1)
    score = -0.05 * df["tenure"] + 0.02 * df["charges"] + (df["contract"] == "month") * 1.5
    labels = np.where(score > score.median(), "churn", "stay")
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["tenure", "charges"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["contract", "payment"]),
        ]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=1000))]).fit(df, labels)


@pytest.fixture
def churn_server(churn_pipeline: Pipeline) -> Iterator[Running]:
    model = SklearnModel(churn_pipeline, "churn", "1", FAKE_SHA)
    settings = make_settings(model_name="churn", model_version="1")
    running = Running(create_app(settings, model, CollectorRegistry()))
    yield running
    running.close()


def churn_inputs(df: pd.DataFrame, column_shape: bool = False) -> list[triton.InferInput]:
    """One tensor per column; numbers FP64, text BYTES; shape [N], or [N, 1] for numbers."""
    tensors = []
    for name in df.columns:
        if df[name].dtype.kind == "f":
            values = df[name].to_numpy(dtype=np.float64)
            tensors.append(
                triton_input(name, values.reshape(-1, 1) if column_shape else values, "FP64")
            )
        else:
            tensors.append(triton_input(name, df[name].to_numpy(dtype=object), "BYTES"))
    return tensors


# -- inference with tritonclient's defaults ----------------------------------------------


@pytest.mark.parametrize("kind", ["onehot", "ordinal", "hgb"])
def test_every_example_churn_pipeline_over_grpc_as_in_process(kind: str) -> None:
    """The three mixed-type Pipelines of example_models (one-hot + LogisticRegression,
    ordinal + RandomForest, HistGradientBoosting with categorical features), missing
    numbers as NaN: the same bits as the fitted Pipeline on the same DataFrame."""
    from mlmodel_operator import example_models as ex

    pipeline = ex.fit_churn_pipeline(kind)
    model = SklearnModel(pipeline, "churn", "1", FAKE_SHA)
    model.use_leaf_tables()
    running = Running(create_app(make_settings(model_name="churn"), model, CollectorRegistry()))
    try:
        df, _ = ex.churn_frame(48, seed=31)
        df = df.dropna(subset=list(ex.CHURN_TEXT)).reset_index(drop=True)  # no null in BYTES
        result = running.client.infer(
            "churn", churn_inputs(df), outputs=outputs("predict", "predict_proba")
        )
        x = ex.as_categories(df) if kind == "hgb" else df
        labels = [v.decode() for v in result.as_numpy("predict").tolist()]
        assert labels == pipeline.predict(x).tolist()
        assert result.as_numpy("predict_proba").tobytes() == pipeline.predict_proba(x).tobytes()
    finally:
        running.close()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_iris_predictions_are_the_estimators_bit_for_bit(
    iris_server: Running,
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    iris_estimator: LogisticRegression,
    dtype: Any,
) -> None:
    x = iris[0][::3].astype(dtype)
    datatype = "FP64" if dtype is np.float64 else "FP32"
    result = iris_server.client.infer(
        "iris",
        [triton_input("input-0", x, datatype)],
        outputs=outputs("predict", "predict_proba"),
    )
    predict, proba = result.as_numpy("predict"), result.as_numpy("predict_proba")
    assert np.array_equal(predict, iris_estimator.predict(x))
    assert proba.dtype == np.float64 and proba.shape == (len(x), 3)
    assert np.array_equal(proba, iris_estimator.predict_proba(x))
    response = result.get_response()
    assert (response.model_name, response.model_version) == ("iris", "3")
    assert [o.datatype for o in response.outputs] == ["INT64", "FP64"]


def test_default_output_is_predict(
    iris_server: Running, iris_estimator: LogisticRegression
) -> None:
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    result = iris_server.client.infer("iris", [triton_input("input-0", x, "FP64")])
    assert [o.name for o in result.get_response().outputs] == ["predict"]
    assert np.array_equal(result.as_numpy("predict"), iris_estimator.predict(x))


@pytest.mark.parametrize("column_shape", [False, True], ids=["[N]", "[N,1]"])
def test_dataframe_pipeline_from_one_tensor_per_column(
    churn_server: Running, churn_pipeline: Pipeline, column_shape: bool
) -> None:
    df = churn_frame(40, seed=7)
    result = churn_server.client.infer(
        "churn",
        churn_inputs(df, column_shape),
        outputs=outputs("predict", "predict_proba"),
        parameters={"content_type": "pd"},
    )
    labels = result.as_numpy("predict")
    assert labels.dtype == object and isinstance(labels[0], bytes)
    assert [b.decode() for b in labels] == churn_pipeline.predict(df).tolist()
    assert {"churn", "stay"} == set(churn_pipeline.predict(df).tolist())
    assert np.array_equal(result.as_numpy("predict_proba"), churn_pipeline.predict_proba(df))
    kinds = {o.name: o.datatype for o in result.get_response().outputs}
    assert kinds == {"predict": "BYTES", "predict_proba": "FP64"}


def test_columns_in_any_order_without_a_content_type(
    churn_server: Running, churn_pipeline: Pipeline
) -> None:
    df = churn_frame(5, seed=8)
    result = churn_server.client.infer("churn", churn_inputs(df)[::-1])
    assert [b.decode() for b in result.as_numpy("predict")] == churn_pipeline.predict(df).tolist()


# -- metadata, health, request ids ------------------------------------------------------


def test_model_metadata_lists_the_real_columns(churn_server: Running) -> None:
    meta = churn_server.client.get_model_metadata("churn")
    assert (meta.name, list(meta.versions), meta.platform) == ("churn", ["1"], "sklearn")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("tenure", "FP64", [-1]),
        ("charges", "FP64", [-1]),
        ("contract", "BYTES", [-1]),
        ("payment", "BYTES", [-1]),
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("predict", "BYTES", [-1]),
        ("predict_proba", "FP64", [-1, 2]),
        ("decision_function", "FP64", [-1]),
    ]
    assert churn_server.client.get_model_metadata("churn", "1").name == "churn"
    err = triton_error(churn_server.client.get_model_metadata, "churn", "2")
    assert err.status() == "StatusCode.NOT_FOUND" and "version '2'" in err.message()


def test_iris_metadata_and_server_metadata(iris_server: Running) -> None:
    meta = iris_server.client.get_model_metadata("iris")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input-0", "FP64", [-1, 4])
    ]
    server = iris_server.client.get_server_metadata()
    assert (server.name, server.version, list(server.extensions)) == (
        "mlmodel-serve",
        __version__,
        [],
    )


def test_live_and_ready(iris_server: Running) -> None:
    client = iris_server.client
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "3")
    assert triton_error(client.is_model_ready, "nope").status() == "StatusCode.NOT_FOUND"
    assert triton_error(client.is_model_ready, "iris", "4").status() == "StatusCode.NOT_FOUND"
    iris_server.app.start_draining()  # shutdown has begun: not ready, still live
    assert client.is_server_live()
    assert not client.is_server_ready() and not client.is_model_ready("iris")


def test_a_server_still_loading_its_model() -> None:
    running = Running(create_app(make_settings(), None, CollectorRegistry()))
    try:
        client = running.client
        assert client.is_server_live() and not client.is_server_ready()
        assert not client.is_model_ready("iris")
        err = triton_error(client.get_model_metadata, "iris")
        assert err.status() == "StatusCode.UNAVAILABLE" and "retry" in err.message()
        x = np.zeros((1, 4))
        err = triton_error(client.infer, "iris", [triton_input("input-0", x, "FP64")])
        assert err.status() == "StatusCode.UNAVAILABLE"
    finally:
        running.close()


def test_request_id_and_model_identity_are_echoed(iris_server: Running) -> None:
    x = np.zeros((1, 4))
    result = iris_server.client.infer(
        "iris", [triton_input("input-0", x, "FP64")], request_id="r-1"
    )
    assert result.get_response().id == "r-1"

    request = raw_iris_request(np.zeros((2, 4)))
    request.id = "r-2"
    response, call = iris_server.call("ModelInfer", request, pb.ModelInferResponse)
    metadata = dict(call.initial_metadata())
    assert response.id == "r-2" and metadata["x-request-id"] == "r-2"
    assert (metadata["x-model-version"], metadata["x-model-sha256"]) == ("3", FAKE_SHA)

    # without an id in the request: the x-request-id metadata, else a new one
    request.id = ""
    response, call = iris_server.call(
        "ModelInfer", request, pb.ModelInferResponse, metadata=[("x-request-id", "from-header")]
    )
    assert response.id == "from-header" == dict(call.initial_metadata())["x-request-id"]
    first = iris_server.infer(request).id
    second = iris_server.infer(request).id
    assert first and second and first != second

    # errors carry the id too
    request.model_name = "nope"
    err = rpc_error(
        iris_server.call,
        "ModelInfer",
        request,
        pb.ModelInferResponse,
        metadata=[("x-request-id", "bad-1")],
    )
    assert dict(err.initial_metadata())["x-request-id"] == "bad-1"

    # a request id that is not ASCII stays in the response body, not in the metadata
    request.model_name, request.id = "iris", "zähler-1"
    response, call = iris_server.call("ModelInfer", request, pb.ModelInferResponse)
    assert response.id == "zähler-1" and "x-request-id" not in dict(call.initial_metadata())


# -- typed contents ----------------------------------------------------------------------


def raw_iris_request(x: np.ndarray[Any, Any]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input-0", datatype="FP64", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f8").tobytes())
    return request


def typed_iris_request(x: np.ndarray[Any, Any], datatype: str = "FP64") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="input-0", datatype=datatype, shape=list(x.shape))
    field = {"FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents"}
    getattr(tensor.contents, field[datatype]).extend(x.reshape(-1).tolist())
    request.outputs.add(name="predict_proba")
    return request


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT64"])
def test_typed_contents_give_the_same_predictions(
    iris_server: Running, iris_estimator: LogisticRegression, datatype: str
) -> None:
    dtype = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64}[datatype]
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
    x = (x * 10).astype(dtype) if datatype == "INT64" else x.astype(dtype)
    response = iris_server.infer(typed_iris_request(x, datatype))
    assert [o.name for o in response.outputs] == ["predict_proba"]
    assert list(response.outputs[0].shape) == [3, 3]
    proba = np.frombuffer(response.raw_output_contents[0], "<f8").reshape(3, 3)
    assert np.array_equal(proba, iris_estimator.predict_proba(x))


def test_typed_bytes_contents_for_a_dataframe_model(
    churn_server: Running, churn_pipeline: Pipeline
) -> None:
    df = churn_frame(6, seed=9)
    request = pb.ModelInferRequest(model_name="churn")
    for name in df.columns:
        tensor = request.inputs.add(name=name, shape=[len(df)])
        if df[name].dtype.kind == "f":
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.extend(df[name].tolist())
        else:
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.extend(v.encode() for v in df[name])
    response = churn_server.infer(request)
    raw = response.raw_output_contents[0]
    labels, pos = [], 0
    while pos < len(raw):
        size = int.from_bytes(raw[pos : pos + 4], "little")
        labels.append(raw[pos + 4 : pos + 4 + size].decode())
        pos += 4 + size
    assert labels == churn_pipeline.predict(df).tolist()


# -- errors ------------------------------------------------------------------------------


def invalid(running: Running, request: pb.ModelInferRequest) -> str:
    err = rpc_error(running.infer, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    return str(err.details())


def test_unknown_model_is_not_found(iris_server: Running) -> None:
    x = np.zeros((1, 4))
    err = triton_error(iris_server.client.infer, "nope", [triton_input("input-0", x, "FP64")])
    assert err.status() == "StatusCode.NOT_FOUND"
    assert "'nope' not found" in err.message() and "'iris'" in err.message()
    err = triton_error(
        iris_server.client.infer, "iris", [triton_input("input-0", x, "FP64")], model_version="9"
    )
    assert err.status() == "StatusCode.NOT_FOUND"
    # an unknown model is reported before its inputs are looked at
    request = raw_iris_request(x)
    request.model_name = "nope"
    request.raw_input_contents[0] = b"junk"
    assert rpc_error(iris_server.infer, request).code() == grpc.StatusCode.NOT_FOUND


def test_a_missing_column_is_named(churn_server: Running) -> None:
    df = churn_frame(3, seed=2)
    inputs = [t for t in churn_inputs(df) if t.name() != "payment"]
    err = triton_error(churn_server.client.infer, "churn", inputs)
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'payment'" in err.message() and "missing" in err.message()


def test_bad_requests_are_invalid_argument(iris_server: Running) -> None:
    x = np.zeros((2, 4))
    request = raw_iris_request(x)
    request.raw_input_contents[0] = request.raw_input_contents[0][:-8]
    message = invalid(iris_server, request)
    assert "'input-0'" in message and "56 bytes" in message and "needs 64" in message

    request = raw_iris_request(x)
    request.raw_input_contents.append(b"")
    assert "raw_input_contents has 2 entries" in invalid(iris_server, request)

    request = typed_iris_request(x)
    request.inputs[0].contents.fp64_contents.append(1.0)
    message = invalid(iris_server, request)
    assert "'input-0'" in message and "9 elements" in message and "needs 8" in message

    request = typed_iris_request(x)
    request.inputs[0].datatype = "FP32"
    assert "contents.fp32_contents" in invalid(iris_server, request)

    request = typed_iris_request(x)
    request.inputs[0].datatype = "FP16"
    assert "raw_input_contents" in invalid(iris_server, request)

    request = typed_iris_request(x)
    request.inputs[0].datatype = "FLOAT"
    assert "datatype 'FLOAT' is not supported" in invalid(iris_server, request)

    request = typed_iris_request(x)
    del request.inputs[0].shape[:]
    request.inputs[0].shape.extend([2, -4])
    assert "shape" in invalid(iris_server, request)

    request = raw_iris_request(x)
    request.inputs[0].contents.fp64_contents.extend([1.0] * 8)
    assert "one way or the other" in invalid(iris_server, request)

    request = pb.ModelInferRequest(model_name="iris")
    assert "no inputs" in invalid(iris_server, request)

    request = raw_iris_request(x)
    request.inputs.add(name="input-0", datatype="FP64", shape=[2, 4])
    request.raw_input_contents.append(x.tobytes())
    assert "more than once" in invalid(iris_server, request)

    request = raw_iris_request(x)
    request.parameters["content_type"].int64_param = 1
    assert "string_param" in invalid(iris_server, request)

    request = raw_iris_request(x)
    request.outputs.add(name="transform")
    assert "unknown output 'transform'" in invalid(iris_server, request)

    request = raw_iris_request(np.zeros((2, 3)))
    assert "3 features" in invalid(iris_server, request)

    # typed floats are checked as raw ones are: infinity is refused; NaN (a missing
    # value) reaches the model, and LogisticRegression refuses it
    request = typed_iris_request(x)
    request.inputs[0].contents.fp64_contents[0] = float("inf")
    assert "'input-0'" in invalid(iris_server, request)
    request.inputs[0].contents.fp64_contents[0] = float("nan")
    assert "NaN" in invalid(iris_server, request)

    # the server still answers
    assert iris_server.client.is_server_live()
    assert len(iris_server.infer(raw_iris_request(x)).outputs) == 1


def test_typed_contents_out_of_range_and_bad_text(churn_server: Running) -> None:
    request = pb.ModelInferRequest(model_name="churn")
    tensor = request.inputs.add(name="contract", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b"\xff\xfe")
    assert "not UTF-8" in invalid(churn_server, request)

    request = pb.ModelInferRequest(model_name="churn")
    tensor = request.inputs.add(name="tenure", datatype="INT8", shape=[1])
    tensor.contents.int_contents.append(300)
    assert "outside the range of INT8" in invalid(churn_server, request)


def test_a_message_over_the_body_limit_is_resource_exhausted(iris_server: Running) -> None:
    x = np.zeros((3000, 4))  # 96 kB of FP64 against the test settings' 64 KiB
    err = triton_error(iris_server.client.infer, "iris", [triton_input("input-0", x, "FP64")])
    assert err.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert iris_server.client.is_server_live()


def test_a_failing_model_is_internal_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    model = SklearnModel(ExplodingClassifier(), "iris", "3", FAKE_SHA)
    running = Running(create_app(make_settings(), model, CollectorRegistry()))
    try:
        x = np.array([[666.0, 0.0, 0.0, 0.0]])
        with caplog.at_level(logging.ERROR, logger="mlmodel_serving"):
            err = triton_error(
                running.client.infer, "iris", [triton_input("input-0", x, "FP64")], request_id="x-9"
            )
        assert err.status() == "StatusCode.INTERNAL"
        assert err.message() == "internal error; request id x-9"
        logged = [r for r in caplog.records if getattr(r, "request_id", None) == "x-9"]
        assert logged and logged[0].exc_info is not None
        assert "boom inside the model" in caplog.text
        ok = running.client.infer("iris", [triton_input("input-0", x * 0 + 1, "FP64")])
        assert ok.as_numpy("predict").tolist() == [1]
    finally:
        running.close()


def test_requests_are_counted_with_their_http_equivalent_status(iris_server: Running) -> None:
    x = np.zeros((1, 4))
    iris_server.client.infer("iris", [triton_input("input-0", x, "FP64")])
    request = raw_iris_request(x)
    request.raw_input_contents[0] = b"1"
    invalid(iris_server, request)
    triton_error(iris_server.client.get_model_metadata, "iris", "7")
    iris_server.client.is_server_ready()
    text = iris_server.app.metrics.render().decode()
    for route, code in [
        ("ModelInfer", "200"),
        ("ModelInfer", "400"),
        ("ServerReady", "200"),
        ("ModelMetadata", "404"),
    ]:
        assert (
            f'mlmodel_requests_total{{code="{code}",model="iris",protocol="grpc",route="{route}"}} 1.0'
            in text
        ), text


class BlockingClassifier:
    """predict waits until released: a request that stays in flight."""

    n_features_in_ = 4
    classes_ = np.array([0, 1])

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        self.entered.set()
        self.release.wait(10)
        return np.zeros(len(x), dtype=np.int64)


def test_calls_in_flight_count_as_inference_connections() -> None:
    """The predictor's batching and inline decisions see gRPC calls next to HTTP ones."""
    estimator = BlockingClassifier()
    app = create_app(
        make_settings(max_batch_size=0),
        SklearnModel(estimator, "iris", "3", FAKE_SHA),
        CollectorRegistry(),
    )
    app.connection_count = lambda: 2  # as the HTTP server reports its connections
    running = Running(app)
    try:
        assert app.connection_count() == 2
        x = np.zeros((1, 4))
        caller = threading.Thread(
            target=running.client.infer, args=("iris", [triton_input("input-0", x, "FP64")])
        )
        caller.start()
        assert estimator.entered.wait(10)
        assert app.connection_count() == 3
        estimator.release.set()
        caller.join(10)
        assert app.connection_count() == 2
    finally:
        estimator.release.set()
        running.close()


def test_unimplemented_methods_of_the_protocol(iris_server: Running) -> None:
    err = triton_error(iris_server.client.get_model_config, "iris")
    assert err.status() == "StatusCode.UNIMPLEMENTED"


# -- the generated code, settings, and mlmodel-serve -------------------------------------


def test_the_generated_code_is_up_to_date(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "gen-grpc.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name in ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi"):
        assert (tmp_path / name).read_bytes() == (OIP / name).read_bytes(), (
            f"{name} is not what hack/gen-grpc.sh generates from grpc_predict_v2.proto: "
            "run hack/gen-grpc.sh and commit the result"
        )
    assert not list(OIP.glob("*_pb2_grpc.py"))


def test_the_messages_are_the_protocols_on_the_wire() -> None:
    """Field numbers and types as tritonclient's own copy of the protocol has them."""
    from google.protobuf import descriptor_pb2
    from tritonclient.grpc import service_pb2

    def fields(file: Any) -> dict[str, list[tuple[Any, ...]]]:
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        found: dict[str, list[tuple[Any, ...]]] = {}

        def walk(messages: Any, prefix: str) -> None:
            for m in messages:
                found[prefix + m.name] = [
                    (f.name, f.number, f.type, f.label, f.type_name)
                    + ((m.oneof_decl[f.oneof_index].name,) if f.HasField("oneof_index") else ())
                    for f in m.field
                ]
                walk(m.nested_type, f"{prefix}{m.name}.")

        walk(proto.message_type, "")
        return found

    ours, theirs = fields(pb.DESCRIPTOR), fields(service_pb2.DESCRIPTOR)
    assert len(ours) == 23
    for name, layout in ours.items():
        assert layout == theirs[name], name
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in service.methods] == [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    ]


BASE_ENV = {
    "MLMODEL_MODEL_NAME": "iris",
    "MLMODEL_ARTIFACT_URI": "/m.joblib",
    "MLMODEL_ARTIFACT_SHA256": "a" * 64,
}


def test_grpc_port_setting() -> None:
    assert load_settings([], BASE_ENV).grpc_port == 8081
    assert load_settings([], BASE_ENV | {"MLMODEL_GRPC_PORT": "9001"}).grpc_port == 9001
    assert load_settings(["--grpc-port", "0"], BASE_ENV).grpc_port == 0  # gRPC off
    with pytest.raises(ValueError, match=r"invalid gRPC port 70000.*or 0 to disable"):
        load_settings(["--grpc-port", "70000"], BASE_ENV)
    with pytest.raises(ValueError, match="are both 8081"):
        load_settings(["--port", "8081"], BASE_ENV)
    with pytest.raises(ValueError, match="invalid numeric setting"):
        load_settings([], BASE_ENV | {"MLMODEL_GRPC_PORT": "grpc"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlmodel_serve_answers_grpc_next_to_http_under_uvloop(
    tmp_path: Path, iris_estimator: LogisticRegression, caplog: pytest.LogCaptureFixture
) -> None:
    """serve() as mlmodel-serve runs it (uvloop): gRPC on its port, stopped by SIGTERM."""
    path = tmp_path / "iris.joblib"
    joblib.dump(iris_estimator, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    http_port, grpc_port = free_port(), free_port()
    settings = make_settings(
        artifact_uri=str(path),
        artifact_sha256=sha,
        cache_dir=tmp_path / "cache",
        http_host="127.0.0.1",
        http_port=http_port,
        grpc_port=grpc_port,
        graceful_timeout=2.0,
    )
    seen: dict[str, Any] = {}

    def client() -> None:
        try:
            c = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with contextlib.suppress(InferenceServerException):
                    if c.is_server_ready():
                        break
                time.sleep(0.05)
            x = np.array([[5.1, 3.5, 1.4, 0.2]])
            seen["predict"] = c.infer("iris", [triton_input("input-0", x, "FP64")]).as_numpy(
                "predict"
            )
            c.close()
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=client)
    # serve() handles SIGTERM from its start; should it fail before that, the signal must
    # not end the test run.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        with caplog.at_level(logging.INFO, logger="mlmodel_serving"):
            thread.start()
            code = uvloop.run(serve(settings))
        thread.join(timeout=10)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 0
    assert seen["predict"].tolist() == iris_estimator.predict([[5.1, 3.5, 1.4, 0.2]]).tolist()
    listening = next(r for r in caplog.records if r.getMessage() == "listening")
    assert (listening.__dict__["port"], listening.__dict__["grpc_port"]) == (http_port, grpc_port)


def test_mlmodel_serve_refuses_to_start_on_a_busy_grpc_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = make_settings(
            http_host="127.0.0.1",
            http_port=free_port(),
            grpc_port=busy.getsockname()[1],
            cache_dir=tmp_path / "cache",
        )
        with caplog.at_level(logging.ERROR, logger="mlmodel_serving"):
            assert asyncio.run(serve(settings)) == 1
    assert "cannot listen for gRPC" in caplog.text and "MLMODEL_GRPC_PORT" in caplog.text
