"""Progressive delivery on the real node (issue 18): canary and shadow, judged by the
servers' own metrics in a real Prometheus, with real traffic through kube-proxy.

The operator runs from its image (two replicas, peering) and reads Prometheus at the
node's bridge address; Prometheus scrapes the serving Pods through the ServiceMonitor
the operator wrote (targets discovered from the apiserver, as in prom_checks). Every
request is its own connection, so kube-proxy picks a Pod for each one: the share of a
canary's answers follows the share of its Pods.

The tests run in order on one installation (the node's, shared with the lifecycle
module: conftest.py), in their own namespace: a good canary promoted through both steps
with the operator killed in the middle of a step; a canary that fails on some inputs,
rolled back; a shadow of identical bytes, promoted; a shadow that disagrees on about 5%
of requests, refused; a slow canary, rolled back on its p99; a canary stopped by applying
the stable version again.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import yaml
from prom_checks import _fast, _write_if_changed, endpoints_discovery, scrape_config_for
from prom_checks import with_file_discovery as file_discovery
from shared_node import Installation

from mlmodel_operator import ledger, realstack
from mlmodel_operator.desired import selector_labels
from mlmodel_operator.example_models import churn_data
from mlmodel_operator.example_upload import upload_version
from mlmodel_operator.localcluster import LocalCluster, PrometheusServer, free_port, wait_until
from mlmodel_operator.monitoring import build_service_monitor
from mlmodel_operator.plan import ANN_STEP, ANN_STEP_SINCE
from mlmodel_operator.realnode import NODE_IP, RealNode
from mlmodel_operator.realstack import SYSTEM_NS, get_json
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import parse_model

pytestmark = pytest.mark.e2e

NS = "e2e-rollout"
NAME = "churn"
TIMEOUT = 240.0
# Not shorter: step 2's second candidate Pod takes most of its 15 s to become Ready, and
# the test wants 30 answers with every Pod of the step up (10 s gave 19).
STEPS = [{"weight": 34, "pauseSeconds": 15}, {"weight": 50, "pauseSeconds": 15}]
ROWS, _ = churn_data()
POOL = ROWS[:400]
UNKNOWN = 9.5  # a value of feature 0 the failing canary never saw in training


# ------------------------------------------------------------------ models


def _put(minio: Any, version: str, model: Any) -> str:
    buf = io.BytesIO()
    joblib.dump(model, buf)
    data = buf.getvalue()
    key = f"{NS}/{NAME}/{version}/model.joblib"
    minio.put_object("models", key, io.BytesIO(data), len(data))
    return hashlib.sha256(data).hexdigest()


def failing_model() -> Any:
    """A real Pipeline that answers 500 for rows whose feature 0 it never saw: a one-hot
    encoder (unknown categories are an error) over feature 0 rounded, then a forest."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    x, y = churn_data()
    x = x.copy()
    x[:, 0] = np.round(x[:, 0])
    encode = ColumnTransformer(
        [("f0", OneHotEncoder(handle_unknown="error"), [0])], remainder="passthrough"
    )
    forest = RandomForestClassifier(n_estimators=30, max_depth=6, random_state=3)
    return Pipeline([("encode", encode), ("forest", forest)]).fit(x, y)


def slow_model() -> Any:
    """A real forest of 2,000 trees, predicted tree by tree (the server's leaf tables
    off): tens of milliseconds a row where the stable answers in one or two."""
    from sklearn.ensemble import RandomForestClassifier

    x, y = churn_data()
    return RandomForestClassifier(n_estimators=2000, max_depth=6, random_state=4).fit(x, y)


def disagreeing_model(stable: Any, rows: np.ndarray[Any, Any], share: float) -> Any:
    """The stable forest behind a fixed decision threshold chosen so that it predicts
    the other class on ``share`` of ``rows`` (a real scikit-learn estimator)."""
    from sklearn.base import clone
    from sklearn.model_selection import FixedThresholdClassifier

    x, y = churn_data()
    proba = stable.predict_proba(rows)[:, 1]
    positive = np.sort(proba[proba >= 0.5])
    threshold = float(positive[int(share * len(rows))]) + 1e-9
    model = FixedThresholdClassifier(clone(stable), threshold=threshold)
    return model.fit(x, y)


