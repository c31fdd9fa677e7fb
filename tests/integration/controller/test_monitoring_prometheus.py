"""Every dashboard query and alert signal returns data from a real Prometheus.

Debian's Prometheus scrapes two real ``mlmodel-serve`` processes serving scikit-learn
models trained here - a classifier with a drift baseline made by ``mlmodel baseline``, and
a regressor for the predicted-values panel - and the real operator process of the session
(reconciling an MLModel of this test), with the alert rules of the builder loaded. The test sends traffic - in-distribution, failing, then drifted -
and checks the drift gauge on each side of the threshold, the alerts Prometheus itself
evaluates, and the down alert after the server stops.

The scrape config gives the model server's target the labels the ServiceMonitor's
discovery and relabelling give it in a cluster (namespace, service, pod, version).
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from mlm_helpers import Artifact, Models
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from mlmodel_operator.localcluster import OperatorRunner, PrometheusServer, wait_until
from mlmodel_operator.monitoring import (
    build_alerts,
    build_rule_file,
    dashboard_panels,
    expand_variables,
    variable_selectors,
)
from mlmodel_operator.spec import ModelSpec, parse_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from serve_helpers import ServeProcess, save_model

pytestmark = pytest.mark.integration

NAMESPACE, NAME, VERSION = "team-a", "iris", "3"
REGRESSOR = "iris-width"
PSI_THRESHOLD = 0.2
WINDOW_ROWS = 600
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval becomes at a 1 s scrape
TIMEOUT = 10.0
MLMODEL_BIN = str(Path(sys.executable).parent / "mlmodel")


def spec_for(sha256: str, baseline_uri: str) -> ModelSpec:
    return parse_model(
        {
            "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "u", "generation": 1},
            "spec": {
                "version": VERSION,
                "artifact": {"uri": f"s3://models/{NAME}/{VERSION}/model.joblib", "sha256": sha256},
                "monitoring": {
                    "slo": {"p99LatencyMs": 100, "errorRatio": 0.01},
                    "drift": {"baselineUri": baseline_uri, "psiThreshold": PSI_THRESHOLD},
                },
            },
        }
    )


class Traffic:
    """Requests from a background thread until stopped (bounded by ``limit`` seconds)."""

    def __init__(
        self, url: str, x: np.ndarray[Any, Any], name: str = NAME, limit: float = 240.0
    ) -> None:
        self.url, self.x, self.name, self.limit = url, x, name, limit
        self.errors = name == NAME  # only the classifier gets the failing rows
        self.drifted = False
        self.sent_rows = 0
        self.codes: dict[int, int] = {}
        self._stop = threading.Event()
        self._rng = np.random.default_rng(1)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _body(self, rows: np.ndarray[Any, Any]) -> dict[str, Any]:
        return {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "data": rows.reshape(-1).tolist(),
                }
            ]
        }

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        session = requests.Session()
        i = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            i += 1
            rows = self.x[self._rng.integers(0, len(self.x), size=20)].copy()
            if self.drifted:
                rows[:, 2] += 4.0  # petal length far beyond anything in training
            if self.errors and i % 10 == 0:
                rows = np.array([[-1.0, 1.0, 1.0, 1.0]])  # sqrt(-1): an error inside the model
            try:
                r = session.post(
                    f"{self.url}/v2/models/{self.name}/infer",
                    json=self._body(rows),
                    timeout=TIMEOUT,
                )
            except requests.RequestException:
                time.sleep(0.1)
                continue
            self.codes[r.status_code] = self.codes.get(r.status_code, 0) + 1
            if r.status_code == 200:
                self.sent_rows += len(rows)
            time.sleep(0.02)
        session.close()


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[ServeProcess, ModelSpec, np.ndarray[Any, Any]]]:
    x, y = load_iris(return_X_y=True)
    model = make_pipeline(FunctionTransformer(np.sqrt), LogisticRegression(max_iter=1000)).fit(x, y)
    sha = save_model(model, tmp_path / "model.joblib")
    train = tmp_path / "train.csv"
    rows = [",".join(["sl", "sw", "pl", "pw", "species"])]
    rows += [",".join(str(v) for v in [*r, label]) for r, label in zip(x, y, strict=True)]
    train.write_text("\n".join(rows) + "\n")
    baseline = tmp_path / "baseline.json"
    subprocess.run(
        [MLMODEL_BIN, "baseline", str(train), "--model", str(tmp_path / "model.joblib"),
         "--sha256", sha, "--label", "species", "-o", str(baseline)],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    env = {
        "MLMODEL_MODEL_NAME": NAME,
        "MLMODEL_MODEL_VERSION": VERSION,
        "MLMODEL_ARTIFACT_URI": str(tmp_path / "model.joblib"),
        "MLMODEL_ARTIFACT_SHA256": sha,
        "MLMODEL_DRIFT_BASELINE_URI": str(baseline),
        "MLMODEL_DRIFT_WINDOW_ROWS": str(WINDOW_ROWS),
    }
    proc = ServeProcess(env, tmp_path).start()
    try:
        proc.wait_ready()
        # The spec's baselineUri must be s3://; the server was given the same file by path.
        yield proc, spec_for(sha, f"s3://models/{NAME}/{VERSION}/baseline.json"), x
    finally:
        proc.stop()


@pytest.fixture()
def regressor(tmp_path: Path) -> Iterator[tuple[ServeProcess, np.ndarray[Any, Any]]]:
    """A second server: a regressor (petal width from the other three measurements)."""
    x, _ = load_iris(return_X_y=True)
    workdir = tmp_path / "regressor"
    workdir.mkdir()
    sha = save_model(LinearRegression().fit(x[:, :3], x[:, 3]), workdir / "model.joblib")
    env = {
        "MLMODEL_MODEL_NAME": REGRESSOR,
        "MLMODEL_MODEL_VERSION": "1",
        "MLMODEL_ARTIFACT_URI": str(workdir / "model.joblib"),
        "MLMODEL_ARTIFACT_SHA256": sha,
    }
    proc = ServeProcess(env, workdir).start()
    try:
        proc.wait_ready()
        yield proc, x[:, :3]
    finally:
        proc.stop()


def scrape_job(name: str, version: str, port: int) -> str:
    """A job labelled as the ServiceMonitor's discovery and relabelling label it."""
    target = {
        "namespace": NAMESPACE,
        "service": name,
        "pod": f"{name}-v{version}-7d9f8-abcde",
        "container": "server",
        "endpoint": "http",
        "version": version,
    }
    labels = ", ".join(f'{k}: "{v}"' for k, v in target.items())
    return f"""
  - job_name: {name}
    static_configs: [{{targets: ["127.0.0.1:{port}"], labels: {{{labels}}}}}]"""


