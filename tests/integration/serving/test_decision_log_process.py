"""The decision log of a real ``mlmodel-serve`` process, writing to a real MinIO.

Each test runs its own MinIO (stopped and started again by the fault tests) and reads
back what the server wrote, as a user of the bucket would: Parquet files under
``decisions/<namespace>/<model>/<version>/dt=.../``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from serve_helpers import ServeProcess, free_port, metric, save_model, serving
from sklearn.ensemble import RandomForestClassifier

from mlmodel_operator.example_models import CHURN_TEXT, churn_frame, fit_churn_pipeline
from mlmodel_operator.localcluster import MinioServer
from mlmodel_serving.decisions import Record, decode_table, read_table

pytestmark = pytest.mark.integration

BUCKET = "decisions-test"
WAIT = 60.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MinioServer]:
    server = MinioServer(tmp_path / "minio").start()
    try:
        server.client().make_bucket(BUCKET)
        yield server
    finally:
        server.stop()


def serve_env(store: MinioServer, artifact: Path, sha256: str, **extra: str) -> dict[str, str]:
    return {
        "MLMODEL_MODEL_NAME": "m",
        "MLMODEL_MODEL_VERSION": "3",
        "MLMODEL_ARTIFACT_URI": str(artifact),
        "MLMODEL_ARTIFACT_SHA256": sha256,
        "MLMODEL_S3_ENDPOINT": store.endpoint,
        "MLMODEL_S3_ACCESS_KEY": store.access_key,
        "MLMODEL_S3_SECRET_KEY": store.secret_key,
        "MLMODEL_DECISION_LOG": "true",
        "MLMODEL_DECISION_LOG_BUCKET": BUCKET,
        "MLMODEL_DECISION_LOG_FLUSH_SECONDS": "0.3",
        "MLMODEL_NAMESPACE": "team-a",
        **extra,
    }


def records(store: MinioServer) -> list[Record]:
    client = store.client()
    out: list[Record] = []
    for obj in client.list_objects(BUCKET, prefix="decisions/", recursive=True):
        response = client.get_object(BUCKET, obj.object_name)
        try:
            out += decode_table(read_table(response.read()), obj.object_name)
        finally:
            response.close()
            response.release_conn()
    return out


def wait_for(predicate: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, str]:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)
    path = tmp_path_factory.mktemp("forest") / "model.joblib"
    return model, path, save_model(model, path)


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, str]:
    model = fit_churn_pipeline("onehot")
    path = tmp_path_factory.mktemp("churn") / "model.joblib"
    return model, path, save_model(model, path)


def v2(url: str, rows: list[list[float]], request_id: str, **body: Any) -> requests.Response:
    payload = {
        "id": request_id,
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP64",
                "shape": [len(rows), len(rows[0])],
                "data": rows,
            }
        ],
        **body,
    }
    return requests.post(f"{url}/v2/models/m/infer", json=payload, timeout=10)


def test_every_protocol_leaves_one_record_with_inputs_outputs_and_errors(
    store: MinioServer, forest: tuple[Any, Path, str], tmp_path: Path
) -> None:
    import tritonclient.grpc as grpcclient

    model, path, sha = forest
    grpc_port = free_port()
    rows = np.random.default_rng(1).normal(size=(6, 4)).round(6)
    with serving(serve_env(store, path, sha, MLMODEL_GRPC_PORT=str(grpc_port)), tmp_path) as p:
        assert v2(p.url, rows[:2].tolist(), "json-1", outputs=[{"name": "predict_proba"}]).ok
        assert (
            requests.post(
                f"{p.url}/v1/models/m:predict",
                json={"instances": rows[2:3].tolist()},
                headers={"x-request-id": "v1-1"},
                timeout=10,
            ).status_code
            == 200
        )
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        tensor = grpcclient.InferInput("input-0", [3, 4], "FP64")
        tensor.set_data_from_numpy(rows[3:6])
        answer = client.infer("m", [tensor], request_id="grpc-1")
        client.close()
        bad = v2(p.url, [[1.0, 2.0]], "bad-1")
        assert bad.status_code == 400
        unknown = requests.post(f"{p.url}/v2/models/m/infer", data=b"{", timeout=10)
        assert unknown.status_code == 400
        generated = unknown.headers["x-request-id"]
    # SIGTERM flushed everything.
    by_id = {r.request_id: r for r in records(store)}
    assert sorted(by_id) == sorted(["json-1", "v1-1", "grpc-1", "bad-1", generated])
    assert len(records(store)) == 5  # one record per request
    first = by_id["json-1"]
    assert (first.namespace, first.model, first.version, first.sha256) == ("team-a", "m", "3", sha)
    assert first.protocol == "v2" and first.status == 200 and first.error is None
    assert first.rows == 2
    assert np.array_equal(first.model_input(), rows[:2])
    assert first.outputs == {"predict_proba": model.predict_proba(rows[:2]).tolist()}
    assert by_id["v1-1"].protocol == "v1"
    assert by_id["v1-1"].outputs == {"predict": model.predict(rows[2:3]).tolist()}
    grpc_record = by_id["grpc-1"]
    assert grpc_record.protocol == "grpc" and grpc_record.status == 200
    assert np.array_equal(grpc_record.model_input(), rows[3:6])
    assert grpc_record.outputs["predict"] == answer.as_numpy("predict").tolist()
    assert by_id["bad-1"].status == 400 and "features per row" in (by_id["bad-1"].error or "")
    assert by_id[generated].inputs is None and by_id[generated].status == 400
    keys = {r.key for r in by_id.values()}
    assert all(k.startswith("decisions/team-a/m/3/dt=") for k in keys)


def test_a_dataframe_pipeline_is_recorded_by_column_and_redaction_hides_the_clear_value(
    store: MinioServer, churn: tuple[Any, Path, str], tmp_path: Path
) -> None:
    model, path, sha = churn
    frame, _ = churn_frame(20, seed=5)
    secret_column = CHURN_TEXT[1]  # payment_method
    clear_values = sorted(set(frame[secret_column]))
    env = serve_env(
        store,
        path,
        sha,
        MLMODEL_DECISION_LOG_REDACT=secret_column,
        MLMODEL_DECISION_LOG_REDACT_KEY="k3y-from-a-secret",
    )
    payload_rows = json.loads(frame.to_json(orient="records"))
    with serving(env, tmp_path) as p:
        for i, row in enumerate(payload_rows):
            r = requests.post(
                f"{p.url}/v1/models/m:predict",
                json={"instances": [row]},
                headers={"x-request-id": f"row-{i}"},
                timeout=10,
            )
            assert r.status_code == 200, r.text
    found = records(store)
    assert len(found) == len(payload_rows)
    record = {r.request_id: r for r in found}["row-0"]
    assert record.inputs is not None
    assert record.inputs["contract"] == [payload_rows[0]["contract"]]
    assert record.inputs["tenure"] == [payload_rows[0]["tenure"]]
    assert record.inputs[secret_column][0].startswith("hmac-sha256:")
    assert record.outputs["predict"] == model.predict(frame.iloc[:1]).tolist()
    with pytest.raises(ValueError, match=secret_column):
        record.model_input()
    # The clear value is nowhere in the bucket: not in the raw bytes, not in any value.
    client = store.client()
    for obj in client.list_objects(BUCKET, recursive=True):
        response = client.get_object(BUCKET, obj.object_name)
        data = response.read()
        response.close()
        response.release_conn()
        text = json.dumps(read_table(data).to_pylist(), default=str)
        for value in clear_values:
            assert value.encode() not in data
            assert value not in text


def test_a_redacted_column_the_model_does_not_have_is_refused(
    store: MinioServer, churn: tuple[Any, Path, str], tmp_path: Path
) -> None:
    _, path, sha = churn
    env = serve_env(
        store,
        path,
        sha,
        MLMODEL_DECISION_LOG_REDACT="payment_methd",
        MLMODEL_DECISION_LOG_REDACT_KEY="k",
    )
    with ServeProcess(env, tmp_path) as p:
        assert p.wait_exit() == 1
    assert "payment_methd" in p.log() and "in clear" in p.log()


def test_best_effort_drops_and_counts_while_the_store_is_down_then_recovers(
    store: MinioServer, forest: tuple[Any, Path, str], tmp_path: Path
) -> None:
    _, path, sha = forest
    env = serve_env(
        store,
        path,
        sha,
        MLMODEL_DECISION_LOG_MAX_RECORDS="10",
        MLMODEL_DECISION_LOG_QUEUE_RECORDS="40",
    )
    answered: list[str] = []
    with serving(env, tmp_path) as p:
        for i in range(5):
            assert v2(p.url, [[0.1, 0.2, 0.3, 0.4]], f"before-{i}").ok
            answered.append(f"before-{i}")
        wait_for(lambda: len(records(store)) == 5, "records before the outage")
        store.stop()
        for i in range(120):
            response = v2(p.url, [[0.1, 0.2, 0.3, float(i)]], f"during-{i}")
            assert response.status_code == 200  # serving goes on
            answered.append(f"during-{i}")
        text = requests.get(f"{p.url}/metrics", timeout=10).text
        dropped = metric(text, "mlmodel_decisions_dropped_total", model="m")
        # The queue holds 40 and the writer one file of 10 it keeps retrying: the rest goes.
        assert dropped >= 120 - 40 - 10
        assert requests.get(f"{p.url}/v2/health/ready", timeout=10).status_code == 200
        store.start()
        wait_for(
            lambda: (
                metric(
                    requests.get(f"{p.url}/metrics", timeout=10).text,
                    "mlmodel_decision_queue_records",
                    model="m",
                )
                == 0
            ),
            "the queue drained after MinIO came back",
        )
        for i in range(3):
            assert v2(p.url, [[0.1, 0.2, 0.3, 0.4]], f"after-{i}").ok
            answered.append(f"after-{i}")
    ids = [r.request_id for r in records(store)]
    assert len(ids) == len(set(ids)), "a record was written twice"
    assert set(ids) <= set(answered)
    assert len(ids) == len(answered) - dropped
    # The oldest records were the ones dropped; the newest are all there.
    assert {f"during-{i}" for i in range(80, 120)} <= set(ids)
    assert {f"after-{i}" for i in range(3)} <= set(ids)


def test_required_refuses_and_turns_not_ready_while_the_store_is_down(
    store: MinioServer, forest: tuple[Any, Path, str], tmp_path: Path
) -> None:
    _, path, sha = forest
    env = serve_env(store, path, sha, MLMODEL_DECISION_LOG_MODE="required")
    statuses: Counter[int] = Counter()
    answered: list[str] = []
    with serving(env, tmp_path) as p:
        store.stop()
        i = 0

        def refused() -> bool:
            nonlocal i
            i += 1
            response = v2(p.url, [[0.5, 0.5, 0.5, 0.5]], f"r-{i}")
            statuses[response.status_code] += 1
            if response.status_code == 200:
                answered.append(f"r-{i}")
            return response.status_code == 503

        wait_for(refused, "a 503 once the log cannot be written")
        assert requests.get(f"{p.url}/v2/health/ready", timeout=10).status_code == 503
        refusal = v2(p.url, [[0.5, 0.5, 0.5, 0.5]], "refused")
        assert refusal.status_code == 503
        assert "decision log" in refusal.json()["error"]
        store.start()
        wait_for(
            lambda: requests.get(f"{p.url}/v2/health/ready", timeout=10).status_code == 200,
            "ready again once MinIO is back",
        )
        assert v2(p.url, [[0.5, 0.5, 0.5, 0.5]], "after").status_code == 200
        answered.append("after")
    ids = [r.request_id for r in records(store)]
    assert sorted(ids) == sorted(answered), "every answered request has exactly one record"
    assert "refused" not in ids


def test_required_is_not_ready_until_its_bucket_answers(
    store: MinioServer, forest: tuple[Any, Path, str], tmp_path: Path
) -> None:
    _, path, sha = forest
    env = serve_env(
        store,
        path,
        sha,
        MLMODEL_DECISION_LOG_MODE="required",
        MLMODEL_DECISION_LOG_BUCKET="not-made-yet",
    )
    with ServeProcess(env, tmp_path) as p:
        wait_for(lambda: "model loaded and verified" in p.log(), "the model loaded")
        assert requests.get(f"{p.url}/v2/health/ready", timeout=10).status_code == 503
        refused = v2(p.url, [[0.5, 0.5, 0.5, 0.5]], "too-early")
        assert refused.status_code == 503 and "decision log" in refused.json()["error"]
        store.client().make_bucket("not-made-yet")
        p.wait_ready()
        assert v2(p.url, [[0.5, 0.5, 0.5, 0.5]], "in-time").status_code == 200
    client = store.client()
    keys = [o.object_name for o in client.list_objects("not-made-yet", recursive=True)]
    assert len(keys) == 1


def test_sigterm_under_load_loses_no_record(
    store: MinioServer, forest: tuple[Any, Path, str], tmp_path: Path
) -> None:
    _, path, sha = forest
    env = serve_env(store, path, sha, MLMODEL_DECISION_LOG_FLUSH_SECONDS="30")
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set() and i < 2000:
            i += 1
            try:
                response = session.post(
                    f"{p.url}/v2/models/m/infer",
                    json={
                        "id": f"c{n}-{i}",
                        "inputs": [
                            {"name": "x", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, i]}
                        ],
                    },
                    timeout=10,
                )
            except requests.RequestException:
                return  # the server has closed: this request was not answered
            if response.status_code == 200:
                with lock:
                    answered.append(f"c{n}-{i}")

    with ServeProcess(env, tmp_path) as p:
        p.wait_ready()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(answered) >= 200, "some load")
        assert p.stop() == 0  # SIGTERM while the clients are still sending
        stop.set()
        for t in threads:
            t.join(timeout=WAIT)
    ids = [r.request_id for r in records(store)]
    assert len(ids) == len(set(ids))
    missing = set(answered) - set(ids)
    assert not missing, f"{len(missing)} answered request(s) have no record"
