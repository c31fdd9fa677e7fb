"""Every client mistake is a 400 that names the input and the problem, never a 500 and
never a traceback (issue 16): shapes numpy cannot hold, booleans among numbers, text
where the model takes numbers, empty rows; over V2 JSON, the binary data extension, V1
and gRPC. The same requests against a real ``mlmodel-serve`` process are in
tests/integration/serving/test_serving_hostile_process.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from serving_helpers import Client, make_settings

from mlmodel_serving import protocol
from mlmodel_serving.app import create_app
from mlmodel_serving.grpcserver import decode_infer_request
from mlmodel_serving.model import SklearnModel
from mlmodel_serving.oip import grpc_predict_v2_pb2 as pb
from mlmodel_serving.protocol import BadRequest, decode_v1_request, decode_v2_request

INFER = "/v2/models/iris/infer"
BIG = 2**40

# Shapes numpy cannot hold (the element count overflows, or too many dimensions), each
# with data that agrees with it (no elements).
IMPOSSIBLE_SHAPES = [
    [2**63 - 1, 0],
    [1] * 70,
    [BIG, BIG, 0],
    [0, BIG, BIG],
    [0, *[BIG] * 15],
]


def _v2(shape: list[int], datatype: str, data: Any) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}
    )


def _v2_binary(shape: list[int], datatype: str, raw: bytes) -> tuple[bytes, int]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    return header + raw, len(header)


@pytest.mark.parametrize("shape", IMPOSSIBLE_SHAPES, ids=lambda s: f"{len(s)}-dims")
@pytest.mark.parametrize("datatype", ["FP64", "INT64", "BYTES"])
def test_a_shape_numpy_cannot_hold_is_a_400_naming_the_input(
    shape: list[int], datatype: str
) -> None:
    with pytest.raises(BadRequest) as json_error:
        decode_v2_request(_v2(shape, datatype, []))
    body, header_length = _v2_binary(shape, datatype, b"")
    with pytest.raises(BadRequest) as binary_error:
        decode_v2_request(body, header_length)
    for error in (json_error.value, binary_error.value):
        assert error.status == 400
        assert error.message.startswith("input 'x': shape"), error.message


@pytest.mark.parametrize("shape", IMPOSSIBLE_SHAPES, ids=lambda s: f"{len(s)}-dims")
@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_grpc_a_shape_numpy_cannot_hold_is_invalid_argument(shape: list[int], raw: bool) -> None:
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="x", datatype="FP64", shape=shape)
    if raw:
        request.raw_input_contents.append(b"")
    with pytest.raises(BadRequest) as error:  # BadRequest is answered INVALID_ARGUMENT
        decode_infer_request(request, "r-1")
    assert error.value.message.startswith("input 'x': shape"), error.value.message


@pytest.mark.parametrize("datatype", ["INT64", "INT32", "UINT8", "FP64", "FP32"])
@pytest.mark.parametrize(
    "data",
    [[True, 1, 2, 3], [1.5, 2.5, 3.5, False], [[True, 1], [2, 3]]],
    ids=["first", "last", "nested"],
)
def test_json_booleans_are_not_numbers(datatype: str, data: list[Any]) -> None:
    if datatype.startswith(("INT", "UINT")) and any(isinstance(v, float) for v in data):
        data = [1, 2, 3, False]
    with pytest.raises(BadRequest, match=f"input 'x' holds .*boolean.*{datatype}"):
        decode_v2_request(_v2([1, 4] if not isinstance(data[0], list) else [2, 2], datatype, data))


def test_booleans_in_a_request_do_not_make_numbers_fail() -> None:
    """The scan for booleans is only a scan: true elsewhere in the body changes nothing."""
    body = orjson.dumps(
        {
            "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}],
            "parameters": {"binary_data_output": True},
        }
    )
    assert decode_v2_request(body).data.tolist() == [[1.0, 2.0]]


def test_integers_beyond_the_datatype_say_so() -> None:
    with pytest.raises(BadRequest, match="input 'x' holds values outside the range of INT64"):
        decode_v2_request(_v2([1, 2], "INT64", [2**64 - 1, 1]))


def test_v1_rows_that_are_empty_objects_are_a_400() -> None:
    for body in (b'{"instances": [{}]}', b'{"instances": [{}, {}]}'):
        with pytest.raises(BadRequest, match=r"instances\[0\] is an empty object"):
            decode_v1_request(body)


@pytest.fixture
def iris_client(iris_model: SklearnModel) -> Iterator[Client]:
    client = Client(create_app(make_settings(), iris_model, CollectorRegistry()))
    yield client
    client.close()


CLIENT_MISTAKES: list[tuple[str, bytes, str]] = [
    (INFER, _v2([2**63 - 1, 0], "FP64", []), "input 'x': shape"),
    (INFER, _v2([BIG, BIG, 0], "FP64", []), "input 'x': shape"),
    (INFER, _v2([1] * 70, "FP64", [1]), "input 'x': shape has 70 dimensions"),
    (INFER, _v2([1, 4], "BYTES", ["nan", "1", "2", "3"]), "'nan'"),
    (INFER, _v2([1, 4], "BYTES", ["inf", "1", "2", "3"]), "'inf'"),
    (INFER, _v2([1, 4], "BYTES", ["a", "1", "2", "3"]), "'a'"),
    (INFER, _v2([1, 4], "INT64", [True, 1, 2, 3]), "input 'x' holds boolean"),
    (INFER, _v2([1, 4], "FP64", [None, 1, 2, 3]), "NaN"),
    ("/v1/models/iris:predict", b'{"instances": [["a", "b", "c", "d"]]}', "'a'"),
    ("/v1/models/iris:predict", b'{"instances": [[true, 1, 2, 3]]}', "True"),
    ("/v1/models/iris:predict", b'{"instances": [{}]}', "empty object"),
]


@pytest.mark.parametrize(("path", "body", "message"), CLIENT_MISTAKES)
def test_every_client_mistake_is_a_400_without_a_traceback(
    iris_client: Client, path: str, body: bytes, message: str
) -> None:
    reply = iris_client.post(path, body=body)
    assert reply.status == 400, reply.body
    assert message in reply.json()["error"]
    assert b"Traceback" not in reply.body and b"internal error" not in reply.body
    # ... and the server goes on answering.
    ok = iris_client.post(INFER, body=_v2([1, 4], "FP64", [5.1, 3.5, 1.4, 0.2]))
    assert ok.status == 200


# Long arrays are converted to numpy a slice at a time (so that a thread decoding one
# lets the event loop run); whatever a later slice holds, the answer is the one-call one.
LONG = 70_000


def _decoded(body: bytes) -> tuple[Any, ...]:
    """What decoding gives: the input's datatype, problem and data, or the error."""
    try:
        tensor = decode_v2_request(body).inputs[0]
    except BadRequest as exc:
        return ("error", exc.message)
    return (tensor.datatype, tensor.problem, tensor.data)


