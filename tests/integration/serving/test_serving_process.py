"""mlmodel-serve as a real process: a real MinIO, models trained here, real HTTP."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import requests
from serve_helpers import ServeProcess, metric, save_model, serving
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from mlmodel_operator.localcluster import MinioServer

pytestmark = pytest.mark.integration
TIMEOUT = 10


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    x, y = load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="module")
def iris_lr(iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> LogisticRegression:
    return LogisticRegression(max_iter=1000).fit(*iris)


@pytest.fixture(scope="module")
def local_model(
    tmp_path_factory: pytest.TempPathFactory, iris_lr: LogisticRegression
) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("model") / "iris.joblib"
    return path, save_model(iris_lr, path)


def s3_env(minio: MinioServer) -> dict[str, str]:
    return {
        "MLMODEL_S3_ENDPOINT": minio.endpoint,
        "MLMODEL_S3_ACCESS_KEY": minio.access_key,
        "MLMODEL_S3_SECRET_KEY": minio.secret_key,
        "MLMODEL_S3_SECURE": "false",
    }


def upload(minio: MinioServer, bucket: str, key: str, path: Path) -> str:
    mc = minio.client()
    if not mc.bucket_exists(bucket):
        mc.make_bucket(bucket)
    data = path.read_bytes()
    mc.put_object(bucket, key, io.BytesIO(data), len(data))
    return f"s3://{bucket}/{key}"


def v2(rows: Any, outputs: list[str] | None = None) -> dict[str, Any]:
    x = np.asarray(rows, dtype=np.float64)
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(x.shape),
                "datatype": "FP64",
                "data": x.reshape(-1).tolist(),
            }
        ]
    }
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    return body


def test_model_from_minio_predicts_like_in_process(minio: MinioServer, tmp_path: Path) -> None:
    x, y = make_classification(n_samples=300, n_features=20, n_informative=8, random_state=1)
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y)
    path = tmp_path / "forest.joblib"
    sha = save_model(forest, path)
    uri = upload(minio, "models", "forest/2/model.joblib", path)
    env = {
        **s3_env(minio),
        "MLMODEL_MODEL_NAME": "forest",
        "MLMODEL_MODEL_VERSION": "2",
        "MLMODEL_ARTIFACT_URI": uri,
        "MLMODEL_ARTIFACT_SHA256": sha,
    }
    with serving(env, tmp_path) as srv:
        rows = x[:50]
        r = requests.post(
            f"{srv.url}/v2/models/forest/infer",
            json=v2(rows, ["predict", "predict_proba"]),
            timeout=TIMEOUT,
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-model-version"] == "2" and r.headers["x-model-sha256"] == sha
        predict, proba = r.json()["outputs"]
        assert predict["data"] == forest.predict(rows).tolist()
        assert (
            np.array(proba["data"]).reshape(50, 2).tolist() == forest.predict_proba(rows).tolist()
        )

        r1 = requests.post(
            f"{srv.url}/v1/models/forest:predict",
            json={"instances": rows[:5].tolist()},
            timeout=TIMEOUT,
        )
        assert r1.json() == {"predictions": forest.predict(rows[:5]).tolist()}

        meta = requests.get(f"{srv.url}/v2/models/forest", timeout=TIMEOUT).json()
        assert meta["parameters"]["sha256"] == sha and meta["parameters"]["version"] == "2"
        assert meta["parameters"]["predictPath"] == "leaf-tables"
        assert (tmp_path / "cache" / "sha256" / sha).is_file()
        # The secret never reaches the log.
        assert minio.secret_key not in srv.log()
    assert srv.popen is not None and srv.popen.returncode == 0


def test_digest_mismatch_refuses_to_load(
    minio: MinioServer, tmp_path: Path, local_model: tuple[Path, str]
) -> None:
    path, sha = local_model
    uri = upload(minio, "models", "iris/9/model.joblib", path)
    wrong = "0" * 64
    env = {
        **s3_env(minio),
        "MLMODEL_MODEL_NAME": "iris",
        "MLMODEL_ARTIFACT_URI": uri,
        "MLMODEL_ARTIFACT_SHA256": wrong,
    }
    with ServeProcess(env, tmp_path) as proc:
        ready_seen = False
        assert proc.popen is not None
        deadline = time.monotonic() + 60
        while proc.popen.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                ready = requests.get(f"{proc.url}/v2/health/ready", timeout=2)
                ready_seen |= ready.status_code == 200
            time.sleep(0.02)
        code = proc.wait_exit(timeout=60)
    assert code != 0
    assert not ready_seen
    log = proc.log()
    assert "refusing to serve" in log and wrong in log and sha in log and uri in log
    assert not (tmp_path / "cache" / "sha256" / wrong).exists()


def test_bad_input_is_4xx_and_the_server_keeps_serving(
    tmp_path: Path, local_model: tuple[Path, str]
) -> None:
    path, sha = local_model
    env = {
        "MLMODEL_MODEL_NAME": "iris",
        "MLMODEL_MODEL_VERSION": "5",
        "MLMODEL_ARTIFACT_URI": str(path),
        "MLMODEL_ARTIFACT_SHA256": sha,
        "MLMODEL_MAX_BODY_BYTES": "4096",
    }
    row = [5.1, 3.5, 1.4, 0.2]
    cases: list[tuple[str, str, bytes, int, str]] = [
        ("POST", "/v2/models/iris/infer", b"{not json", 400, "not valid JSON"),
        (
            "POST",
            "/v2/models/iris/infer",
            requests.models.complexjson.dumps(v2([[1.0, 2.0]])).encode(),
            400,
            "expects 4",
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":["a","b","c","d"]}]}',
            400,
            "string values",
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            b'{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP64","data":[1,2,3,4]}]}',
            400,
            "needs 8",
        ),
        ("POST", "/v2/models/other/infer", b"{}", 404, "this server serves 'iris'"),
        (
            "POST",
            "/v2/models/iris/infer",
            requests.models.complexjson.dumps(v2([row], ["score"])).encode(),
            400,
            "unknown output",
        ),
        ("POST", "/v2/models/iris/infer", b"[" + b"1.0," * 2000 + b"1.0]", 413, "4096 bytes"),
    ]
    with serving(env, tmp_path) as srv:
        good = v2([row])
        for method, route, body, status, message in cases:
            r = requests.request(method, srv.url + route, data=body, timeout=TIMEOUT)
            assert r.status_code == status, (route, body[:80], r.text)
            assert message in r.json()["error"]
            ok = requests.post(f"{srv.url}/v2/models/iris/infer", json=good, timeout=TIMEOUT)
            assert ok.status_code == 200
        text = requests.get(f"{srv.url}/metrics", timeout=TIMEOUT).text
    infer = {"model": "iris", "protocol": "v2", "route": "/v2/models/{model_name}/infer"}
    assert metric(text, "mlmodel_requests_total", **infer, code="200") == len(cases)
    assert metric(text, "mlmodel_requests_total", **infer, code="400") == 5
    assert metric(text, "mlmodel_requests_total", **infer, code="404") == 1
    assert metric(text, "mlmodel_input_rows_total", model="iris") == len(cases)
    assert metric(text, "mlmodel_predictions_total", model="iris", **{"class": "0"}) == len(cases)
    assert metric(text, "mlmodel_model_info", model="iris", version="5", sha256=sha) == 1


def test_error_inside_the_model_is_500_and_the_server_keeps_serving(
    tmp_path: Path, iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]
) -> None:
    # sqrt of a negative feature gives NaN, which LogisticRegression refuses: an error
    # inside the model for input that the protocol layer rightly accepts.
    model = make_pipeline(FunctionTransformer(np.sqrt), LogisticRegression(max_iter=1000)).fit(
        *iris
    )
    path = tmp_path / "sqrt.joblib"
    sha = save_model(model, path)
    env = {
        "MLMODEL_MODEL_NAME": "sqrt",
        "MLMODEL_ARTIFACT_URI": str(path),
        "MLMODEL_ARTIFACT_SHA256": sha,
    }
    with serving(env, tmp_path) as srv:
        r = requests.post(
            f"{srv.url}/v2/models/sqrt/infer",
            json=v2([[-1.0, 1.0, 1.0, 1.0]]),
            headers={"x-request-id": "trace-500"},
            timeout=TIMEOUT,
        )
        assert r.status_code == 500
        assert r.json()["request_id"] == "trace-500" and "trace-500" in r.json()["error"]
        ok = requests.post(
            f"{srv.url}/v2/models/sqrt/infer", json=v2([[5.1, 3.5, 1.4, 0.2]]), timeout=TIMEOUT
        )
        assert ok.status_code == 200
        assert (
            ok.json()["outputs"][0]["data"]
            == model.predict(np.array([[5.1, 3.5, 1.4, 0.2]])).tolist()
        )
    assert '"request_id": "trace-500"' in srv.log()


def test_sigterm_shuts_down_cleanly(tmp_path: Path, local_model: tuple[Path, str]) -> None:
    path, sha = local_model
    env = {
        "MLMODEL_MODEL_NAME": "iris",
        "MLMODEL_ARTIFACT_URI": str(path),
        "MLMODEL_ARTIFACT_SHA256": sha,
    }
    proc = ServeProcess(env, tmp_path).start()
    try:
        proc.wait_ready()
    finally:
        code = proc.stop()
    assert code == 0
    assert '"message": "shutting down"' in proc.log()


def test_drift_psi_against_a_baseline(
    tmp_path: Path,
    local_model: tuple[Path, str],
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
) -> None:
    from mlmodel_serving.drift import build_baseline

    path, sha = local_model
    baseline = tmp_path / "baseline.json"
    doc = orjson.loads(build_baseline(iris[0]).to_json())
    doc["predictions"] = {"classes": ["0", "1", "2"], "proportions": [1 / 3, 1 / 3, 1 / 3]}
    baseline.write_bytes(orjson.dumps(doc))
    env = {
        "MLMODEL_MODEL_NAME": "iris",
        "MLMODEL_ARTIFACT_URI": str(path),
        "MLMODEL_ARTIFACT_SHA256": sha,
        "MLMODEL_DRIFT_BASELINE_URI": str(baseline),
    }
    shifted = iris[0].copy()
    shifted[:, 0] += 5.0
    with serving(env, tmp_path) as srv:
        r = requests.post(f"{srv.url}/v2/models/iris/infer", json=v2(shifted), timeout=TIMEOUT)
        assert r.status_code == 200
        text = requests.get(f"{srv.url}/metrics", timeout=TIMEOUT).text
    assert metric(text, "mlmodel_drift_baseline_loaded", model="iris") == 1
    assert metric(text, "mlmodel_feature_psi", model="iris", feature="0") > 1
    assert metric(text, "mlmodel_feature_psi", model="iris", feature="1") < 0.1
    # The baseline has a predictions part, so the predicted-class PSI is exported too.
    assert "mlmodel_prediction_psi{" in text


def test_an_unreadable_baseline_does_not_stop_serving(
    tmp_path: Path, local_model: tuple[Path, str]
) -> None:
    path, sha = local_model
    bad = tmp_path / "baseline.json"
    bad.write_text('{"features": []}')
    env = {
        "MLMODEL_MODEL_NAME": "iris",
        "MLMODEL_ARTIFACT_URI": str(path),
        "MLMODEL_ARTIFACT_SHA256": sha,
        "MLMODEL_DRIFT_BASELINE_URI": str(bad),
    }
    with serving(env, tmp_path) as srv:
        text = requests.get(f"{srv.url}/metrics", timeout=TIMEOUT).text
        assert metric(text, "mlmodel_drift_baseline_loaded", model="iris") == 0
    assert "drift baseline not loaded" in srv.log()


def test_a_missing_object_exits_non_zero_and_names_it(minio: MinioServer, tmp_path: Path) -> None:
    mc = minio.client()
    if not mc.bucket_exists("models"):
        mc.make_bucket("models")
    env = {
        **s3_env(minio),
        "MLMODEL_MODEL_NAME": "ghost",
        "MLMODEL_ARTIFACT_URI": "s3://models/ghost/1/model.joblib",
        "MLMODEL_ARTIFACT_SHA256": "1" * 64,
    }
    with ServeProcess(env, tmp_path) as proc:
        code = proc.wait_exit(timeout=60)
    assert code == 1
    log = proc.log()
    assert "refusing to serve" in log and "NoSuchKey" in log and "ghost/1/model.joblib" in log
    assert minio.secret_key not in log


def test_a_store_that_is_down_at_start_fails_fast_and_the_next_start_serves(
    tmp_path: Path, local_model: tuple[Path, str]
) -> None:
    """MinIO down while a Pod starts: the server exits at once naming the store (the
    kubelet restarts it), and a start once the store is back serves the model."""
    path, sha = local_model
    store = MinioServer(tmp_path / "minio").start()
    try:
        uri = upload(store, "models", "iris/3/model.joblib", path)
        env = {
            **s3_env(store),
            "MLMODEL_MODEL_NAME": "iris",
            "MLMODEL_MODEL_VERSION": "3",
            "MLMODEL_ARTIFACT_URI": uri,
            "MLMODEL_ARTIFACT_SHA256": sha,
        }
        store.stop()
        (tmp_path / "down").mkdir()
        (tmp_path / "up").mkdir()
        with ServeProcess(env, tmp_path / "down") as proc:
            code = proc.wait_exit(timeout=60)
        log = proc.log()
        assert code == 1 and "refusing to serve" in log and store.endpoint.split(":")[1] in log
        assert store.secret_key not in log
        store.start()
        with serving(env, tmp_path / "up") as srv:
            r = requests.post(f"{srv.url}/v2/models/iris/infer", json=v2([[5.1, 3.5, 1.4, 0.2]]),
                              timeout=TIMEOUT)  # fmt: skip
            assert r.status_code == 200 and r.headers["x-model-sha256"] == sha
    finally:
        store.stop()
