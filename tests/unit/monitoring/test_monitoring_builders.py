"""monitoring: ServiceMonitor, PrometheusRule and dashboard builders, by equality."""

from __future__ import annotations

import dataclasses
import json
import re

import kubernetes_validate
import numpy as np
import pytest
from model_specs import OWNER, SHA, make_model
from prometheus_client import CollectorRegistry

from mlmodel_operator.metrics import OperatorMetrics
from mlmodel_operator.monitoring import (
    DASHBOARD_FILE,
    Alert,
    build_alerts,
    build_dashboard,
    build_dashboard_configmap,
    build_prometheus_rule,
    build_rule_groups,
    build_service_monitor,
    dashboard_panels,
    decision_log_panels,
)
from mlmodel_operator.settings import Settings
from mlmodel_serving.decisionlog import DecisionMetrics
from mlmodel_serving.drift import DriftMonitor, PredictionBaseline, build_baseline
from mlmodel_serving.metrics import ServingMetrics

SETTINGS = Settings()


MODEL = make_model()
FULL = make_model(
    monitoring={
        "slo": {"p99LatencyMs": 250, "errorRatio": 0.02},
        "drift": {"baselineUri": "s3://models/churn/3/baseline.json", "psiThreshold": 0.3},
    }
)
LABELS = {
    "app.kubernetes.io/name": "mlmodel-serving",
    "app.kubernetes.io/instance": "churn",
    "app.kubernetes.io/component": "model-server",
    "app.kubernetes.io/part-of": "mlmodel-lifecycle",
    "app.kubernetes.io/managed-by": "mlmodel-operator",
    "ml.lifecycle.io/model": "churn",
    "app.kubernetes.io/version": "3",
    "ml.lifecycle.io/version": "3",
}


def test_service_monitor() -> None:
    assert build_service_monitor(MODEL, SETTINGS) == {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {
            "name": "churn",
            "namespace": "team-a",
            "labels": LABELS,
            "ownerReferences": [OWNER],
        },
        "spec": {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/instance": "churn",
                    "ml.lifecycle.io/model": "churn",
                }
            },
            "namespaceSelector": {"matchNames": ["team-a"]},
            "endpoints": [
                {
                    "port": "http",
                    "path": "/metrics",
                    "interval": "15s",
                    "scrapeTimeout": "10s",
                    "relabelings": [
                        {
                            "action": "replace",
                            "sourceLabels": ["__meta_kubernetes_pod_label_ml_lifecycle_io_version"],
                            "targetLabel": "version",
                        }
                    ],
                }
            ],
        },
    }


def test_defaults_give_only_the_down_alert() -> None:
    (down,) = build_alerts(MODEL)
    assert down == Alert(
        name="MLModelDown",
        signal='(max(mlmodel_model_ready{namespace="team-a", model="churn"}) or on() vector(0))',
        op="<",
        threshold=1,
        for_="2m",
        severity="critical",
        summary="No ready replica of model churn version 3 in namespace team-a",
        description=(
            "No replica of model churn version 3 in namespace team-a has reported ready "
            "(mlmodel_model_ready) for 2 minutes, or none is scraped at all. Requests to the "
            "model fail. Check `kubectl -n team-a get mlmodel churn` and the pods' logs."
        ),
    )
    assert down.expr == (
        '(max(mlmodel_model_ready{namespace="team-a", model="churn"}) or on() vector(0)) < 1'
    )


def test_every_objective_becomes_an_alert() -> None:
    alerts = {a.name: a for a in build_alerts(FULL)}
    assert list(alerts) == [
        "MLModelDown",
        "MLModelErrorRatioHigh",
        "MLModelLatencyHigh",
        "MLModelInputDrift",
        "MLModelPredictionDrift",
        "MLModelDriftBaselineNotLoaded",
    ]
    infer = 'namespace="team-a", model="churn", route=~".+(/infer|:predict)"'
    assert alerts["MLModelErrorRatioHigh"].expr == (
        f'((sum(rate(mlmodel_requests_total{{{infer}, code=~"5.."}}[5m])) or on() vector(0))'
        f" / sum(rate(mlmodel_requests_total{{{infer}}}[5m]))) > 0.02"
    )
    assert alerts["MLModelLatencyHigh"].expr == (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(mlmodel_request_duration_seconds_bucket{{{infer}}}[5m]))) > 0.25"
    )
    assert alerts["MLModelInputDrift"].expr == (
        'max by (feature) (mlmodel_feature_psi{namespace="team-a", model="churn"}) > 0.3'
    )
    assert alerts["MLModelPredictionDrift"].expr == (
        'max(mlmodel_prediction_psi{namespace="team-a", model="churn"}) > 0.3'
    )
    assert alerts["MLModelDriftBaselineNotLoaded"].expr == (
        'min(mlmodel_drift_baseline_loaded{namespace="team-a", model="churn"}) < 1'
    )
    for alert in alerts.values():
        text = alert.summary + " " + alert.description
        assert "churn" in text and "team-a" in text and "version 3" in text, alert.name
        assert alert.severity in ("critical", "warning")


