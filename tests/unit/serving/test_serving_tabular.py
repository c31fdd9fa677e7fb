"""Models fitted on DataFrames (numbers and text), served from named, typed columns.

Every way of calling (KServe V1 rows as objects or arrays, V2 one tensor per column in
JSON, MLServer's ``content_type: "pd"``, the binary data extension as tritonclient
encodes it) must give exactly what the fitted Pipeline gives in-process on the same
DataFrame, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from serving_helpers import FAKE_SHA, Client, make_settings
from sklearn.linear_model import LogisticRegression

from mlmodel_operator.example_models import (
    CHURN_NUMERIC,
    CHURN_TEXT,
    as_categories,
    churn_frame,
    fit_churn_pipeline,
)
from mlmodel_serving.app import create_app
from mlmodel_serving.model import SklearnModel
from mlmodel_serving.tabular import Column, infer_columns

KINDS = ("onehot", "ordinal", "hgb")
INFER = "/v2/models/churn/infer"
PREDICT = "/v1/models/churn:predict"


@pytest.fixture(scope="module")
def pipelines() -> dict[str, Any]:
    return {kind: fit_churn_pipeline(kind) for kind in KINDS}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Rows the models never saw, with missing values in a number and a text column."""
    df, _ = churn_frame(40, seed=99)
    df.loc[3, "total_charges"] = np.nan
    df.loc[5, "payment_method"] = np.nan
    df.loc[7, "contract"] = "a-contract-never-seen"  # unknown category: the encoder's rule
    return df


def make_client(estimator: Any, **settings: Any) -> Client:
    model = SklearnModel(estimator, "churn", "1", FAKE_SHA)
    model.use_leaf_tables()
    return Client(
        create_app(make_settings(model_name="churn", **settings), model, CollectorRegistry())
    )


@pytest.fixture(params=KINDS)
def served(request: pytest.FixtureRequest, pipelines: dict[str, Any]) -> Iterator[Any]:
    client = make_client(pipelines[request.param])
    yield pipelines[request.param], client
    client.close()


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _columns(df: pd.DataFrame) -> dict[str, list[Any]]:
    return {c: [_json_value(v) for v in df[c].tolist()] for c in df.columns}


def v2_columns(df: pd.DataFrame, shape_2d: bool = False, **extra: Any) -> dict[str, Any]:
    inputs = []
    for name, values in _columns(df).items():
        datatype = "BYTES" if name in CHURN_TEXT else "FP64"
        shape = [len(values), 1] if shape_2d else [len(values)]
        inputs.append({"name": name, "shape": shape, "datatype": datatype, "data": values})
    return {"inputs": inputs, **extra}


def v1_objects(df: pd.DataFrame) -> dict[str, Any]:
    return {
        "instances": [{k: _json_value(v) for k, v in row.items()} for row in df.to_dict("records")]
    }


def v1_arrays(df: pd.DataFrame) -> dict[str, Any]:
    return {"instances": [[_json_value(v) for v in row] for row in df.itertuples(index=False)]}


def expected(pipeline: Any, df: pd.DataFrame) -> dict[str, np.ndarray[Any, Any]]:
    x = as_categories(df) if type(pipeline).__name__.startswith("HistGradient") else df
    return {"predict": pipeline.predict(x), "predict_proba": pipeline.predict_proba(x)}


def outputs_of(reply_json: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    out = {}
    for tensor in reply_json["outputs"]:
        dtype = object if tensor["datatype"] == "BYTES" else np.float64
        out[tensor["name"]] = np.array(tensor["data"], dtype=dtype).reshape(tensor["shape"])
    return out


def assert_same(
    got: dict[str, np.ndarray[Any, Any]], want: dict[str, np.ndarray[Any, Any]]
) -> None:
    for name, arr in got.items():
        assert arr.tolist() == want[name].tolist(), name  # exact values, not closeness
        if arr.dtype.kind == "f":
            assert arr.tobytes() == want[name].astype(np.float64).tobytes(), name


# -- the schema read from the model ------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_columns_and_their_types_are_read_from_the_fitted_model(
    kind: str, pipelines: dict[str, Any]
) -> None:
    columns = infer_columns(pipelines[kind])
    assert columns == tuple(Column(c, "FP64") for c in CHURN_NUMERIC) + tuple(
        Column(c, "BYTES") for c in CHURN_TEXT
    )


def test_a_model_fitted_on_arrays_has_no_columns() -> None:
    clf = LogisticRegression().fit(np.array([[0.0, 1.0], [1.0, 0.0]]), [0, 1])
    assert infer_columns(clf) is None


