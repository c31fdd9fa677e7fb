"""The mixed-type churn Pipeline in a real mlmodel-serve process, called the ways users do.

tritonclient's HTTP client with its defaults (binary tensors both ways), KServe V1 rows as
objects over plain HTTP, and hostile binary payloads, which must each get a 400 while the
server keeps answering.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import requests
from serve_helpers import ServeProcess, save_model, serving

from mlmodel_operator.example_models import CHURN_TEXT, churn_frame, fit_churn_pipeline

pytestmark = pytest.mark.integration
TIMEOUT = 10


@pytest.fixture(scope="module")
def churn() -> Any:
    return fit_churn_pipeline("onehot")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, churn: Any) -> Iterator[ServeProcess]:
    workdir = tmp_path_factory.mktemp("tabular")
    path = workdir / "churn.joblib"
    sha = save_model(churn, path)
    env = {
        "MLMODEL_MODEL_NAME": "churn",
        "MLMODEL_MODEL_VERSION": "1",
        "MLMODEL_ARTIFACT_URI": str(path),
        "MLMODEL_ARTIFACT_SHA256": sha,
    }
    with serving(env, workdir) as proc:
        yield proc


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df, _ = churn_frame(64, seed=5)
    return df.dropna(subset=list(CHURN_TEXT)).reset_index(drop=True)


def test_tritonclient_http_with_its_defaults(
    server: ServeProcess, churn: Any, rows: pd.DataFrame
) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=TIMEOUT)
    try:
        assert client.is_server_live() and client.is_model_ready("churn")
        meta = client.get_model_metadata("churn")
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
            ("tenure", "FP64"),
            ("monthly_charges", "FP64"),
            ("total_charges", "FP64"),
            ("contract", "BYTES"),
            ("payment_method", "BYTES"),
            ("internet_service", "BYTES"),
        ]
        inputs = []
        for spec in meta["inputs"]:
            tensor = httpclient.InferInput(spec["name"], [len(rows)], spec["datatype"])
            dtype = object if spec["datatype"] == "BYTES" else np.float64
            tensor.set_data_from_numpy(rows[spec["name"]].to_numpy(dtype))  # binary by default
            inputs.append(tensor)
        outputs = [
            httpclient.InferRequestedOutput("predict"),
            httpclient.InferRequestedOutput("predict_proba"),
        ]
        result = client.infer("churn", inputs, outputs=outputs, request_id="churn-42")
        assert result.get_response()["id"] == "churn-42"
        labels = result.as_numpy("predict")
        assert [v.decode() for v in labels.tolist()] == churn.predict(rows).tolist()
        assert result.as_numpy("predict_proba").tobytes() == churn.predict_proba(rows).tobytes()
        # No outputs named: the default output, `predict` (as KServe's and MLServer's
        # sklearn servers do), in binary as tritonclient then asks.
        default = client.infer("churn", inputs)
        (only,) = default.get_response()["outputs"]
        assert only["name"] == "predict" and "binary_data_size" in only["parameters"]
        assert default.as_numpy("predict").tolist() == labels.tolist()
    finally:
        client.close()


def test_kserve_v1_rows_as_objects(server: ServeProcess, churn: Any, rows: pd.DataFrame) -> None:
    body = {"instances": rows.head(5).to_dict("records")}
    reply = requests.post(
        f"{server.url}/v1/models/churn:predict", data=orjson.dumps(body), timeout=TIMEOUT
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"predictions": churn.predict(rows.head(5)).tolist()}


def _raw(port: int, head: bytes, body: bytes) -> tuple[int, bytes]:
    """Send one hand-made request; return the status and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def _binary_request(
    size: Any, payload: bytes, header_length: int | None = None, datatype: str = "FP64"
) -> tuple[bytes, bytes]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "tenure",
                    "shape": [2],
                    "datatype": datatype,
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )
    length = len(header) if header_length is None else header_length
    head = (
        b"POST /v2/models/churn/infer HTTP/1.1\r\nhost: x\r\n"
        b"inference-header-content-length: %d\r\n" % length
    )
    return head, header + payload


@pytest.mark.parametrize(
    ("size", "payload", "header_length", "datatype", "message"),
    [
        (1 << 40, b"\0" * 16, None, "FP64", b"runs past the end of the body"),
        (-8, b"\0" * 16, None, "FP64", b"binary_data_size must be a non-negative integer"),
        ("16", b"\0" * 16, None, "FP64", b"binary_data_size must be a non-negative integer"),
        (16, b"\0" * 16, 1 << 20, "FP64", b"Inference-Header-Content-Length is 1048576"),
        (16, b"\0" * 16, 3, "FP64", b"not valid JSON"),
        (8, b"\0" * 8, None, "FP64", b"has 8 bytes of FP64 data but shape [2] needs 16"),
        (8, b"\xff\xff\xff\x7f" + b"abcd", None, "BYTES", b"declares 2147483647 bytes"),
        (16, b"\0" * 16 + b"extra", None, "FP64", b"after the tensors' binary data"),
    ],
    ids=["size-past-body", "negative", "size-string", "header-past-body", "header-short",
         "size-vs-shape", "bytes-length", "trailing"],
)  # fmt: skip
def test_hostile_binary_payloads_are_400_and_the_server_goes_on(
    server: ServeProcess,
    size: Any,
    payload: bytes,
    header_length: int | None,
    datatype: str,
    message: bytes,
) -> None:
    head, body = _binary_request(size, payload, header_length, datatype)
    status, reply = _raw(server.port, head, body)
    assert status == 400, reply
    assert message in reply
    ok = requests.get(f"{server.url}/v2/health/ready", timeout=TIMEOUT)
    assert ok.status_code == 200
    assert server.popen is not None and server.popen.poll() is None


def test_a_header_length_that_is_not_a_number_is_400(server: ServeProcess) -> None:
    head = (
        b"POST /v2/models/churn/infer HTTP/1.1\r\nhost: x\r\n"
        b"inference-header-content-length: lots\r\n"
    )
    status, reply = _raw(server.port, head, b"{}")
    assert status == 400 and b"Inference-Header-Content-Length" in reply


def test_log_has_no_traceback(server: ServeProcess, tmp_path: Path) -> None:
    """Every hostile request above was a client error, not a server failure."""
    assert "Traceback" not in server.log()
