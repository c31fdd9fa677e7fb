"""Pure builders for monitoring: ServiceMonitor, PrometheusRule and the Grafana dashboard.

No I/O: everything comes from the parsed `ModelSpec`. The PromQL uses the metric names
the model server really exports (``mlmodel_serving.metrics``) and the target labels the
ServiceMonitor gives every series: ``namespace``, ``service``, ``pod`` (from the Prometheus
operator) and ``version`` (the pod's ``ml.lifecycle.io/version`` label, by relabelling).
The server adds ``model`` itself.

Every alert is a *signal* compared with a threshold, so a test can query the signal on a
healthy model and see data, and query the whole expression to see it fire.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from mlmodel_operator.desired import (
    METRICS_PATH,
    MODEL_LABEL,
    PORT_NAME,
    model_labels,
    owner_reference,
)
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import ModelSpec

MONITORING_API_VERSION: Final = "monitoring.coreos.com/v1"
SERVICE_MONITOR_CRD: Final = "servicemonitors.monitoring.coreos.com"
PROMETHEUS_RULE_CRD: Final = "prometheusrules.monitoring.coreos.com"
MONITORING_CRDS: Final = (SERVICE_MONITOR_CRD, PROMETHEUS_RULE_CRD)

SCRAPE_INTERVAL: Final = "15s"
RATE_WINDOW: Final = "5m"
# Inference routes only: health checks and scrapes must not dilute the error ratio.
INFER_ROUTES: Final = ".+(/infer|:predict)"
VERSION_POD_LABEL: Final = "__meta_kubernetes_pod_label_ml_lifecycle_io_version"

DASHBOARD_UID: Final = "mlmodel-overview"
DASHBOARD_FILE: Final = "mlmodel-overview.json"
DASHBOARD_CONFIGMAP: Final = "mlmodel-grafana-dashboard"
GRAFANA_DASHBOARD_LABEL: Final = "grafana_dashboard"


def monitoring_name(model: ModelSpec) -> str:
    """Name of the model's ServiceMonitor and PrometheusRule (one of each kind)."""
    return model.ref.name


# ----------------------------------------------------------------------- ServiceMonitor


def build_service_monitor(model: ModelSpec, settings: Settings) -> dict[str, Any]:
    """A ServiceMonitor scraping the model's Service (the active version's pods)."""
    del settings  # the port is referred to by name; nothing else is configurable yet
    return {
        "apiVersion": MONITORING_API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": {
            "name": monitoring_name(model),
            "namespace": model.ref.namespace,
            "labels": model_labels(model, model.version),
            "ownerReferences": [owner_reference(model)],
        },
        "spec": {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/instance": model.ref.name,
                    MODEL_LABEL: model.ref.name,
                }
            },
            "namespaceSelector": {"matchNames": [model.ref.namespace]},
            "endpoints": [
                {
                    "port": PORT_NAME,
                    "path": METRICS_PATH,
                    "interval": SCRAPE_INTERVAL,
                    "scrapeTimeout": "10s",
                    # Every series gets the served version, so the dashboard can filter.
                    "relabelings": [
                        {
                            "action": "replace",
                            "sourceLabels": [VERSION_POD_LABEL],
                            "targetLabel": "version",
                        }
                    ],
                }
            ],
        },
    }


# ------------------------------------------------------------------------------ alerts


@dataclass(frozen=True)
class Alert:
    """One alerting rule: ``signal <op> threshold`` held for ``for_``."""

    name: str
    signal: str
    op: str
    threshold: float
    for_: str
    severity: str
    summary: str
    description: str

    @property
    def expr(self) -> str:
        return f"{self.signal} {self.op} {_number(self.threshold)}"


def template_text(value: str) -> str:
    """``value`` as literal text in an annotation, which Prometheus expands as a Go template.

    Text from the spec (an S3 key may hold ``{{``) must be printed, never run: with a
    delimiter in it, it becomes one action printing a Go string literal (JSON's escapes
    are Go's).
    """
    if "{{" not in value and "}}" not in value:
        return value
    return "{{ " + json.dumps(value) + " }}"