@pytest.mark.parametrize(
    "tail",
    [[1, 2], [1.5, True], [1.5], [1.5, "a"], [1.5, None], [1.5, [2.0]], [2**64 - 1, 1]],
    ids=["ints", "boolean", "ragged", "text", "null", "nested", "beyond-int64"],
)
@pytest.mark.parametrize("datatype", ["FP64", "INT64"])
def test_a_long_array_decodes_as_one_call_would(
    tail: list[Any], datatype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = [1, 2] if datatype == "INT64" else [0.5, 1.5]
    body = _v2([LONG + 1, 2], datatype, [head] * LONG + [tail])
    sliced = _decoded(body)
    monkeypatch.setattr(protocol, "_SLICE", 10**9)
    whole = _decoded(body)
    assert sliced[:2] == whole[:2]
    if sliced[0] != "error":
        assert sliced[2].dtype == whole[2].dtype and sliced[2].shape == whole[2].shape
        assert np.array_equal(sliced[2], whole[2], equal_nan=sliced[2].dtype.kind == "f")


def test_a_long_flat_int64_array_keeps_its_values() -> None:
    values = list(range(LONG * 2))
    data = decode_v2_request(_v2([LONG, 2], "INT64", values)).data
    assert data.dtype == np.int64 and data.reshape(-1).tolist() == values
