"""Open Inference Protocol V2 / KServe V1 decoding and encoding, with property-based tests."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlmodel_serving.protocol import (
    BadRequest,
    InferenceError,
    decode_v1_request,
    decode_v2_request,
    encode_error,
    encode_v1_response,
    encode_v2_response,
)


def v2(tensor: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": [tensor], **extra})


def test_decode_v2_flat_and_nested_data() -> None:
    flat = decode_v2_request(
        v2({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4.5]})
    )
    nested = decode_v2_request(
        v2({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]})
    )
    for req in (flat, nested):
        assert req.data.dtype == np.float32
        assert req.data.tolist() == [[1, 2], [3, 4.5]]
        assert req.datatype == "FP32" and req.input_name == "x" and req.outputs == ()


def test_decode_v2_outputs_id_and_types() -> None:
    req = decode_v2_request(
        v2(
            {"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]},
            id="req-1",
            outputs=[{"name": "predict_proba"}, {"name": "predict"}, {"name": "predict"}],
        )
    )
    assert req.id == "req-1"
    assert req.outputs == ("predict_proba", "predict")
    assert req.data.dtype == np.int64
    strings = decode_v2_request(
        v2({"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]})
    )
    assert strings.data.dtype == object and strings.data.tolist() == [["a", "b"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "'inputs' must be a non-empty array of tensors"),
        (b'{"inputs": []}', "got an empty array"),
        (orjson.dumps({"inputs": [1]}), "inputs[0] must be a JSON object"),
        (v2({"name": "x", "shape": [1, 2], "datatype": "FP128", "data": [1, 2]}), "FP32, FP64"),
        (v2({"name": "x", "shape": [1, 2], "data": [1, 2]}), "datatype None is not supported"),
        (
            v2({"name": "x", "shape": "1,2", "datatype": "FP32", "data": [1, 2]}),
            "non-negative integers",
        ),
        (
            v2({"name": "x", "shape": [1, -2], "datatype": "FP32", "data": [1, 2]}),
            "non-negative integers",
        ),
        (
            v2({"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}),
            "has 2 elements but shape [1, 3] needs 3",
        ),
        (
            v2({"name": "x", "shape": [1, 2], "datatype": "FP32", "data": ["a", "b"]}),
            "string values",
        ),
        (
            v2({"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, {"a": 1}]}),
            "an object ({'a': 1}), which a FP32 tensor cannot take",
        ),
        (
            v2({"name": "x", "shape": [1] * 17, "datatype": "FP32", "data": [1]}),
            "17 dimensions: at most 16",
        ),
        (
            v2({"name": "x", "shape": [2**63 - 1, 0], "datatype": "FP32", "data": []}),
            "at most 1099511627776",
        ),
        (
            orjson.dumps(
                {
                    "inputs": [
                        {"name": "x", "shape": [1], "datatype": "FP64", "data": [1]},
                        {"name": "x", "shape": [1], "datatype": "FP64", "data": [2]},
                    ]
                }
            ),
            "input 'x' is given more than once",
        ),
        (
            v2({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3]]}),
            "rectangular",
        ),
        (
            v2({"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1, 2.5]}),
            "floating-point",
        ),
        (
            v2({"name": "x", "shape": [1, 2], "datatype": "INT8", "data": [1, 300]}),
            "outside the range of INT8",
        ),
        (v2({"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 1e300]}), "not finite"),
        (
            v2({"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["a", True]}),
            "holds a boolean, which a BYTES tensor cannot take",
        ),
        (v2({"name": "x", "shape": [1, 2], "datatype": "FP64", "data": 5}), "must be an array"),
        (v2({"name": 7, "shape": [1], "datatype": "FP64", "data": [1]}), "name must be a string"),
        (
            v2({"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}, outputs={"name": "p"}),
            "'outputs' must be an array",
        ),
        (
            v2({"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}, outputs=[{"n": 1}]),
            "outputs[0].name",
        ),
        (
            v2({"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}, id=5),
            "'id' must be a string",
        ),
    ],
)
def test_decode_v2_rejects_with_a_message(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        decode_v2_request(body)
    assert err.value.status == 400
    assert message in err.value.message


def test_mixed_json_values_stay_untyped_with_the_reason() -> None:
    """Rows mixing text and numbers are a table's rows: the model's columns type them."""
    for datatype in ("BYTES", "FP64"):
        req = decode_v2_request(
            v2({"name": "x", "shape": [1, 3], "datatype": datatype, "data": [34.0, "month", None]})
        )
        assert req.datatype is None and req.data.tolist() == [[34.0, "month", None]]
        assert req.inputs[0].problem is not None and datatype in req.inputs[0].problem


def test_decode_v1() -> None:
    req = decode_v1_request(b'{"instances": [[1, 2], [3, 4.5]]}')
    assert req.data.dtype == np.float64 and req.data.tolist() == [[1, 2], [3, 4.5]]
    strings = decode_v1_request(b'{"instances": [["a", "b"]]}')
    assert strings.data.dtype == object and strings.datatype == "BYTES"
    # Mixed rows stay untyped: the model's columns say what each position takes.
    mixed = decode_v1_request(b'{"instances": [[34.5, "month", null]]}')
    assert mixed.datatype is None and mixed.data.tolist() == [[34.5, "month", None]]


def test_decode_v1_rows_as_objects() -> None:
    req = decode_v1_request(
        b'{"instances": [{"tenure": 3, "contract": "month"}, {"tenure": 5.5, "contract": null}]}'
    )
    assert [(t.name, t.datatype) for t in req.inputs] == [("tenure", None), ("contract", None)]
    assert req.inputs[0].data.tolist() == [3, 5.5]
    assert req.inputs[1].data.tolist() == ["month", None]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{}", "'instances' must be a non-empty array"),
        (b'{"instances": []}', "'instances' must be a non-empty array"),
        (b'{"instances": [1, 2]}', "must be an array (one row"),
        (b'{"instances": [[1, 2], [3]]}', "same length"),
        (b'{"instances": [["a", "b"], ["c"]]}', "same length"),
        (b'{"instances": [[[1]]]}', "must hold numbers, strings or null, got an array"),
        (b'{"instances": [[]]}', "rows are empty"),
        (b'{"instances": [{"a": 1}, [1]]}', "instances[1] is an array"),
        (b'{"instances": [{"a": 1}, {"b": 1}]}', "instances[1] lacks ['a']"),
        (b'{"instances": [{"a": 1}, {"a": 1, "b": 2}]}', "has keys the first row lacks: ['b']"),
        (b'{"instances": [{"a": [1]}]}', "instances[0]['a'] is an array"),
    ],
)
def test_decode_v1_rejects_with_a_message(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=None) as err:
        decode_v1_request(body)
    assert message in err.value.message


def test_encode_v2_response_is_flat_row_major() -> None:
    body = orjson.loads(
        encode_v2_response(
            "iris",
            "3",
            "r1",
            {"predict": np.array([0, 2]), "predict_proba": np.array([[0.25, 0.75], [1.0, 0.0]])},
        )
    )
    assert body == {
        "model_name": "iris",
        "model_version": "3",
        "id": "r1",
        "outputs": [
            {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 2]},
            {
                "name": "predict_proba",
                "shape": [2, 2],
                "datatype": "FP64",
                "data": [0.25, 0.75, 1.0, 0.0],
            },
        ],
    }


def test_encode_string_labels_and_v1() -> None:
    body = orjson.loads(encode_v2_response("m", "1", None, {"predict": np.array(["cat", "dog"])}))
    assert body["outputs"][0]["datatype"] == "BYTES" and body["outputs"][0]["data"] == [
        "cat",
        "dog",
    ]
    assert "id" not in body
    assert orjson.loads(encode_v1_response({"predict": np.array([1.5, 2.0])})) == {
        "predictions": [1.5, 2.0]
    }
    assert orjson.loads(encode_v1_response({"predict": np.array(["a"])})) == {"predictions": ["a"]}
    assert orjson.loads(encode_error("bad", "id-1")) == {"error": "bad", "request_id": "id-1"}


# -- property-based ---------------------------------------------------------------------

FLOAT_TYPES = {"FP32": np.float32, "FP64": np.float64}
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def float_tensors(draw: st.DrawFn) -> tuple[str, list[int], list[float]]:
    datatype = draw(st.sampled_from(sorted(FLOAT_TYPES)))
    rows = draw(st.integers(1, 5))
    cols = draw(st.integers(1, 5))
    data = draw(st.lists(finite, min_size=rows * cols, max_size=rows * cols))
    return datatype, [rows, cols], data


@given(float_tensors(), st.booleans())
@settings(max_examples=100, deadline=None)
def test_float_tensors_round_trip(tensor: tuple[str, list[int], list[float]], nested: bool) -> None:
    datatype, shape, data = tensor
    arr = np.array(data, dtype=FLOAT_TYPES[datatype]).reshape(shape)
    payload = arr.tolist() if nested else data
    req = decode_v2_request(
        v2({"name": "x", "shape": shape, "datatype": datatype, "data": payload})
    )
    assert req.data.dtype == FLOAT_TYPES[datatype]
    np.testing.assert_array_equal(req.data, arr)
    # Encoding the decoded tensor gives back the same values, flat and row-major.
    out = orjson.loads(encode_v2_response("m", "1", None, {"predict": req.data}))["outputs"][0]
    assert out["shape"] == shape
    np.testing.assert_array_equal(
        np.array(out["data"], dtype=FLOAT_TYPES[datatype]), arr.reshape(-1)
    )


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=12))
@settings(max_examples=100, deadline=None)
def test_int64_tensors_round_trip(values: list[int]) -> None:
    req = decode_v2_request(
        v2({"name": "x", "shape": [1, len(values)], "datatype": "INT64", "data": values})
    )
    assert req.data.dtype == np.int64 and req.data.reshape(-1).tolist() == values


@given(st.lists(st.text(max_size=8), min_size=1, max_size=6))
@settings(max_examples=100, deadline=None)
def test_bytes_tensors_round_trip(values: list[str]) -> None:
    req = decode_v2_request(
        v2({"name": "x", "shape": [len(values), 1], "datatype": "BYTES", "data": values})
    )
    assert req.data.reshape(-1).tolist() == values


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
tensor_like = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values,
        "shape": st.lists(st.integers(-2, 6), max_size=3) | json_values,
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "INT8", "BYTES", "BOOL", "X"])
        | json_values,
        "data": json_values,
    },
)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits: send them as raw JSON text
        import json

        return json.dumps(value).encode()


@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"inputs": st.lists(tensor_like, max_size=2)},
            optional={"outputs": json_values, "id": json_values},
        ),
    )
)
@settings(max_examples=150, deadline=None)
def test_decode_v2_never_fails_other_than_with_an_inference_error(body: Any) -> None:
    try:
        req = decode_v2_request(_dumps(body))
    except InferenceError as exc:
        assert 400 <= exc.status < 500 and exc.message
    else:
        for tensor in req.inputs:
            assert isinstance(tensor.data, np.ndarray)
            assert tensor.data.size == math.prod(tensor.data.shape)


@given(st.one_of(json_values, st.fixed_dictionaries({"instances": json_values})))
@settings(max_examples=150, deadline=None)
def test_decode_v1_never_fails_other_than_with_an_inference_error(body: Any) -> None:
    try:
        req = decode_v1_request(_dumps(body))
    except InferenceError as exc:
        assert exc.status == 400 and exc.message
    else:
        assert all(t.data.ndim in (1, 2) for t in req.inputs)


@given(st.binary(max_size=64))
@settings(max_examples=100, deadline=None)
def test_decode_arbitrary_bytes(body: bytes) -> None:
    for decode in (decode_v1_request, decode_v2_request):
        try:
            decode(body)
        except InferenceError as exc:
            assert exc.status == 400