def test_metadata_lists_the_real_inputs(served: Any) -> None:
    _, client = served
    meta = client.get("/v2/models/churn").json()
    assert meta["inputs"] == [
        {"name": c, "datatype": "FP64", "shape": [-1]} for c in CHURN_NUMERIC
    ] + [{"name": c, "datatype": "BYTES", "shape": [-1]} for c in CHURN_TEXT]
    assert meta["parameters"]["content_type"] == "pd"
    assert meta["outputs"][0] == {"name": "predict", "datatype": "BYTES", "shape": [-1]}


# -- every way of calling gives the in-process answer ----------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda df: v2_columns(df, outputs=[{"name": "predict"}, {"name": "predict_proba"}]),
        lambda df: v2_columns(
            df,
            shape_2d=True,
            parameters={"content_type": "pd"},
            outputs=[{"name": "predict"}, {"name": "predict_proba"}],
        ),
        lambda df: {
            "inputs": [
                {
                    "name": "rows",
                    "shape": [len(df), df.shape[1]],
                    "datatype": "BYTES",
                    "data": v1_arrays(df)["instances"],
                }
            ],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
        },
    ],
    ids=["v2-columns", "v2-pd-columns-n1", "v2-mixed-rows"],
)
def test_v2_json_predicts_like_the_pipeline(served: Any, frame: pd.DataFrame, encode: Any) -> None:
    pipeline, client = served
    reply = client.post(INFER, encode(frame))
    assert reply.status == 200, reply.body
    got = outputs_of(reply.json())
    assert_same(got, expected(pipeline, frame))
    assert reply.json()["outputs"][0]["datatype"] == "BYTES"


@pytest.mark.parametrize("encode", [v1_objects, v1_arrays], ids=["objects", "arrays"])
def test_v1_rows_predict_like_the_pipeline(served: Any, frame: pd.DataFrame, encode: Any) -> None:
    pipeline, client = served
    reply = client.post(PREDICT, encode(frame))
    assert reply.status == 200, reply.body
    assert reply.json()["predictions"] == expected(pipeline, frame)["predict"].tolist()


def test_v2_binary_as_tritonclient_encodes_it(served: Any, frame: pd.DataFrame) -> None:
    from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

    pipeline, client = served
    # The binary format has no null for BYTES: rows with missing text go as JSON (above).
    complete = frame.dropna(subset=list(CHURN_TEXT)).reset_index(drop=True)
    inputs = []
    for name in complete.columns:
        datatype = "BYTES" if name in CHURN_TEXT else "FP64"
        tensor = InferInput(name, [len(complete)], datatype)
        tensor.set_data_from_numpy(
            complete[name].to_numpy(object if datatype == "BYTES" else np.float64)
        )
        inputs.append(tensor)
    outputs = [InferRequestedOutput("predict"), InferRequestedOutput("predict_proba")]
    body, json_size = InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    reply = client.call(
        "POST",
        INFER,
        body,
        headers=[(b"inference-header-content-length", str(json_size).encode())],
    )
    assert reply.status == 200, reply.body
    length = int(reply.headers[b"inference-header-content-length"])
    result = InferenceServerClient.parse_response_body(reply.body, header_length=length)
    want = expected(pipeline, complete)
    assert result.as_numpy("predict").astype(str).tolist() == want["predict"].tolist()
    assert result.as_numpy("predict_proba").tobytes() == want["predict_proba"].tobytes()


def test_binary_and_json_outputs_mix_as_asked(served: Any, frame: pd.DataFrame) -> None:
    pipeline, client = served
    body = v2_columns(
        frame,
        parameters={"binary_data_output": True},
        outputs=[
            {"name": "predict", "parameters": {"binary_data": False}},
            {"name": "predict_proba"},
        ],
    )
    reply = client.post(INFER, body)
    length = int(reply.headers[b"inference-header-content-length"])
    header = orjson.loads(reply.body[:length])
    by_name = {t["name"]: t for t in header["outputs"]}
    assert "data" in by_name["predict"] and "parameters" not in by_name["predict"]
    size = by_name["predict_proba"]["parameters"]["binary_data_size"]
    proba = np.frombuffer(reply.body[length : length + size], dtype="<f8")
    assert proba.tobytes() == expected(pipeline, frame)["predict_proba"].reshape(-1).tobytes()
    assert reply.headers[b"content-type"] == b"application/octet-stream"


# -- what a client gets wrong ----------------------------------------------------------