# ------------------------------------------------------------------ the stack


@dataclass
class Stack:
    cluster: LocalCluster
    minio: Any
    prom: PrometheusServer
    digests: dict[str, str]
    stop_discovery: threading.Event

    def mlmodel(self) -> dict[str, Any]:
        body: dict[str, Any] = get_json(self.cluster, "mlmodel", NAME, "-n", NS)
        return body

    def status(self) -> dict[str, Any]:
        return dict(self.mlmodel().get("status") or {})

    def url(self) -> str:
        return f"http://{realstack.service_ip(self.cluster, NS, NAME)}:8080/v2/models/{NAME}/infer"

    def apply(self, version: str, strategy: str, steps: list[dict[str, Any]],
              analysis: dict[str, Any], **serving: Any) -> None:  # fmt: skip
        body = {
            "apiVersion": "ml.lifecycle.io/v1alpha1",
            "kind": "MLModel",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {
                "version": version,
                "artifact": {
                    "uri": f"s3://models/{NS}/{NAME}/{version}/model.joblib",
                    "sha256": self.digests[version],
                },
                "serving": {"replicas": 2, **serving},
                "retirement": {"drainSeconds": 5},
                "rollout": {
                    "strategy": strategy,
                    "steps": steps,
                    "analysis": analysis,
                    "readyTimeoutSeconds": int(TIMEOUT),
                },
            },
        }
        self.cluster.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(body))

    def deployments(self) -> list[str]:
        items = get_json(
            self.cluster, "deployments", "-n", NS, "-l", f"ml.lifecycle.io/model={NAME}"
        )
        return sorted(d["metadata"]["name"] for d in items["items"])

    def wait_serving(self, version: str, phase: str = "Serving") -> dict[str, Any]:
        """``version`` serves alone; ``phase`` Degraded after a refusal (the spec still
        names the refused version)."""

        def alone() -> bool:
            st = self.status()
            return (
                st.get("phase") == phase
                and st.get("activeVersion") == version
                and self.deployments() == [f"{NAME}-v{version}"]
            )

        try:
            wait_until(f"{NAME} v{version} Serving alone", alone, TIMEOUT, 1.0)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {json.dumps(self.status())}") from None
        return self.status()

    def wait_ended(self, version: str) -> dict[str, Any]:
        def ended() -> bool:
            last = self.status().get("lastRollout") or {}
            return last.get("candidate") == version and last.get("result") != "Progressing"

        try:
            wait_until(f"the rollout of {version} ended", ended, TIMEOUT, 0.5)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {json.dumps(self.status())}") from None
        return dict(self.status()["lastRollout"])


def _discover(cluster: LocalCluster, path: Path, stop: threading.Event) -> None:
    """Prometheus' endpoints discovery of the model's namespace, once a second (Debian's
    Prometheus has none of its own; prom_checks explains)."""
    while not stop.wait(1.0):
        try:
            groups = endpoints_discovery(
                cluster.api("GET", f"/api/v1/namespaces/{NS}/endpoints")["items"],
                cluster.api("GET", f"/api/v1/namespaces/{NS}/services")["items"],
                cluster.api("GET", f"/api/v1/namespaces/{NS}/pods")["items"],
            )
            _write_if_changed(path, json.dumps(groups))
        except (OSError, urllib.error.URLError, KeyError):
            continue  # the next second