DECISIONS = make_model(decisionLog={"enabled": True, "queueRecords": 5000})


def test_the_decision_log_alerts() -> None:
    alerts = {a.name: a for a in build_alerts(DECISIONS)}
    assert list(alerts) == [
        "MLModelDown",
        "MLModelDecisionsDropped",
        "MLModelDecisionLogBacklog",
        "MLModelDecisionLogFailing",
    ]
    sel = '{namespace="team-a", model="churn"}'
    dropped = alerts["MLModelDecisionsDropped"]
    assert dropped.expr == f"sum(increase(mlmodel_decisions_dropped_total{sel}[5m])) > 0"
    assert (dropped.for_, dropped.severity) == ("0m", "warning")
    backlog = alerts["MLModelDecisionLogBacklog"]
    assert backlog.expr == (
        f"max(mlmodel_decision_queue_records{sel} / mlmodel_decision_queue_capacity{sel}) > 0.9"
    )
    assert (backlog.for_, backlog.severity) == ("2m", "warning")
    assert "spec.decisionLog.queueRecords is 5000" in backlog.description
    failing = alerts["MLModelDecisionLogFailing"]
    assert failing.expr == f"sum(increase(mlmodel_decision_flush_failures_total{sel}[5m])) > 0"
    assert (failing.for_, failing.severity) == ("1m", "warning")
    assert "spec.decisionLog.mode is best-effort" in failing.description
    for alert in alerts.values():
        text = alert.summary + " " + alert.description
        assert "churn" in text and "team-a" in text and "version 3" in text, alert.name


def test_a_required_decision_log_failing_is_critical() -> None:
    required = make_model(decisionLog={"enabled": True, "mode": "required"})
    failing = {a.name: a for a in build_alerts(required)}["MLModelDecisionLogFailing"]
    assert failing.severity == "critical"
    assert "spec.decisionLog.mode is required" in failing.description


def test_no_decision_log_alerts_while_it_is_off() -> None:
    configured = make_model(decisionLog={"enabled": False, "mode": "required"})
    assert [a.name for a in build_alerts(configured)] == ["MLModelDown"]
    assert build_rule_groups(configured) == build_rule_groups(MODEL)


def test_the_decision_log_row() -> None:
    row, *panels = decision_log_panels()
    assert row == {
        "type": "row",
        "title": "Decision log",
        "collapsed": False,
        "gridPos": {"x": 0, "y": 40, "w": 24, "h": 1},
        "panels": [],
    }
    sel = 'namespace="$namespace", model="$model", version=~"$version"'
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in panels}
    assert exprs == {
        "Decision records written": [
            f"sum(rate(mlmodel_decisions_written_total{{{sel}}}[$__rate_interval]))"
        ],
        "Decision records dropped": [
            f"sum(rate(mlmodel_decisions_dropped_total{{{sel}}}[$__rate_interval]))"
        ],
        "Decision queue": [
            f"sum by (pod) (mlmodel_decision_queue_records{{{sel}}})",
            f"max(mlmodel_decision_queue_capacity{{{sel}}})",
        ],
        "Decision flush latency p99": [
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(mlmodel_decision_flush_seconds_bucket{{{sel}}}[$__rate_interval])))"
        ],
        "Decision bytes written": [
            f"sum(rate(mlmodel_decision_bytes_total{{{sel}}}[$__rate_interval]))"
        ],
    }
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in panels}
    assert units["Decision bytes written"] == "Bps"
    assert units["Decision flush latency p99"] == "s"
    # the row starts below the last of the other panels
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard_panels())
    assert row["gridPos"]["y"] == bottom