def _without(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {**body, "inputs": [t for t in body["inputs"] if t["name"] != name]}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: _without(b, "contract"), "missing column(s) 'contract' (BYTES)"),
        (
            lambda b: {**b, "inputs": [*b["inputs"], {**b["inputs"][0], "name": "age"}]},
            "unknown column 'age': the model takes columns tenure (FP64)",
        ),
        (
            lambda b: {
                **b,
                "inputs": [
                    {**t, "datatype": "BYTES", "data": ["x"] * len(t["data"])}
                    if t["name"] == "tenure"
                    else t
                    for t in b["inputs"]
                ],
            },
            "column 'tenure' holds 'x' where the model takes a number",
        ),
        (
            lambda b: {
                **b,
                "inputs": [
                    {**t, "datatype": "FP64", "data": [1.0] * len(t["data"])}
                    if t["name"] == "contract"
                    else t
                    for t in b["inputs"]
                ],
            },
            "column 'contract' takes text (BYTES), got a FP64 tensor",
        ),
        (
            lambda b: {
                **b,
                "inputs": [
                    {**t, "shape": [1], "data": t["data"][:1]} if t["name"] == "contract" else t
                    for t in b["inputs"]
                ],
            },
            "column 'contract' has 1 rows but 'tenure' has 3",
        ),
        (
            lambda b: {
                "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]
            },
            "this model takes named columns tenure (FP64)",
        ),
    ],
    ids=["missing", "unknown", "text-for-number", "number-for-text", "rows", "matrix"],
)
def test_column_mistakes_are_400_naming_the_column(
    pipelines: dict[str, Any], frame: pd.DataFrame, mutate: Any, message: str
) -> None:
    client = make_client(pipelines["onehot"])
    try:
        reply = client.post(INFER, mutate(v2_columns(frame.head(3))))
        assert reply.status == 400, reply.body
        assert message in reply.json()["error"]
        # and the next good request is answered
        assert client.post(INFER, v2_columns(frame.head(3))).status == 200
    finally:
        client.close()


def test_named_tensors_for_a_model_without_names_are_400(iris_model: SklearnModel) -> None:
    client = Client(create_app(make_settings(), iris_model, CollectorRegistry()))
    try:
        reply = client.post(
            "/v2/models/iris/infer",
            {
                "inputs": [
                    {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                    {"name": "b", "shape": [1], "datatype": "FP64", "data": [1]},
                ]
            },
        )
        assert reply.status == 400
        assert (
            "not fitted on named columns: send one 2-D tensor of shape [N, 4]"
            in (reply.json()["error"])
        )
    finally:
        client.close()


# -- all-numeric models fitted on DataFrames -----------------------------------------


def test_a_numeric_dataframe_model_takes_columns_or_one_matrix() -> None:
    df, labels = churn_frame(300)
    numeric = df[list(CHURN_NUMERIC)].fillna(0.0)
    clf = LogisticRegression(max_iter=1000).fit(numeric, labels)
    client = make_client(clf)
    try:
        rows = numeric.head(5)
        by_column = client.post(
            INFER,
            {
                "inputs": [
                    {"name": c, "shape": [5], "datatype": "FP64", "data": rows[c].tolist()}
                    for c in reversed(CHURN_NUMERIC)  # order does not matter: names do
                ],
                "outputs": [{"name": "predict_proba"}],
            },
        )
        matrix = client.post(
            INFER,
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [5, 3],
                        "datatype": "FP64",
                        "data": rows.to_numpy().tolist(),
                    }
                ],
                "outputs": [{"name": "predict_proba"}],
            },
        )
        assert by_column.status == matrix.status == 200
        want = clf.predict_proba(rows)
        for reply in (by_column, matrix):
            assert outputs_of(reply.json())["predict_proba"].tobytes() == want.tobytes()
    finally:
        client.close()


def test_decision_function_and_nulls_for_a_model_that_takes_none(
    pipelines: dict[str, Any], frame: pd.DataFrame
) -> None:
    client = make_client(pipelines["onehot"])
    try:
        reply = client.post(INFER, v2_columns(frame, outputs=[{"name": "decision_function"}]))
        assert reply.status == 200
        got = outputs_of(reply.json())["decision_function"]
        assert got.tobytes() == pipelines["onehot"].decision_function(frame).tobytes()
    finally:
        client.close()
    numeric = LogisticRegression().fit(np.array([[0.0, 1.0], [1.0, 0.0]]), [0, 1])
    client = make_client(numeric)
    try:
        reply = client.post(
            INFER,
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, None]}]},
        )
        assert reply.status == 400
        assert "cannot take this input" in reply.json()["error"] and "NaN" in reply.json()["error"]
    finally:
        client.close()