def _number(value: float) -> str:
    """A PromQL number literal without float noise (0.2, not 0.20000000000000001)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _selector(model: ModelSpec, *extra: str) -> str:
    parts = [f'namespace="{model.ref.namespace}"', f'model="{model.ref.name}"', *extra]
    return "{" + ", ".join(parts) + "}"


def build_alerts(model: ModelSpec) -> tuple[Alert, ...]:
    """The alerts of one model: down always; each SLO that is set; drift with a baseline."""
    ns, name, version = model.ref.namespace, model.ref.name, model.version
    who = f"model {name} version {version} in namespace {ns}"
    sel = _selector(model)
    infer = _selector(model, f'route=~"{INFER_ROUTES}"')
    errors = _selector(model, f'route=~"{INFER_ROUTES}"', 'code=~"5.."')
    alerts = [
        Alert(
            name="MLModelDown",
            # Empty when nothing is scraped at all: "or vector(0)" makes that a 0, not silence.
            signal=f"(max(mlmodel_model_ready{sel}) or on() vector(0))",
            op="<",
            threshold=1,
            for_="2m",
            severity="critical",
            summary=f"No ready replica of {who}",
            description=(
                f"No replica of {who} has reported ready (mlmodel_model_ready) for 2 minutes, "
                "or none is scraped at all. Requests to the model fail. "
                f"Check `kubectl -n {ns} get mlmodel {name}` and the pods' logs."
            ),
        )
    ]
    slo = model.monitoring.slo
    if slo.error_ratio is not None:
        alerts.append(
            Alert(
                name="MLModelErrorRatioHigh",
                signal=(
                    f"((sum(rate(mlmodel_requests_total{errors}[{RATE_WINDOW}])) or on() vector(0))"
                    f" / sum(rate(mlmodel_requests_total{infer}[{RATE_WINDOW}])))"
                ),
                op=">",
                threshold=slo.error_ratio,
                for_="5m",
                severity="critical",
                summary=f"Error ratio of {who} above its SLO",
                description=(
                    f"{{{{ $value | humanizePercentage }}}} of the inference requests to {who} "
                    f"failed with a 5xx status over {RATE_WINDOW} "
                    f"(spec.monitoring.slo.errorRatio is {_number(slo.error_ratio)})."
                ),
            )
        )
    if slo.p99_latency_ms is not None:
        alerts.append(
            Alert(
                name="MLModelLatencyHigh",
                signal=(
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(mlmodel_request_duration_seconds_bucket{infer}[{RATE_WINDOW}])))"
                ),
                op=">",
                threshold=slo.p99_latency_ms / 1000.0,
                for_="5m",
                severity="warning",
                summary=f"p99 latency of {who} above its SLO",
                description=(
                    f"The 99th-percentile inference latency of {who} is "
                    "{{ $value | humanizeDuration }} over "
                    f"{RATE_WINDOW} (spec.monitoring.slo.p99LatencyMs is "
                    f"{_number(slo.p99_latency_ms)} ms)."
                ),
            )
        )
    drift = model.monitoring.drift
    if drift.enabled:
        alerts.append(
            Alert(
                name="MLModelInputDrift",
                signal=f"max by (feature) (mlmodel_feature_psi{sel})",
                op=">",
                threshold=drift.psi_threshold,
                for_="15m",
                severity="warning",
                summary=f"Input drift on feature {{{{ $labels.feature }}}} of {who}",
                description=(
                    "The population stability index of input feature {{ $labels.feature }} "
                    f'of {who} is {{{{ $value | printf "%.3f" }}}} against the training '
                    f"baseline (spec.monitoring.drift.psiThreshold is "
                    f"{_number(drift.psi_threshold)}). Recent inputs no longer look like "
                    "the training data: check the data source, or retrain."
                ),
            )
        )
        alerts.append(
            Alert(
                name="MLModelPredictionDrift",
                signal=f"max(mlmodel_prediction_psi{sel})",
                op=">",
                threshold=drift.psi_threshold,
                for_="15m",
                severity="warning",
                summary=f"Predicted classes of {who} drifted",
                description=(
                    f"The population stability index of the classes {who} predicts is "
                    '{{ $value | printf "%.3f" }} against the classes it predicted on its '
                    f"training data (spec.monitoring.drift.psiThreshold is "
                    f"{_number(drift.psi_threshold)}): the model's answers changed."
                ),
            )
        )
        alerts.append(
            Alert(
                name="MLModelDriftBaselineNotLoaded",
                signal=f"min(mlmodel_drift_baseline_loaded{sel})",
                op="<",
                threshold=1,
                for_="5m",
                severity="warning",
                summary=f"Drift baseline of {who} could not be loaded",
                description=(
                    f"{who.capitalize()} serves without drift metrics: its baseline "
                    f"{template_text(drift.baseline_uri or '')} could not be read or does not fit the model "
                    "(see the server's log)."
                ),
            )
        )
    if model.decision_log.enabled:
        alerts.extend(_decision_log_alerts(model, who, sel))
    return tuple(alerts)


def _decision_log_alerts(model: ModelSpec, who: str, sel: str) -> list[Alert]:
    """The decision log's alerts: records dropped, the queue nearly full, writes failing."""
    log = model.decision_log
    return [
        Alert(
            name="MLModelDecisionsDropped",
            signal=f"sum(increase(mlmodel_decisions_dropped_total{sel}[{RATE_WINDOW}]))",
            op=">",
            threshold=0,
            for_="0m",
            severity="warning",
            summary=f"Decision records of {who} dropped",
            description=(
                f'{{{{ $value | printf "%.0f" }}}} decision records of {who} were dropped '
                f"over {RATE_WINDOW} (mlmodel_decisions_dropped_total): those inferences "
                "are missing from the decision log. See the server's log and the "
                "DecisionLogReady condition."
            ),
        ),
        Alert(
            name="MLModelDecisionLogBacklog",
            signal=(
                f"max(mlmodel_decision_queue_records{sel} / mlmodel_decision_queue_capacity{sel})"
            ),
            op=">",
            threshold=0.9,
            for_="2m",
            severity="warning",
            summary=f"Decision log queue of {who} nearly full",
            description=(
                f"A replica of {who} holds {{{{ $value | humanizePercentage }}}} of its "
                "decision queue (spec.decisionLog.queueRecords is "
                f"{log.queue_records}): records arrive faster than they are written. When "
                + (
                    "it is full the model answers 503 (spec.decisionLog.mode is required)."
                    if log.required
                    else "it is full, records are dropped."
                )
            ),
        ),
        Alert(
            name="MLModelDecisionLogFailing",
            signal=f"sum(increase(mlmodel_decision_flush_failures_total{sel}[{RATE_WINDOW}]))",
            op=">",
            threshold=0,
            for_="1m",
            severity="critical" if log.required else "warning",
            summary=f"Decision records of {who} are not being written",
            description=(
                f'{{{{ $value | printf "%.0f" }}}} writes of decision records of {who} to '
                f"the object store failed over {RATE_WINDOW} "
                f"(mlmodel_decision_flush_failures_total; spec.decisionLog.mode is "
                f"{log.mode}). Check the bucket and the DecisionLogReady condition."
            ),
        ),
    ]


