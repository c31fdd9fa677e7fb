"""schemathesis against the server's own OpenAPI document: generated requests for every
operation (valid and not) against a real `mlmodel-serve` process with a real model, and
those of the DataFrame Pipeline with text columns. No answer is a 5xx, every answer is
what the document says, and the process's memory stays bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serve_helpers import ServeProcess, save_model, serving
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlmodel_operator.example_models import CHURN_NUMERIC, CHURN_TEXT, fit_churn_pipeline
from mlmodel_serving.openapi import openapi_document

pytestmark = pytest.mark.integration

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
RSS_GROWTH_LIMIT = 96 * 2**20


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def start(tmp: Path, name: str, estimator: Any) -> Iterator[ServeProcess]:
    path = tmp / f"{name}.joblib"
    sha = save_model(estimator, path)
    env = {
        "MLMODEL_MODEL_NAME": name,
        "MLMODEL_MODEL_VERSION": "1",
        "MLMODEL_ARTIFACT_URI": str(path),
        "MLMODEL_ARTIFACT_SHA256": sha,
        "MLMODEL_MAX_BODY_BYTES": str(1 << 20),
    }
    with serving(env, tmp) as proc:
        requests.get(f"{proc.url}/v2/health/ready", timeout=10).raise_for_status()
        yield proc


@pytest.fixture(scope="module", params=["iris", "churn"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[ServeProcess, int]
]:  # fmt: skip
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "iris":
        estimator: Any = LogisticRegression(max_iter=500).fit(*load_iris(return_X_y=True))
    else:
        estimator = fit_churn_pipeline("onehot")
    for proc in start(tmp, request.param, estimator):
        assert proc.popen is not None
        baseline = rss(proc.popen.pid)
        yield proc, baseline
        grown = rss(proc.popen.pid) - baseline
        assert grown < RSS_GROWTH_LIMIT, f"RSS grew by {grown / 2**20:.0f} MiB"


@SCHEMA.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_request_gets_a_server_error(case: Any, server: tuple[ServeProcess, int]) -> None:
    proc, _ = server
    params = case.path_parameters or {}
    # the served model and version, so that generated bodies reach the model (other
    # names get a 404 before any body is read, which says little)
    if "model_name" in params:
        params["model_name"] = proc.env["MLMODEL_MODEL_NAME"]
    if "model_version" in params:
        params["model_version"] = "1"
    response = case.call(base_url=proc.url, timeout=30)
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    case.validate_response(
        response,
        checks=(status_code_conformance, content_type_conformance, response_schema_conformance),
    )
    assert proc.popen is not None and proc.popen.poll() is None, proc.log()[-2000:]


FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def model_requests(draw: st.DrawFn, model: str) -> dict[str, Any]:
    """V2 requests shaped for the served model, with any values (extremes, text, nulls)."""
    rows = draw(st.integers(min_value=1, max_value=8))
    if model == "iris":
        data = draw(st.lists(FLOATS, min_size=rows * 4, max_size=rows * 4))
        return {"inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP64", "data": data}]}
    inputs = []
    for column in (*CHURN_NUMERIC, *CHURN_TEXT):
        if column in CHURN_TEXT:
            values = draw(st.lists(st.one_of(st.none(), st.text(max_size=12)),
                                   min_size=rows, max_size=rows))  # fmt: skip
            inputs.append({"name": column, "shape": [rows], "datatype": "BYTES", "data": values})
        else:
            values = draw(st.lists(st.one_of(st.none(), FLOATS), min_size=rows, max_size=rows))
            inputs.append({"name": column, "shape": [rows], "datatype": "FP64", "data": values})
    return {"inputs": inputs, "parameters": {"content_type": "pd"}}


@given(data=st.data())
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_requests_shaped_for_the_model_are_answered_or_refused_never_failed(
    data: st.DataObject, server: tuple[ServeProcess, int]
) -> None:
    proc, _ = server
    model = proc.env["MLMODEL_MODEL_NAME"]
    body = data.draw(model_requests(model))
    response = requests.post(f"{proc.url}/v2/models/{model}/infer", json=body, timeout=30)
    event(f"HTTP {response.status_code}")
    assert response.status_code in (200, 400), response.text[:500]
    if response.status_code == 400:
        assert response.json()["error"], response.text