def test_prometheus_rule() -> None:
    rule = build_prometheus_rule(FULL, SETTINGS)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"] == {
        "name": "churn",
        "namespace": "team-a",
        "labels": LABELS,
        "ownerReferences": [OWNER],
    }
    assert rule["spec"] == {"groups": build_rule_groups(FULL)}
    (group,) = rule["spec"]["groups"]
    assert group["name"] == "mlmodel.team-a.churn"
    latency = group["rules"][2]
    assert latency == {
        "alert": "MLModelLatencyHigh",
        "expr": build_alerts(FULL)[2].expr,
        "for": "5m",
        "labels": {
            "severity": "warning",
            "namespace": "team-a",
            "model": "churn",
            "version": "3",
        },
        "annotations": {
            "summary": "p99 latency of model churn version 3 in namespace team-a above its SLO",
            "description": (
                "The 99th-percentile inference latency of model churn version 3 in namespace "
                "team-a is {{ $value | humanizeDuration }} over 5m "
                "(spec.monitoring.slo.p99LatencyMs is 250 ms)."
            ),
        },
    }


def test_a_new_version_changes_the_rule_text() -> None:
    v4 = make_model(version="4")
    old, new = build_prometheus_rule(MODEL, SETTINGS), build_prometheus_rule(v4, SETTINGS)
    assert old != new
    assert new["spec"]["groups"][0]["rules"][0]["labels"]["version"] == "4"
    assert "version 4" in new["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]


def _exported_names() -> set[str]:
    """Every sample name the model server and the operator export."""
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry, "m")
    metrics.observe_request("v2", "/v2/models/{model_name}/infer", 200, 0.01)
    metrics.observe_batch(1, 1, 0.001)
    metrics.observe_predictions(np.array([1]), is_classifier=True)
    metrics.observe_predictions(np.array([2.5]), is_classifier=False)
    metrics.set_model_info(
        "1", SHA, dict.fromkeys(("python", "sklearn", "joblib", "numpy"), "x"), 1
    )
    x = np.random.default_rng(0).normal(size=(200, 2))
    metrics.drift.baseline_loaded = True
    baseline = dataclasses.replace(
        build_baseline(x), predictions=PredictionBaseline(("0", "1"), np.array([0.5, 0.5]))
    )
    metrics.drift.monitor = DriftMonitor(baseline)
    metrics.observe_inputs(x, np.zeros(len(x), dtype=np.int64))
    OperatorMetrics(registry).reconciles.labels(result="ok").inc()
    names = {s.name for family in registry.collect() for s in family.samples}
    return names | _decision_log_names()


def _decision_log_names() -> set[str]:
    """The decision log's series (only a server with the log on has them)."""
    registry = CollectorRegistry()
    metrics = DecisionMetrics(registry, "m", 100)
    metrics.written.inc()
    metrics.dropped.inc()
    metrics.failures.inc()
    metrics.bytes.inc(10)
    metrics.flush.observe(0.1)
    metrics.queue.set(1)
    return {s.name for family in registry.collect() for s in family.samples}


METRIC = re.compile(r"\b(mlmodel_[a-z_]+)\b")


def _dashboard_exprs() -> list[str]:
    panels = dashboard_panels() + decision_log_panels()
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_every_query_uses_metrics_that_are_really_exported() -> None:
    exported = _exported_names()
    exprs = [a.expr for a in build_alerts(FULL)] + [a.expr for a in build_alerts(DECISIONS)]
    exprs += _dashboard_exprs()
    exprs += [v["definition"] for v in build_dashboard()["templating"]["list"][1:]]
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used and used <= exported, used - exported


def test_dashboard_has_the_panels_and_variables() -> None:
    dashboard = build_dashboard()
    titles = [p["title"] for p in dashboard["panels"]]
    assert titles == [
        "Request rate",
        "Error ratio (5xx)",
        "Latency percentiles",
        "Batch sizes",
        "Prediction distribution",
        "Predicted values (regressors)",
        "Drift (PSI)",
        "Replicas ready",
        "Model version and digest",
        "Operator reconciles",
        "Models by phase",
        "Decision log",
        "Decision records written",
        "Decision records dropped",
        "Decision queue",
        "Decision flush latency p99",
        "Decision bytes written",
    ]
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "namespace", "model", "version"]
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "mlmodel_operator" not in target["expr"]:
                assert '"$namespace"' in target["expr"] and '"$model"' in target["expr"]
    # No two panels overlap on Grafana's 24-column grid.
    cells = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine


@pytest.mark.parametrize("kubernetes_version", ["1.30", "1.33"])
def test_dashboard_configmap(kubernetes_version: str) -> None:
    cm = build_dashboard_configmap("grafana")
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"][DASHBOARD_FILE]) == build_dashboard()
    kubernetes_validate.validate(cm, kubernetes_version, strict=True)