def build_rule_groups(model: ModelSpec) -> list[dict[str, Any]]:
    """The rule groups of one model, as in a Prometheus rule file."""
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.for_,
            "labels": {
                "severity": a.severity,
                "namespace": model.ref.namespace,
                "model": model.ref.name,
                "version": model.version,
            },
            "annotations": {"summary": a.summary, "description": a.description},
        }
        for a in build_alerts(model)
    ]
    return [{"name": f"mlmodel.{model.ref.namespace}.{model.ref.name}", "rules": rules}]


def build_prometheus_rule(model: ModelSpec, settings: Settings) -> dict[str, Any]:
    """The PrometheusRule holding the model's alerts."""
    del settings
    return {
        "apiVersion": MONITORING_API_VERSION,
        "kind": "PrometheusRule",
        "metadata": {
            "name": monitoring_name(model),
            "namespace": model.ref.namespace,
            "labels": model_labels(model, model.version),
            "ownerReferences": [owner_reference(model)],
        },
        "spec": {"groups": build_rule_groups(model)},
    }


def build_rule_file(model: ModelSpec) -> str:
    """A plain Prometheus rule file (for `promtool` and Prometheus without the operator)."""
    return yaml.safe_dump({"groups": build_rule_groups(model)}, sort_keys=False, width=1000)


