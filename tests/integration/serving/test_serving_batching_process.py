"""Micro-batching in a real mlmodel-serve process, under a bounded concurrent load."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from serve_helpers import metric, save_model, serving
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

pytestmark = pytest.mark.integration
CLIENTS = 16
LOAD_SECONDS = 3.0
TIMEOUT = 10


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, np.ndarray[Any, Any], Path, str]:
    x, y = make_classification(n_samples=400, n_features=20, n_informative=10, random_state=2)
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y)
    path = tmp_path_factory.mktemp("forest") / "forest.joblib"
    return model, x, path, save_model(model, path)


def body(rows: np.ndarray[Any, Any], outputs: tuple[str, ...]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "x",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.reshape(-1).tolist(),
            }
        ],
        "outputs": [{"name": o} for o in outputs],
    }


def test_concurrent_predictions_are_batched_and_exact_and_health_stays_fast(
    tmp_path: Path, forest: tuple[Any, np.ndarray[Any, Any], Path, str]
) -> None:
    model, x, path, sha = forest
    env = {
        "MLMODEL_MODEL_NAME": "forest",
        "MLMODEL_ARTIFACT_URI": str(path),
        "MLMODEL_ARTIFACT_SHA256": sha,
        "MLMODEL_MAX_BATCH_SIZE": "32",
        "MLMODEL_MAX_BATCH_LATENCY_MS": "5",
    }
    expected_predict = model.predict(x)
    expected_proba = model.predict_proba(x)
    stop = threading.Event()
    mismatches: list[str] = []
    counts = [0] * CLIENTS

    def client(i: int, url: str) -> None:
        session = requests.Session()
        rng = np.random.default_rng(i)
        deadline = time.monotonic() + LOAD_SECONDS
        while not stop.is_set() and time.monotonic() < deadline:
            n = int(rng.integers(1, 4))
            start = int(rng.integers(0, len(x) - n))
            outputs = ("predict", "predict_proba") if i % 2 else ("predict",)
            r = session.post(url, json=body(x[start : start + n], outputs), timeout=TIMEOUT)
            got = r.json()["outputs"] if r.status_code == 200 else None
            if got is None or got[0]["data"] != expected_predict[start : start + n].tolist():
                mismatches.append(f"client {i}: {r.status_code} {r.text[:200]}")
            elif (
                len(got) == 2
                and got[1]["data"] != expected_proba[start : start + n].ravel().tolist()
            ):
                mismatches.append(f"client {i}: probabilities differ")
            counts[i] += 1

    with serving(env, tmp_path) as srv:
        url = f"{srv.url}/v2/models/forest/infer"
        health = requests.Session()
        latencies: list[float] = []
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(client, i, url) for i in range(CLIENTS)]
            time.sleep(0.5)  # let the load build up
            try:
                for _ in range(20):
                    start = time.perf_counter()
                    r = health.get(f"{srv.url}/v2/health/ready", timeout=TIMEOUT)
                    latencies.append(time.perf_counter() - start)
                    assert r.status_code == 200
                    time.sleep(0.05)
            finally:
                stop.set()
                for f in futures:
                    f.result(timeout=LOAD_SECONDS + 2 * TIMEOUT)
        text = requests.get(f"{srv.url}/metrics", timeout=TIMEOUT).text

    print(
        f"requests={sum(counts)} predict calls={metric(text, 'mlmodel_batch_size_count', model='forest'):.0f} "
        f"health median={statistics.median(latencies) * 1000:.1f} ms max={max(latencies) * 1000:.1f} ms"
    )
    assert not mismatches, mismatches[:5]
    total = sum(counts)
    assert total > 0
    calls = metric(text, "mlmodel_batch_size_count", model="forest")
    requests_batched = metric(text, "mlmodel_batch_requests_sum", model="forest")
    assert requests_batched == total
    assert calls < total, "no two requests ever shared a predict call"
    assert metric(text, "mlmodel_batch_queue_wait_seconds_count", model="forest") == total
    # Health checks are answered by the event loop while predict runs in a thread. The
    # bound is loose because the load generator shares the machine's cores.
    assert statistics.median(latencies) < 0.05, latencies
    assert max(latencies) < 0.5, latencies