@pytest.fixture(scope="module")
def stack(
    real_node: RealNode,
    installation: Installation,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The session's installation (conftest), this module's namespace, models and a
    Prometheus the operator reads (its configuration put back at the end)."""
    cluster, minio = installation.cluster, installation.minio
    workdir = tmp_path_factory.mktemp("rollout-stack")
    realstack.create_serving_namespace(cluster, NS)
    digests = {v: upload_version(minio, v, namespace=NS)[0] for v in ("1", "2")}
    v2 = joblib.load(io.BytesIO(_get(minio, f"{NS}/{NAME}/2/model.joblib")))
    digests["3"] = _put(minio, "3", failing_model())
    digests["21"] = _put(minio, "21", v2)  # the same forest, a new version name
    digests["22"] = _put(minio, "22", disagreeing_model(v2, POOL, 0.05))
    digests["4"] = _put(minio, "4", slow_model())
    digests["23"] = _put(minio, "23", v2)  # the same forest again: a canary stopped by hand

    # Prometheus where the operator's Pods reach it, scraping what the ServiceMonitor
    # of the model selects (the operator writes that one; this is the same function)
    if cluster.pki is None:
        raise AssertionError("the cluster has no PKI")
    tls = (cluster.pki.ca_cert, cluster.pki.admin_cert, cluster.pki.admin_key)
    spec = parse_model({"metadata": {"name": NAME, "namespace": NS, "uid": "x"},
                        "spec": {"version": "1", "artifact": {
                            "uri": "s3://models/x/y", "sha256": "0" * 64}}})  # fmt: skip
    monitor = build_service_monitor(spec, Settings())
    targets = workdir / "targets.json"
    targets.write_text("[]")
    job = file_discovery(_fast(scrape_config_for(monitor, cluster.server, *tls)), targets)
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [job]}  # fmt: skip
    prom = PrometheusServer(workdir / "prometheus", yaml.safe_dump(config), port=free_port(),
                            host=NODE_IP).start()  # fmt: skip
    stop = threading.Event()
    discovery = threading.Thread(target=_discover, args=(cluster, targets, stop), daemon=True)
    discovery.start()
    config_map = get_json(cluster, "configmap", "mlmodel-operator-config", "-n", SYSTEM_NS)
    before = (config_map.get("data") or {}).get("MLMODEL_PROMETHEUS_URL")
    cluster.kubectl(
        "patch", "configmap", "mlmodel-operator-config", "-n", SYSTEM_NS, "--type", "merge",
        "-p", json.dumps({"data": {"MLMODEL_PROMETHEUS_URL": prom.url}}),
    )  # fmt: skip
    cluster.kubectl("rollout", "restart", "deployment/mlmodel-operator", "-n", SYSTEM_NS)
    cluster.kubectl(
        "rollout", "status", "deployment/mlmodel-operator", "-n", SYSTEM_NS, "--timeout=180s"
    )
    try:
        yield Stack(cluster, minio, prom, digests, stop)
    finally:
        stop.set()
        discovery.join(5)
        prom.stop()
        # the configuration as it was, for a module after this one (the running operator
        # keeps this Prometheus' address until restarted: only an analysis reads it)
        cluster.kubectl(
            "patch", "configmap", "mlmodel-operator-config", "-n", SYSTEM_NS, "--type",
            "merge", "-p", json.dumps({"data": {"MLMODEL_PROMETHEUS_URL": before}}),
        )  # fmt: skip


def _get(minio: Any, key: str) -> bytes:
    resp = minio.get_object("models", key)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


# ------------------------------------------------------------------ traffic


@dataclass
class Answer:
    at: float
    ok: bool
    version: str | None
    step: int  # the rollout step when it was sent (0: none running)
    full: bool  # the candidate had all its replicas available when it was sent
    error: str = ""


@dataclass
class Traffic:
    """Requests of one row each, every one on a new connection, ``rate`` a second; with
    the rollout's step (polled from status) noted on each."""

    stack: Stack
    rows: Callable[[int], list[float]]
    rate: float = 15.0
    answers: list[Answer] = field(default_factory=list)
    step: int = 0
    full: bool = False
    starts: dict[int, set[str]] = field(default_factory=dict)  # status.rollout.stepStartedAt
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for target in (self._send, self._poll):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                st = self.stack.status()
                rollout = st.get("rollout") or {}
                self.step = int(rollout.get("step") or 0)
                if self.step:
                    self.starts.setdefault(self.step, set()).add(rollout["stepStartedAt"])
                cand = rollout.get("candidate")
                if cand:
                    dep = get_json(self.stack.cluster, "deployment", f"{NAME}-v{cand}", "-n", NS)
                    want = int(dep["spec"].get("replicas") or 0)
                    self.full = int(dep.get("status", {}).get("availableReplicas") or 0) >= want
            except Exception:
                continue

    def _send(self) -> None:
        url, seq = self.stack.url(), 0
        deadline = time.monotonic() + 900
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            row = self.rows(seq)
            body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, len(row)],
                                           "datatype": "FP64", "data": row}]}).encode()  # fmt: skip
            step, full = self.step, self.full
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    version = resp.headers.get("x-model-version")
                    self.answers.append(Answer(time.time(), True, version, step, full))
            except urllib.error.HTTPError as exc:
                version = exc.headers.get("x-model-version")
                error = f"HTTP {exc.code}: {exc.read()[:200]!r}"
                self.answers.append(Answer(time.time(), False, version, step, full, error))
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"
                self.answers.append(Answer(time.time(), False, None, step, full, error))
            seq += 1
            self._stop.wait(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def wait_for(self, count: int, timeout: float = 60) -> None:
        target = len(self.answers) + count
        wait_until(f"{count} more answers", lambda: len(self.answers) >= target, timeout)


def known_rows(seq: int) -> list[float]:
    return [float(v) for v in POOL[seq % len(POOL)]]


def rows_some_unknown(seq: int) -> list[float]:
    """Every fourth row has a value of feature 0 the failing canary never saw."""
    row = known_rows(seq)
    row[0] = UNKNOWN if seq % 4 == 0 else float(round(row[0]))
    return row


def ledger_kinds(stack: Stack) -> list[tuple[str, str]]:
    prefix = ledger.ledger_prefix(NS, NAME)
    out = []
    for obj in stack.minio.list_objects("model-archive", prefix=prefix, recursive=True):
        parsed = ledger.parse_key(obj.object_name)
        if parsed is not None:
            out.append((parsed[1], parsed[2]))
    return out


# ------------------------------------------------------------------ the tests

ANALYSIS = {"maxErrorRatio": 0.05, "minRequests": 10}


def test_a_good_canary_is_promoted_step_by_step_through_an_operator_kill(stack: Stack) -> None:
    stack.apply("1", "canary", STEPS, ANALYSIS)  # the first version: nothing to compare
    stack.wait_serving("1")
    realstack.wait_answering(stack.url())  # kube-proxy has the new Service's rules
    with Traffic(stack, known_rows) as traffic:
        traffic.wait_for(20)
        stack.apply("2", "canary", STEPS, ANALYSIS)
        wait_until("step 1 runs", lambda: traffic.step == 1 and traffic.full, TIMEOUT, 0.5)
        rollout = stack.status()["rollout"]
        notes = get_json(stack.cluster, "deployment", f"{NAME}-v2", "-n", NS)["metadata"]
        notes = notes.get("annotations") or {}
        # both operator replicas killed mid-step: the step comes back from the cluster
        stack.cluster.kubectl("delete", "pod", "-n", SYSTEM_NS, "-l",
                              "app.kubernetes.io/name=mlmodel-operator",
                              "--grace-period=0", "--force", "--wait=false")  # fmt: skip
        wait_until("step 2 runs", lambda: traffic.step == 2, TIMEOUT, 0.5)
        last = stack.wait_ended("2")
        stack.wait_serving("2")
        traffic.wait_for(15)
    assert last["result"] == "Promoted", last
    failed = [a for a in traffic.answers if not a.ok]
    start = traffic.answers[0].at
    assert not failed, [(round(a.at - start, 2), a.error) for a in failed[:5]]
    # the step survived the kill: not started again
    splits = [k for k in ledger_kinds(stack) if k == (ledger.TRAFFIC_SPLIT, "2")]
    assert len(splits) == 2, ledger_kinds(stack)
    # step 1 had begun when the operator was killed: in status (1 Pod of 3 for weight 34)
    # and on the candidate's Deployment, where a restarted operator finds it
    begun = {k: rollout.get(k) for k in ("strategy", "stable", "candidate", "step", "steps",
                                         "weight", "effectiveWeight", "result")}  # fmt: skip
    assert begun == {"strategy": "canary", "stable": "1", "candidate": "2", "step": 1,
                     "steps": 2, "weight": 34, "effectiveWeight": 33,
                     "result": "Progressing"}, rollout  # fmt: skip
    assert notes.get(ANN_STEP) == "1" and notes.get(ANN_STEP_SINCE), notes
    # ... and its start stayed what it was: the restarted operator went on with it
    assert traffic.starts[1] == {rollout["stepStartedAt"]}, traffic.starts
    assert set(traffic.starts) == {1, 2}, traffic.starts
    for step, weight in ((1, 1 / 3), (2, 1 / 2)):  # 1 of 3 Pods, then 2 of 4
        seen = [a for a in traffic.answers if a.step == step and a.full and a.ok]
        share = sum(a.version == "2" for a in seen) / max(1, len(seen))
        print(f"canary step {step}: {len(seen)} answers, {share:.2f} from v2 (Pods: {weight:.2f})")
        assert len(seen) >= 30, len(seen)
        assert abs(share - weight) < 0.2, (step, share, len(seen))


def test_a_failing_canary_is_rolled_back_and_only_its_share_failed(stack: Stack) -> None:
    slow_steps = [{"weight": 34, "pauseSeconds": 120}]  # the analysis ends it, not the clock
    with Traffic(stack, rows_some_unknown) as traffic:
        traffic.wait_for(20)
        stack.apply("3", "canary", slow_steps, ANALYSIS)
        last = stack.wait_ended("3")
        ended_at = time.time()
        status = stack.wait_serving("2", "Degraded")
        traffic.wait_for(45)
    assert last["result"] == "RolledBack", last
    (check,) = last["checks"]
    assert check["name"] == "errorRatio" and check["passed"] is False and check["value"] > 0.05
    failed = [a for a in traffic.answers if not a.ok]
    assert failed, "the failing canary answered no request"
    assert {a.version for a in failed} == {"3"}, failed[:5]  # only the canary's share
    first = min(a.at for a in failed)
    print(f"failing canary: first failed answer -> rolled back in {ended_at - first:.1f} s; "
          f"{len(failed)} of {len(traffic.answers)} requests failed")  # fmt: skip
    assert not [a for a in failed if a.at > ended_at + 10], "failures after the rollback"
    entry = next(h for h in status["history"] if h["version"] == "3")
    assert entry["reason"] == "RolledBack" and entry["archive"]  # it answered clients
    assert (ledger.ROLLED_BACK, "3") in ledger_kinds(stack)
    assert "step" not in last  # how this rollout ended, not a field of the one before
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack")


def test_a_shadow_of_identical_bytes_is_promoted_and_no_client_saw_it(stack: Stack) -> None:
    steps = [{"weight": 100, "pauseSeconds": 10}]
    analysis = {"minAgreement": 0.98, "minRequests": 30}
    with Traffic(stack, known_rows) as traffic:
        traffic.wait_for(20)
        stack.apply("21", "shadow", steps, analysis)
        last = stack.wait_ended("21")
        promoted_at = time.time()
        stack.wait_serving("21")
    assert last["result"] == "Promoted", last
    agreement = next(c for c in last["checks"] if c["name"] == "agreement")
    assert agreement["value"] == 1.0 and last["requests"] >= 30
    before = [a for a in traffic.answers if a.at < promoted_at - 5]
    assert before and {a.version for a in before} == {"2"}  # the candidate answered no one
    assert all(a.ok for a in traffic.answers)


def test_a_shadow_that_disagrees_on_5_percent_is_refused(stack: Stack) -> None:
    steps = [{"weight": 100, "pauseSeconds": 20}]
    analysis = {"minAgreement": 0.98, "minRequests": 100}
    with Traffic(stack, known_rows, rate=20) as traffic:
        traffic.wait_for(20)
        stack.apply("22", "shadow", steps, analysis)
        last = stack.wait_ended("22")
        traffic.wait_for(10)
    assert last["result"] == "RolledBack", last
    agreement = next(c for c in last["checks"] if c["name"] == "agreement")
    assert 0.9 < agreement["value"] < 0.98, agreement
    assert {a.version for a in traffic.answers} == {"21"}  # no client saw the candidate
    assert all(a.ok for a in traffic.answers)
    status = stack.wait_serving("21", "Degraded")
    assert not [h for h in status["history"] if h["version"] == "22"]  # never served


def test_a_slow_canary_is_rolled_back_on_its_p99(stack: Stack) -> None:
    slow_steps = [{"weight": 34, "pauseSeconds": 120}]  # the analysis ends it, not the clock
    analysis = {"maxP99LatencyMs": 25, "minRequests": 10}
    with Traffic(stack, known_rows) as traffic:
        traffic.wait_for(20)
        stack.apply("4", "canary", slow_steps, analysis, leafTables=False)
        last = stack.wait_ended("4")
        stack.wait_serving("21", "Degraded")
    assert last["result"] == "RolledBack", last
    (check,) = last["checks"]
    assert check["name"] == "p99LatencyMs" and check["passed"] is False and check["value"] > 25
    print(f"slow canary: p99 {check['value']:.0f} ms (limit 25) -> rolled back")
    assert all(a.ok for a in traffic.answers)  # slow, not failing


def test_applying_the_stable_version_mid_canary_aborts_it_cleanly(stack: Stack) -> None:
    """docs/rollout.md: applying the stable version again while a rollout runs stops it;
    the candidate retires (``lastRollout.result: Aborted``), archived first since it
    answered clients, and the Service selects the stable version alone again."""
    long_step = [{"weight": 34, "pauseSeconds": 600}]  # nothing but the abort ends it
    stack.wait_serving("21", "Degraded")  # as the slow canary left it (the spec names 4)
    with Traffic(stack, known_rows) as traffic:
        traffic.wait_for(20)
        stack.apply("23", "canary", long_step, ANALYSIS)
        wait_until("step 1 runs", lambda: traffic.step == 1 and traffic.full, TIMEOUT, 0.5)
        wait_until(
            "the canary answers clients",
            lambda: sum(a.version == "23" for a in traffic.answers) >= 10,
            60,
            0.5,
        )
        assert stack.status()["rollout"]["candidate"] == "23"
        stack.apply("21", "canary", long_step, ANALYSIS)  # the stable version, its artifact
        last = stack.wait_ended("23")
        status = stack.wait_serving("21")
        aborted_at = time.time()
        traffic.wait_for(30)
    failed = [a for a in traffic.answers if not a.ok]
    start = traffic.answers[0].at
    assert not failed, [(round(a.at - start, 2), a.error) for a in failed[:5]]
    print(f"abort by applying the stable version: {len(traffic.answers)} requests, "
          f"{sum(a.version == '23' for a in traffic.answers)} answered by the canary")  # fmt: skip

    assert (last["result"], last["strategy"], last["stable"]) == ("Aborted", "canary", "21")
    assert "spec.version is now 21" in last.get("message", ""), last
    assert "rollout" not in status, status["rollout"]
    # the candidate's Deployment is gone and the Service selects version 21 alone again
    assert stack.deployments() == [f"{NAME}-v21"]
    service = get_json(stack.cluster, "service", NAME, "-n", NS)
    assert service["spec"]["selector"] == selector_labels(NAME, "21"), service["spec"]
    after = [a for a in traffic.answers if a.at > aborted_at]
    assert after and {a.version for a in after} == {"21"}, {a.version for a in after}

    # it answered clients, so it retired as a served version does: archived, then deleted
    entry = next(h for h in status["history"] if h["version"] == "23")
    assert entry.get("retiredAt") and entry.get("archive"), entry
    kinds = ledger_kinds(stack)
    for kind in (ledger.TRAFFIC_SPLIT, ledger.RETIRING, ledger.ARCHIVED, ledger.RETIRED):
        assert (kind, "23") in kinds, (kind, kinds)
    archived = {o.object_name for o in stack.minio.list_objects(
        "model-archive", prefix=f"{NS}/{NAME}/23/", recursive=True)}  # fmt: skip
    assert f"{NS}/{NAME}/23/manifest.json" in archived, archived
    events = get_json(stack.cluster, "events", "-n", NS, "--field-selector",
                      f"involvedObject.kind=MLModel,involvedObject.name={NAME}")  # fmt: skip
    said = [(e["reason"], e.get("message", "")) for e in events["items"]]
    assert any(r == "Retired" and "version 23" in m for r, m in said), said
    print(f"aborted: lastRollout {json.dumps(last)}; history {json.dumps(entry)}; ledger "
          f"{sorted(k for k, v in kinds if v == '23')}; events {sorted({r for r, _ in said})}")  # fmt: skip