# --------------------------------------------------------------------------- dashboard

_SEL = 'namespace="$namespace", model="$model", version=~"$version"'
_INFER = f'{_SEL}, route=~"{INFER_ROUTES}"'
_RATE = "$__rate_interval"


def _panel(
    title: str,
    targets: list[tuple[str, str]],
    unit: str,
    x: int,
    y: int,
    w: int = 12,
    h: int = 8,
    kind: str = "timeseries",
    description: str = "",
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _variable(name: str, query: str, *, multi: bool = False) -> dict[str, Any]:
    variable: dict[str, Any] = {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
    }
    if multi:
        variable["allValue"] = ".*"
        variable["current"] = {"text": "All", "value": "$__all"}
    return variable


def dashboard_panels() -> list[dict[str, Any]]:
    """The dashboard's panels for every served model, top to bottom (each query filtered
    by the variables); the decision log's row follows them (`decision_log_panels`)."""
    return [
        _panel(
            "Request rate",
            [(f"sum by (route, code) (rate(mlmodel_requests_total{{{_INFER}}}[{_RATE}]))",
              "{{route}} {{code}}")],
            "reqps", 0, 0,
            description="Inference requests per second by route and status code.",
        ),
        _panel(
            "Error ratio (5xx)",
            [(f'(sum(rate(mlmodel_requests_total{{{_INFER}, code=~"5.."}}[{_RATE}])) '
              f"or on() vector(0)) / sum(rate(mlmodel_requests_total{{{_INFER}}}[{_RATE}]))",
              "error ratio")],
            "percentunit", 12, 0,
            description="Share of inference requests answered with a 5xx status.",
        ),
        _panel(
            "Latency percentiles",
            [(f"histogram_quantile({q}, sum by (le) "
              f"(rate(mlmodel_request_duration_seconds_bucket{{{_INFER}}}[{_RATE}])))",
              f"p{round(q * 100)}") for q in (0.5, 0.9, 0.99)],
            "s", 0, 8,
        ),
        _panel(
            "Batch sizes",
            [(f"histogram_quantile({q}, sum by (le) "
              f"(rate(mlmodel_batch_size_bucket{{{_SEL}}}[{_RATE}])))", f"rows p{round(q * 100)}")
             for q in (0.5, 0.99)]
            + [(f"sum(rate(mlmodel_batch_size_sum{{{_SEL}}}[{_RATE}])) / "
                f"sum(rate(mlmodel_batch_size_count{{{_SEL}}}[{_RATE}]))", "rows mean"),
               (f"sum(rate(mlmodel_batch_requests_sum{{{_SEL}}}[{_RATE}])) / "
                f"sum(rate(mlmodel_batch_requests_count{{{_SEL}}}[{_RATE}]))", "requests mean")],
            "short", 12, 8,
            description="Rows and requests per predict call (adaptive micro-batching).",
        ),
        _panel(
            "Prediction distribution",
            [(f'sum by (class) (rate(mlmodel_predictions_total{{{_SEL}}}[{_RATE}])) / '
              f"scalar(sum(rate(mlmodel_predictions_total{{{_SEL}}}[{_RATE}])))",
              "class {{class}}")],
            "percentunit", 0, 16, w=8,
            description="Share of predicted rows by class (classifiers).",
        ),
        _panel(
            "Predicted values (regressors)",
            [(f"histogram_quantile({q}, sum by (le) "
              f"(rate(mlmodel_prediction_value_bucket{{{_SEL}}}[{_RATE}])))",
              f"p{round(q * 100)}") for q in (0.1, 0.5, 0.9)],
            "short", 8, 16, w=8,
            description=(
                "Quantiles of the predicted values (regressors), as coarse as the server's "
                "histogram buckets (powers of ten; no _sum: the buckets go below zero)."
            ),
        ),
        _panel(
            "Drift (PSI)",
            [(f"max by (feature) (mlmodel_feature_psi{{{_SEL}}})", "feature {{feature}}"),
             (f"max(mlmodel_prediction_psi{{{_SEL}}})", "predicted classes")],
            "short", 16, 16, w=8,
            description=(
                "Population stability index of each input feature, and of the predicted "
                "classes, against the training baseline; under 0.1 stable, above 0.25 a "
                "large shift."
            ),
        ),
        _panel(
            "Replicas ready",
            [(f"sum(mlmodel_model_ready{{{_SEL}}})", "ready"),
             (f"count(mlmodel_model_ready{{{_SEL}}})", "scraped")],
            "short", 0, 24, w=8,
        ),
        _panel(
            "Model version and digest",
            [('max by (version, sha256) '
              '(mlmodel_model_info{namespace="$namespace", model="$model"})',
              "v{{version}} {{sha256}}")],
            "short", 8, 24, w=16,
            description="The loaded version and artifact digest over time: a switch is visible.",
        ),
        _panel(
            "Operator reconciles",
            [(f"sum by (result) (rate(mlmodel_operator_reconciles_total[{_RATE}]))",
              "{{result}}"),
             ("histogram_quantile(0.99, sum by (le) "
              f"(rate(mlmodel_operator_reconcile_duration_seconds_bucket[{_RATE}])))",
              "p99 duration (s)")],
            "short", 0, 32,
            description="The operator's reconciles per second by result, and their p99 time.",
        ),
        _panel(
            "Models by phase",
            [("sum by (phase) (mlmodel_operator_models)", "{{phase}}")],
            "short", 12, 32,
        ),
    ]  # fmt: skip


def decision_log_panels(y: int = 40) -> list[dict[str, Any]]:
    """The "Decision log" row and its panels, from ``y`` down. They have data only for
    models with spec.decisionLog.enabled."""
    return [
        {
            "type": "row",
            "title": "Decision log",
            "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
            "panels": [],
        },
        _panel(
            "Decision records written",
            [(f"sum(rate(mlmodel_decisions_written_total{{{_SEL}}}[{_RATE}]))", "written/s")],
            "ops", 0, y + 1, w=8,
            description="Decision records written to the object store per second.",
        ),
        _panel(
            "Decision records dropped",
            [(f"sum(rate(mlmodel_decisions_dropped_total{{{_SEL}}}[{_RATE}]))", "dropped/s")],
            "ops", 8, y + 1, w=8,
            description=(
                "Decision records dropped per second (best-effort mode, the queue was "
                "full). Anything above zero is a gap in the log."
            ),
        ),
        _panel(
            "Decision queue",
            [(f"sum by (pod) (mlmodel_decision_queue_records{{{_SEL}}})", "queued {{pod}}"),
             (f"max(mlmodel_decision_queue_capacity{{{_SEL}}})", "capacity (per pod)")],
            "short", 16, y + 1, w=8,
            description="Records waiting to be written in each pod, against the queue's size.",
        ),
        _panel(
            "Decision flush latency p99",
            [("histogram_quantile(0.99, sum by (le) "
              f"(rate(mlmodel_decision_flush_seconds_bucket{{{_SEL}}}[{_RATE}])))", "p99")],
            "s", 0, y + 9,
            description="How long writing one Parquet object to the object store takes.",
        ),
        _panel(
            "Decision bytes written",
            [(f"sum(rate(mlmodel_decision_bytes_total{{{_SEL}}}[{_RATE}]))", "bytes/s")],
            "Bps", 12, y + 9,
            description="Bytes of Parquet written to the object store per second.",
        ),
    ]  # fmt: skip


_GRAFANA_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand_variables(query: str, values: Mapping[str, str]) -> str:
    """``query`` with each Grafana variable (``$name`` or ``${name}``) replaced by
    ``values[name]``, as Grafana sends it to Prometheus for those choices.

    Values are put in as given: for a regex matcher (``version=~"$version"``) pass what
    Grafana would, e.g. ``.*`` for All. A variable with no value raises ValueError.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(f"no value for the Grafana variable ${name} in {query}")
        return values[name]

    return _GRAFANA_VARIABLE.sub(value, query)


def variable_selectors() -> list[tuple[str, str, str]]:
    """(variable, label, selector) of each query variable of the dashboard: Grafana runs
    ``label_values(selector, label)``, so the selector (after :func:`expand_variables`)
    must find series that carry the label."""
    out = []
    for variable in build_dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        definition = variable["definition"]
        if not (definition.startswith("label_values(") and definition.endswith(")")):
            raise ValueError(f"variable {variable['name']}: not a label_values() query")
        selector, label = definition[len("label_values(") : -1].rsplit(",", 1)
        out.append((variable["name"], label.strip(), selector.strip()))
    return out


def build_dashboard() -> dict[str, Any]:
    """The Grafana dashboard (JSON model) for every MLModel, chosen by variables."""
    return {
        "uid": DASHBOARD_UID,
        "title": "MLModel",
        "description": "Serving, drift and lifecycle of models run by the MLModel operator.",
        "tags": ["mlmodel", "ml"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                },
                _variable("namespace", "label_values(mlmodel_model_info, namespace)"),
                _variable(
                    "model", 'label_values(mlmodel_model_info{namespace="$namespace"}, model)'
                ),
                _variable(
                    "version",
                    'label_values(mlmodel_model_info{namespace="$namespace", model="$model"}, '
                    "version)",
                    multi=True,
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": dashboard_panels() + decision_log_panels(),
    }


def dashboard_json() -> str:
    """The dashboard as the file `manifests/monitoring/dashboard.json` holds it."""
    return json.dumps(build_dashboard(), indent=2) + "\n"


def build_dashboard_configmap(namespace: str = "monitoring") -> dict[str, Any]:
    """The dashboard in a ConfigMap the Grafana sidecar picks up (``grafana_dashboard: "1"``)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": DASHBOARD_CONFIGMAP,
            "namespace": namespace,
            "labels": {
                GRAFANA_DASHBOARD_LABEL: "1",
                "app.kubernetes.io/name": "mlmodel-operator",
                "app.kubernetes.io/component": "dashboard",
                "app.kubernetes.io/part-of": "mlmodel-lifecycle",
            },
        },
        "data": {DASHBOARD_FILE: dashboard_json()},
    }


# --------------------------------------------------------------- manifests/monitoring

GENERATED_HEADER: Final = (
    "# Generated by hack/gen-monitoring.py from mlmodel_operator.monitoring; do not edit.\n"
)


def monitoring_files(example: ModelSpec) -> dict[str, str]:
    """The generated files of manifests/monitoring/, by name.

    ``example`` is the example MLModel (manifests/examples/churn-v1.yaml): its rules are
    shipped for reference, the operator writes the same for every model it serves.
    """
    rule = build_prometheus_rule(example, Settings())
    del rule["metadata"]["ownerReferences"]  # the operator sets them on the real objects
    note = (
        f"# The alerts the operator writes for the example MLModel {example.ref.namespace}/"
        f"{example.ref.name} (manifests/examples/churn-v1.yaml), for reference.\n"
    )
    return {
        "dashboard.json": dashboard_json(),
        "example-prometheusrule.yaml": GENERATED_HEADER
        + note
        + yaml.safe_dump(rule, sort_keys=False, width=1000),
        "example.rules.yaml": GENERATED_HEADER
        + note.replace("alerts the operator writes", "alerts as a plain Prometheus rule file")
        + build_rule_file(example),
    }