def prometheus_config(server_port: int, regressor_port: int, operator_port: int) -> str:
    return f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [rules.yaml]
scrape_configs:{scrape_job(NAME, VERSION, server_port)}{scrape_job(REGRESSOR, "1", regressor_port)}
  - job_name: mlmodel-operator
    static_configs:
      - targets: ["127.0.0.1:{operator_port}"]
        labels: {{namespace: mlmodel-system}}
"""


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, with the variables chosen as a user would:
    the classifier, except for the regressors' panel."""
    out = []
    for panel in dashboard_panels():
        for target in panel["targets"]:
            regressor = "mlmodel_prediction_value" in target["expr"]
            values = {
                "namespace": NAMESPACE,
                "model": REGRESSOR if regressor else NAME,
                "version": "1" if regressor else VERSION,
                "__rate_interval": RATE_INTERVAL,
            }
            out.append((panel["title"], expand_variables(target["expr"], values)))
    return out


def variable_queries() -> list[tuple[str, str]]:
    """label_values(SELECTOR, label) -> the selector, which must find series with that label."""
    values = {"namespace": NAMESPACE, "model": NAME}
    return [(label, expand_variables(sel, values)) for _, label, sel in variable_selectors()]


def values(prom: PrometheusServer, expr: str) -> list[float]:
    return [float(s["value"][1]) for s in prom.query(expr)]


def eventually(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    wait_until(what, check, timeout, interval=0.5)


def test_dashboard_and_alerts_on_real_prometheus_data(
    tmp_path: Path,
    served: tuple[ServeProcess, ModelSpec, np.ndarray[Any, Any]],
    regressor: tuple[ServeProcess, np.ndarray[Any, Any]],
    operator: OperatorRunner,
    mlm: Models,
    models: Callable[[str], Artifact],
) -> None:
    proc, model, x = served
    art = models("1")
    mlm.create(mlm.body("churn", "1", art))  # the operator reconciles it: real operator metrics
    mlm.wait_phase("churn", "Serving", version="1")

    alerts = {a.name: a for a in build_alerts(model)}
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    (prom_dir / "rules.yaml").write_text(build_rule_file(model))
    config = prometheus_config(proc.port, regressor[0].port, operator.metrics_port)
    prom = PrometheusServer(prom_dir, config).start()
    sel = f'namespace="{NAMESPACE}", model="{NAME}"'
    try:
        with Traffic(proc.url, x) as traffic, Traffic(regressor[0].url, regressor[1], REGRESSOR):
            # In distribution: a full window of rows like the training data.
            eventually(
                "a full drift window in Prometheus",
                lambda: values(prom, f"mlmodel_drift_window_rows{{{sel}}}") >= [WINDOW_ROWS],
            )
            time.sleep(3)  # a few more scrapes of in-distribution windows
            quiet = values(prom, f"max(max_over_time(mlmodel_feature_psi{{{sel}}}[3s]))")
            assert quiet and quiet[0] < PSI_THRESHOLD, quiet
            quiet = values(prom, f"max_over_time(mlmodel_prediction_psi{{{sel}}}[3s])")
            assert quiet and quiet[0] < PSI_THRESHOLD, quiet
            eventually(
                "the operator's reconciles in Prometheus",
                lambda: bool(prom.query("rate(mlmodel_operator_reconciles_total[30s]) > 0")),
            )

            # Every panel's query and every variable returns data that is a number.
            for title, expr in dashboard_queries():
                result = values(prom, expr)
                assert result, f"panel {title!r} has no data: {expr}"
                assert all(math.isfinite(v) for v in result), (title, expr, result)
            for label, selector in variable_queries():
                found = prom.query(selector)
                assert found and all(label in s["metric"] for s in found), (label, selector)

            # Every alert's signal returns a number; the error ratio and latency alerts'
            # whole expressions do too (errors are sent; the latency SLO is not met here
            # only if the machine is slow, so only the signal is required).
            for alert in alerts.values():
                result = values(prom, alert.signal)
                assert result and all(math.isfinite(v) for v in result), (alert.name, result)
            assert values(prom, alerts["MLModelDown"].signal) == [1.0]
            assert values(prom, alerts["MLModelErrorRatioHigh"].expr)  # 1 in 10 requests fails
            assert not prom.query(alerts["MLModelInputDrift"].expr)
            assert not prom.query(alerts["MLModelDriftBaselineNotLoaded"].expr)

            # Drifted inputs: the gauge of the shifted feature rises above the threshold,
            # the others stay below, and Prometheus starts the drift alert (pending: for 15m).
            traffic.drifted = True
            eventually(
                "petal length's PSI above the threshold",
                lambda: (
                    values(prom, f'mlmodel_feature_psi{{{sel}, feature="pl"}}') > [PSI_THRESHOLD]
                ),
            )
            drifted = prom.query(alerts["MLModelInputDrift"].expr)
            assert [s["metric"]["feature"] for s in drifted] == ["pl"]
            # Longer petals make the model answer "virginica" far more often.
            eventually(
                "the predicted classes' PSI above the threshold",
                lambda: bool(prom.query(alerts["MLModelPredictionDrift"].expr)),
            )
            eventually(
                "the drift alert pending in Prometheus",
                lambda: bool(prom.query('ALERTS{alertname="MLModelInputDrift", feature="pl"}')),
            )
            assert prom.query('ALERTS{alertname="MLModelErrorRatioHigh"}')
            assert traffic.codes.get(500) and traffic.codes.get(200)

        # The server stops: the down alert's expression returns data and the alert starts.
        proc.stop()
        eventually("MLModelDown's expression", lambda: bool(prom.query(alerts["MLModelDown"].expr)))
        eventually(
            "the down alert in Prometheus",
            lambda: bool(prom.query('ALERTS{alertname="MLModelDown", model="iris"}')),
        )
    finally:
        prom.stop()
